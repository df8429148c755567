import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { api, backendBinary, freePort, repoRoot, run, start, startStandin, tempDir, waitHTTP } from './helpers.js';

const TOKEN_PERMISSIONS = { projects: ['read_all'], tasks: ['read_all', 'read_one', 'create', 'update'] };

async function connect(url, authToken) {
  const client = new Client({ name: 'vkimg-test', version: '1.0.0' });
  const headers = authToken ? { Authorization: `Bearer ${authToken}` } : {};
  await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { requestInit: { headers } }));
  return client;
}

function parse(result) {
  assert.equal(result.isError, undefined, `tool error: ${JSON.stringify(result.content)}`);
  return JSON.parse(result.content[0].text);
}

test('MCP server against the backend', async (t) => {
  const dir = await tempDir(t);
  const bin = await backendBinary(dir);
  const standin = await startStandin(t, bin, dir);
  await run(bin, ['user', 'create', '-u', 'admin', '-e', 'admin@example.org', '-p', 'admin-password'], { env: { ...process.env, ...standin.env } });
  const { token: jwt } = await api(standin.url, 'POST', '/login', { body: { username: 'admin', password: 'admin-password' } });
  const apiToken = await api(standin.url, 'PUT', '/tokens', {
    token: jwt,
    body: { title: 'vkimg-mcp', permissions: TOKEN_PERMISSIONS, expires_at: '2100-01-01T00:00:00Z' },
  });

  const tokenFile = path.join(dir, 'mcp-token');
  const authFile = path.join(dir, 'mcp-auth');
  await writeFile(authFile, 'client-secret\n');
  const port = await freePort();
  const mcpUrl = `http://127.0.0.1:${port}`;
  const mcp = start(t, process.execPath, [path.join(repoRoot, 'mcp', 'src', 'server.js')], {
    MCP_PORT: String(port),
    VIKUNJA_URL: standin.url,
    VIKUNJA_TOKEN_FILE: tokenFile,
    MCP_AUTH_TOKEN_FILE: authFile,
  });

  await t.test('health is 503 until the token file appears, then 200', async () => {
    const waiting = await waitHTTP(`${mcpUrl}/healthz`, mcp, 503);
    assert.equal((await waiting.json()).status, 'waiting');
    // Written the way bootstrap writes it: a temporary file renamed into place.
    await writeFile(`${tokenFile}.tmp`, `${apiToken.token}\n`);
    await rename(`${tokenFile}.tmp`, tokenFile);
    const ok = await waitHTTP(`${mcpUrl}/healthz`, mcp, 200);
    assert.equal((await ok.json()).version, '0.1.0');
  });

  await t.test('clients without the bearer token are refused', async () => {
    await assert.rejects(connect(mcpUrl), /401|Unauthorized/);
    await assert.rejects(connect(mcpUrl, 'wrong-secret'), /401|Unauthorized/);
  });

  const client = await connect(mcpUrl, 'client-secret');
  t.after(() => client.close());

  await t.test('initialize and list tools', async () => {
    assert.equal(client.getServerVersion().name, 'vkimg-vikunja');
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((x) => x.name).sort(),
      ['complete_task', 'create_task', 'list_projects', 'search_tasks', 'update_task']);
  });

  let inbox;
  let task;
  await t.test('list_projects shows the default Inbox', async () => {
    const projects = parse(await client.callTool({ name: 'list_projects', arguments: {} }));
    inbox = projects.find((p) => p.title === 'Inbox');
    assert.ok(inbox, JSON.stringify(projects));
  });

  await t.test('create_task', async () => {
    task = parse(await client.callTool({
      name: 'create_task',
      arguments: { project_id: inbox.id, title: 'Water the plants', description: 'balcony', due_date: '2030-05-01T08:00:00Z', priority: 3 },
    }));
    assert.equal(task.title, 'Water the plants');
    assert.equal(task.due_date, '2030-05-01T08:00:00Z');
    assert.equal(task.done, false);
    parse(await client.callTool({ name: 'create_task', arguments: { project_id: inbox.id, title: 'Call the plumber' } }));
  });

  await t.test('search_tasks by text, project and state', async () => {
    let r = parse(await client.callTool({ name: 'search_tasks', arguments: { query: 'plants' } }));
    assert.deepEqual(r.tasks.map((x) => x.id), [task.id]);
    r = parse(await client.callTool({ name: 'search_tasks', arguments: { project_id: inbox.id, done: false } }));
    assert.equal(r.tasks.length, 2);
    r = parse(await client.callTool({ name: 'search_tasks', arguments: { per_page: 1, page: 2 } }));
    assert.equal(r.tasks.length, 1);
    assert.equal(r.total_pages, 2);
  });

  await t.test('update_task changes only the given fields', async () => {
    const updated = parse(await client.callTool({ name: 'update_task', arguments: { task_id: task.id, title: 'Water all plants' } }));
    assert.equal(updated.title, 'Water all plants');
    assert.equal(updated.description, 'balcony');
    assert.equal(updated.priority, 3);
    assert.equal(updated.due_date, '2030-05-01T08:00:00Z');
    const cleared = parse(await client.callTool({ name: 'update_task', arguments: { task_id: task.id, due_date: null } }));
    assert.equal(cleared.due_date, null);
    assert.equal(cleared.description, 'balcony');
  });

  await t.test('complete_task', async () => {
    const done = parse(await client.callTool({ name: 'complete_task', arguments: { task_id: task.id } }));
    assert.equal(done.done, true);
    const r = parse(await client.callTool({ name: 'search_tasks', arguments: { done: true } }));
    assert.deepEqual(r.tasks.map((x) => x.id), [task.id]);
  });

  await t.test('Vikunja errors come back as tool errors', async () => {
    const r = await client.callTool({ name: 'complete_task', arguments: { task_id: 999999 } });
    assert.equal(r.isError, true);
    assert.match(r.content[0].text, /Vikunja answered 404/);
  });
});
