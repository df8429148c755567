import http from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { registerTools } from './tools.js';

const MAX_BODY = 4 << 20;

function sendJSON(res, status, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

function rpcError(res, status, code, message, headers) {
  sendJSON(res, status, { jsonrpc: '2.0', error: { code, message }, id: null }, headers);
}

async function readJSON(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

function sameSecret(given, want) {
  const a = Buffer.from(given);
  const b = Buffer.from(want);
  return a.length === b.length && timingSafeEqual(a, b);
}

// createHandler serves the MCP endpoint (stateless Streamable HTTP: a fresh
// server and transport per request, so any number of clients and restarts
// need no session state) and the health endpoint.
export function createHandler({ vikunja, vikunjaToken, clientToken, version, log = console }) {
  const newServer = () => {
    const server = new McpServer({ name: 'vkimg-vikunja', version });
    registerTools(server, vikunja);
    return server;
  };

  async function authorized(req) {
    if (!clientToken) return true;
    const want = await clientToken.get();
    const [scheme, given] = (req.headers.authorization || '').split(' ');
    // A configured but missing secret file locks everyone out rather than
    // opening the endpoint.
    return Boolean(want) && scheme === 'Bearer' && given !== undefined && sameSecret(given, want);
  }

  async function handleMcp(req, res) {
    if (req.method !== 'POST') {
      rpcError(res, 405, -32000, 'Method not allowed: this server is stateless, use POST.', { Allow: 'POST' });
      return;
    }
    if (!(await authorized(req))) {
      rpcError(res, 401, -32001, 'Unauthorized', { 'WWW-Authenticate': 'Bearer' });
      return;
    }
    let body;
    try {
      body = await readJSON(req);
    } catch (err) {
      rpcError(res, 400, -32700, `Parse error: ${err.message}`);
      return;
    }
    const server = newServer();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => {
      transport.close();
      server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
  }

  async function handleHealth(res) {
    const token = await vikunjaToken.get();
    if (!token) {
      sendJSON(res, 503, { status: 'waiting', version, reason: `no Vikunja API token at ${vikunjaToken.path}` });
      return;
    }
    sendJSON(res, 200, { status: 'ok', version });
  }

  return async (req, res) => {
    const { pathname } = new URL(req.url, 'http://localhost');
    try {
      if (pathname === '/mcp') {
        await handleMcp(req, res);
      } else if (pathname === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
        await handleHealth(res);
      } else {
        sendJSON(res, 404, { error: 'not found' });
      }
    } catch (err) {
      log.error(`${req.method} ${pathname}: ${err.stack || err}`);
      if (!res.headersSent) rpcError(res, 500, -32603, 'Internal server error');
      else res.end();
    }
  };
}

export function createServer(options) {
  return http.createServer(createHandler(options));
}
