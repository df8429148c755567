// Runs rootfs-overlays/usr/lib/vkimg/bootstrap.mjs against the real backend
// binary: the stand-in, or real Vikunja with VKIMG_TEST_VIKUNJA_BIN.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { api, backendBinary, freePort, repoRoot, start, standinEnv, tempDir, waitHTTP } from './helpers.js';

const script = path.join(repoRoot, 'rootfs-overlays', 'usr', 'lib', 'vkimg', 'bootstrap.mjs');

function runBootstrap(env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

const gone = (p) => access(p).then(() => false, () => true);

test('bootstrap against the backend', async (t) => {
  const dir = await tempDir(t);
  const bin = await backendBinary(dir);
  // A wrapper records every command line the backend binary is started
  // with, to prove the password never appears in one.
  const argvLog = path.join(dir, 'argv.log');
  const wrapper = path.join(dir, 'vikunja-wrapper');
  await writeFile(wrapper, `#!/bin/sh\nprintf '%s\\n' "$*" >> '${argvLog}'\nexec '${bin}' "$@"\n`);
  await chmod(wrapper, 0o755);

  const secrets = path.join(dir, 'secrets');
  await mkdir(secrets, { mode: 0o700 });
  const password = "pa$$ 'word' with spaces";
  await writeFile(path.join(secrets, 'admin.env'), 'ADMIN_USERNAME=admin\nADMIN_EMAIL="admin@example.org"\n');
  await writeFile(path.join(secrets, 'admin-password'), `${password}\n`, { mode: 0o600 });
  const tokenPath = path.join(secrets, 'mcp-token');

  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = {
    ...standinEnv(dir, port),
    VKIMG_SECRETS_DIR: secrets,
    VIKUNJA_URL: url,
    VIKUNJA_BIN: wrapper,
    VKIMG_MCP_GID: '0',
  };

  await t.test('waits for the backend, creates user and token, deletes the password', async () => {
    // Started before the backend: it must wait for /health.
    const run = runBootstrap(env);
    const standin = start(t, bin, ['web'], env);
    await waitHTTP(`${url}/health`, standin);
    const { code, output } = await run;
    assert.equal(code, 0, output);
    assert.ok(!output.includes(password), 'password in the output');

    const token = (await readFile(tokenPath, 'utf8')).trim();
    assert.match(token, /^tk_[0-9a-f]{40}$/);
    const st = await stat(tokenPath);
    assert.equal(st.mode & 0o777, 0o640);
    assert.equal(st.gid, 0);
    assert.ok(await gone(path.join(secrets, 'admin-password')));
    assert.ok(await gone(`${tokenPath}.tmp`));

    const argv = await readFile(argvLog, 'utf8');
    assert.match(argv, /user create/);
    assert.ok(!argv.includes(password), `password on a command line: ${argv}`);

    // The token does what the MCP server needs, and no more.
    const projects = await api(url, 'GET', '/projects', { token });
    const created = await api(url, 'PUT', `/projects/${projects[0].id}/tasks`, { token, body: { title: 'from token' } });
    await api(url, 'POST', `/tasks/${created.id}`, { token, body: { ...created, done: true } });
    await assert.rejects(api(url, 'DELETE', `/tasks/${created.id}`, { token }), /401/);
  });

  await t.test('a rerun with the token in place changes nothing', async () => {
    const before = await readFile(tokenPath, 'utf8');
    const { code, output } = await runBootstrap(env);
    assert.equal(code, 0, output);
    assert.match(output, /nothing to do/);
    assert.equal(await readFile(tokenPath, 'utf8'), before);
  });

  await t.test('after a crash before the token was written, a rerun logs in and replaces the token', async () => {
    await rm(tokenPath);
    await writeFile(path.join(secrets, 'admin-password'), password);
    const { code, output } = await runBootstrap(env);
    assert.equal(code, 0, output);
    assert.match(output, /exists already/);
    assert.match(output, /revoked stale API token/);
    const { token: jwt } = await api(url, 'POST', '/login', { body: { username: 'admin', password } });
    const tokens = await api(url, 'GET', '/tokens', { token: jwt });
    assert.equal(tokens.filter((x) => x.title === 'vkimg-mcp').length, 1);
  });

  await t.test('a wrong password for an existing user fails and keeps the password file', async () => {
    await rm(tokenPath);
    await writeFile(path.join(secrets, 'admin-password'), 'not-the-password');
    const { code, output } = await runBootstrap(env);
    assert.equal(code, 1, output);
    assert.match(output, /already exists/);
    assert.ok(!output.includes('not-the-password'));
    assert.ok(await gone(tokenPath));
    assert.ok(!(await gone(path.join(secrets, 'admin-password'))));
  });
});

test('bootstrap gives up when the backend never becomes healthy', async (t) => {
  const dir = await tempDir(t);
  const secrets = path.join(dir, 'secrets');
  await mkdir(secrets);
  await writeFile(path.join(secrets, 'admin.env'), 'ADMIN_USERNAME=admin\nADMIN_EMAIL=admin@example.org\n');
  await writeFile(path.join(secrets, 'admin-password'), 'admin-password');
  const port = await freePort();
  const { code, output } = await runBootstrap({
    VKIMG_SECRETS_DIR: secrets, VIKUNJA_URL: `http://127.0.0.1:${port}`, VKIMG_HEALTH_TIMEOUT: '1',
  });
  assert.equal(code, 1);
  assert.match(output, /not healthy after 1 s/);
});

test('bootstrap refuses incomplete secrets', async (t) => {
  const dir = await tempDir(t);
  await writeFile(path.join(dir, 'admin.env'), 'ADMIN_USERNAME=admin\n');
  const { code, output } = await runBootstrap({ VKIMG_SECRETS_DIR: dir });
  assert.equal(code, 1);
  assert.match(output, /must set ADMIN_USERNAME and ADMIN_EMAIL/);
});
