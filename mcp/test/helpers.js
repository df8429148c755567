// Test helpers: a real backend binary (the stand-in built from this
// repository, or real Vikunja) and child processes that are always stopped
// when a test ends.
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export async function tempDir(t) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vkimg-mcp-test-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

// backendBinary returns the backend to test against: a real Vikunja binary
// when VKIMG_TEST_VIKUNJA_BIN names one (scripts checking real Vikunja set
// it), otherwise the stand-in built from this repository.
export async function backendBinary(dir) {
  if (process.env.VKIMG_TEST_VIKUNJA_BIN) return process.env.VKIMG_TEST_VIKUNJA_BIN;
  const out = path.join(dir, 'vikunja');
  await run('go', ['build', '-ldflags', '-X main.version=1.0.0', '-o', out, './internal/fixtures/standin'], {
    cwd: repoRoot,
    env: { ...process.env, CGO_ENABLED: '0' },
  });
  return out;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// start runs a long-lived child and stops it when the test ends.
export function start(t, cmd, args, env) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  child.output = () => output;
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return child;
}

// waitHTTP polls url until it answers with want (or the child dies).
export async function waitHTTP(url, child, want = 200) {
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`process exited (${child.exitCode ?? child.signalCode}) before ${url} answered:\n${child.output()}`);
    }
    try {
      const res = await fetch(url);
      if (res.status === want) return res;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

// standinEnv is the stand-in's configuration through VIKUNJA_* variables.
export function standinEnv(dir, port) {
  return {
    HOME: dir,
    VIKUNJA_SERVICE_PUBLICURL: `http://127.0.0.1:${port}/`,
    VIKUNJA_SERVICE_INTERFACE: `127.0.0.1:${port}`,
    VIKUNJA_SERVICE_SECRET: 'test-secret',
    VIKUNJA_DATABASE_TYPE: 'sqlite',
    VIKUNJA_DATABASE_PATH: path.join(dir, 'vikunja.db'),
    VIKUNJA_FILES_BASEPATH: path.join(dir, 'files'),
  };
}

export async function startStandin(t, bin, dir) {
  const port = await freePort();
  const env = standinEnv(dir, port);
  const child = start(t, bin, ['web'], env);
  const url = `http://127.0.0.1:${port}`;
  await waitHTTP(`${url}/health`, child);
  return { url, env, child };
}

export async function api(base, method, p, { token, body } = {}) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(`${base}/api/v1${p}`, { method, headers, body: body && JSON.stringify(body) });
  const data = await res.json();
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(data)}`);
  return data;
}

export { run };
