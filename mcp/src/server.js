#!/usr/bin/env node
// vkimg's MCP server for Vikunja. Configuration comes from the environment:
//   MCP_PORT             port to listen on (default 3457)
//   MCP_HOST             address to listen on (default all)
//   VIKUNJA_URL          Vikunja's base URL (default http://127.0.0.1:3456)
//   VIKUNJA_TOKEN_FILE   Vikunja API token file (default /data/secrets/mcp-token)
//   MCP_AUTH_TOKEN_FILE  optional: clients must send "Authorization: Bearer <its content>"
import { readFileSync } from 'node:fs';
import { createServer } from './app.js';
import { SecretFile } from './secretfile.js';
import { VikunjaClient } from './vikunja.js';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const env = process.env;
const port = Number(env.MCP_PORT || 3457);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`MCP_PORT=${env.MCP_PORT} is not a port number`);
  process.exit(2);
}
const vikunjaUrl = env.VIKUNJA_URL || 'http://127.0.0.1:3456';
const vikunjaToken = new SecretFile(env.VIKUNJA_TOKEN_FILE || '/data/secrets/mcp-token');
const clientToken = env.MCP_AUTH_TOKEN_FILE ? new SecretFile(env.MCP_AUTH_TOKEN_FILE) : null;

const server = createServer({
  vikunja: new VikunjaClient({ baseUrl: vikunjaUrl, token: vikunjaToken }),
  vikunjaToken,
  clientToken,
  version,
});
server.on('error', (err) => {
  console.error(`listen on port ${port}: ${err.message}`);
  process.exit(1);
});
server.listen(port, env.MCP_HOST || undefined, () => {
  const addr = server.address();
  console.log(`vkimg-mcp ${version} listening on ${addr.address}:${addr.port} (POST /mcp, GET /healthz), Vikunja at ${vikunjaUrl}`);
});

// Both signals drain: requests are short, and systemd's default is SIGTERM.
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.log(`${sig}: closing`);
    server.close(() => process.exit(0));
    server.closeIdleConnections?.();
  });
}
