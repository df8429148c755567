#!/usr/bin/env node
// vkimg first-boot bootstrap (run once by vkimg-bootstrap.service, as user
// vikunja, after the backend answers /health). It creates the admin user
// from /data/secrets/admin-password, logs in, creates the API token the MCP
// server uses, writes it to /data/secrets/mcp-token, and deletes the admin
// password file. Every step may be repeated after a crash: an existing user
// is logged into, and tokens left behind by an interrupted run are revoked.
//
// Environment (defaults are the template's layout; tests override them):
//   VKIMG_SECRETS_DIR      /data/secrets
//   VIKUNJA_URL            http://127.0.0.1:3456
//   VIKUNJA_BIN            /opt/vikunja/vikunja
//   VKIMG_HEALTH_TIMEOUT   seconds to wait for /health (300)
//   VKIMG_MCP_GID          group that may read mcp-token (991, vkimg-mcp); "" keeps the process's group
//
// The password never appears in a command line: `vikunja user create` reads
// it from a terminal when --password is not given, so it runs under
// script(1) (util-linux, essential in Debian) and gets the password typed
// at its prompts.
import { spawn } from 'node:child_process';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';

const env = process.env;
const secretsDir = env.VKIMG_SECRETS_DIR || '/data/secrets';
const vikunjaUrl = (env.VIKUNJA_URL || 'http://127.0.0.1:3456').replace(/\/+$/, '');
const vikunjaBin = env.VIKUNJA_BIN || '/opt/vikunja/vikunja';
const healthTimeout = Number(env.VKIMG_HEALTH_TIMEOUT || 300) * 1000;
const mcpGid = env.VKIMG_MCP_GID === undefined ? 991 : env.VKIMG_MCP_GID;

const tokenPath = path.join(secretsDir, 'mcp-token');
const passwordPath = path.join(secretsDir, 'admin-password');
const adminEnvPath = path.join(secretsDir, 'admin.env');

const TOKEN_TITLE = 'vkimg-mcp';
// What the MCP server's tools call (Vikunja's group → permission format, as
// listed by GET /api/v1/routes).
const TOKEN_PERMISSIONS = {
  projects: ['read_all', 'read_one'],
  tasks: ['read_all', 'read_one', 'create', 'update'],
};
// Vikunja requires an expiry; the token lives as long as the instance.
const TOKEN_EXPIRES = '2099-12-31T23:59:59Z';

const log = (msg) => console.log(`vkimg-bootstrap: ${msg}`);

class BootstrapError extends Error {}

async function exists(p) {
  try {
    await (await open(p, 'r')).close();
    return true;
  } catch (err) {
    if (err.code === 'ENOENT') return false;
    throw err;
  }
}

// parseEnvFile reads KEY=VALUE lines (optionally quoted), as systemd's
// EnvironmentFile does.
function parseEnvFile(text) {
  const out = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 1) throw new BootstrapError(`admin.env: bad line ${JSON.stringify(line)}`);
    let value = line.slice(eq + 1).trim();
    if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.endsWith(value[0])) {
      value = value.slice(1, -1);
    }
    out[line.slice(0, eq).trim()] = value;
  }
  return out;
}

async function readAdmin() {
  let vars;
  try {
    vars = parseEnvFile(await readFile(adminEnvPath, 'utf8'));
  } catch (err) {
    if (err.code === 'ENOENT') throw new BootstrapError(`${adminEnvPath} is missing`);
    throw err;
  }
  const { ADMIN_USERNAME: username, ADMIN_EMAIL: email } = vars;
  if (!username || !email) throw new BootstrapError(`${adminEnvPath} must set ADMIN_USERNAME and ADMIN_EMAIL`);
  let password;
  try {
    password = (await readFile(passwordPath, 'utf8')).replace(/\r?\n$/, '');
  } catch (err) {
    if (err.code === 'ENOENT') {
      throw new BootstrapError(`${passwordPath} is missing and no MCP token exists yet: write the admin password there and restart vkimg-bootstrap`);
    }
    throw err;
  }
  if (password === '') throw new BootstrapError(`${passwordPath} is empty`);
  return { username, email, password };
}

async function waitHealthy() {
  const deadline = Date.now() + healthTimeout;
  let last = 'no answer';
  for (;;) {
    try {
      const res = await fetch(`${vikunjaUrl}/health`, { signal: AbortSignal.timeout(5000) });
      if (res.ok) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = err.cause?.code || err.message;
    }
    if (Date.now() >= deadline) {
      throw new BootstrapError(`Vikunja at ${vikunjaUrl}/health not healthy after ${healthTimeout / 1000} s (last: ${last})`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

const shellQuote = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

// createUser runs `vikunja user create` on a pseudo-terminal and answers its
// two password prompts. It resolves with the exit code and the output with
// the password scrubbed from it.
function createUser({ username, email, password }) {
  const cmd = [vikunjaBin, 'user', 'create', '-u', username, '-e', email].map(shellQuote).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-q', '-e', '-c', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    let answered = 0;
    const onData = (chunk) => {
      output += chunk;
      // Answer each prompt once, after it appears (echo is off by then).
      const prompts = (output.match(/(Enter|Confirm) Password:/g) || []).length;
      while (answered < prompts) {
        child.stdin.write(`${password}\n`);
        answered++;
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.stdin.on('error', () => {}); // the command may exit before reading
    child.on('error', (err) => reject(new BootstrapError(`run script(1) for ${vikunjaBin} user create: ${err.message}`)));
    child.on('close', (code) => {
      resolve({ code, output: output.split(password).join('***') });
    });
  });
}

async function api(method, p, { token, body } = {}) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(`${vikunjaUrl}/api/v1${p}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30000),
  });
  const text = await res.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch {
    data = { message: text };
  }
  return { status: res.status, data };
}

async function login({ username, password }) {
  const { status, data } = await api('POST', '/login', { body: { username, password } });
  if (status === 200 && data.token) return data.token;
  return null;
}

async function writeTokenFile(token) {
  const tmp = `${tokenPath}.tmp`;
  const fh = await open(tmp, 'w', 0o640);
  try {
    await fh.chmod(0o640); // the umask may have narrowed the mode
    if (mcpGid !== '') {
      try {
        await fh.chown(process.getuid(), Number(mcpGid));
      } catch (err) {
        throw new BootstrapError(`give ${tmp} to group ${mcpGid} (the MCP server's): ${err.message}; run bootstrap with that group as a supplementary group`);
      }
    }
    await fh.writeFile(`${token}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, tokenPath);
  const dir = await open(secretsDir, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

async function main() {
  if (await exists(tokenPath)) {
    log(`${tokenPath} exists: nothing to do`);
    return;
  }
  const admin = await readAdmin();
  log(`waiting for ${vikunjaUrl}/health`);
  await waitHealthy();

  let jwt = await login(admin);
  if (jwt) {
    log(`user ${admin.username} exists already`);
  } else {
    log(`creating user ${admin.username}`);
    const { code, output } = await createUser(admin);
    jwt = await login(admin);
    if (!jwt) {
      throw new BootstrapError(`${vikunjaBin} user create exited ${code} and logging in as ${admin.username} fails:\n${output.trim()}`);
    }
  }

  // Tokens from an interrupted earlier run can never be read again: revoke them.
  const listed = await api('GET', '/tokens', { token: jwt });
  if (listed.status !== 200) throw new BootstrapError(`list API tokens: HTTP ${listed.status}: ${listed.data.message}`);
  for (const old of listed.data.filter((t) => t.title === TOKEN_TITLE)) {
    const del = await api('DELETE', `/tokens/${old.id}`, { token: jwt });
    if (del.status !== 200) throw new BootstrapError(`revoke stale API token ${old.id}: HTTP ${del.status}: ${del.data.message}`);
    log(`revoked stale API token ${old.id}`);
  }
  const created = await api('PUT', '/tokens', {
    token: jwt,
    body: { title: TOKEN_TITLE, permissions: TOKEN_PERMISSIONS, expires_at: TOKEN_EXPIRES },
  });
  if (created.status !== 201 && created.status !== 200) {
    throw new BootstrapError(`create API token: HTTP ${created.status}: ${created.data.message}`);
  }
  await writeTokenFile(created.data.token);
  log(`wrote ${tokenPath}`);

  try {
    await unlink(passwordPath);
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
  log(`deleted ${passwordPath}; bootstrap done`);
}

main().catch((err) => {
  console.error(`vkimg-bootstrap: ${err instanceof BootstrapError ? err.message : err.stack}`);
  process.exit(1);
});
