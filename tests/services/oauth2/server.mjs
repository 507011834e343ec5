// An OAuth2 authorization server (oidc-provider, client credentials grant) and, in the same
// process, a small REST service whose API needs the server's bearer tokens. One process per
// test, both on ephemeral ports of 127.0.0.1.
//
// Usage: node server.mjs [--client-id ID] [--client-secret SECRET] [--ttl SECONDS] [--orders N]
//   (expiry is in whole seconds: a token of --ttl N lives between N-1 and N seconds)
//   (or HUITONG_OAUTH2_CLIENT_ID / HUITONG_OAUTH2_CLIENT_SECRET / HUITONG_OAUTH2_TTL in the env)
//
// When both listen, one JSON line goes to stdout:
//   {"issuer", "token_url", "introspection_url", "api_url", "client_id", "client_secret", "ttl"}
// Everything else (logs) goes to stderr.
//
// Authorization server (issuer http://127.0.0.1:A):
//   POST /token  grant_type=client_credentials[&scope=orders:read orders:write], client auth
//                HTTP Basic (client_secret_basic) or client_secret_post
//                -> 200 {"access_token", "expires_in": TTL, "token_type": "Bearer", "scope"?}
//   POST /token/introspection  (used by the REST service, with its own client)
// REST service (http://127.0.0.1:B), JSON in and out:
//   GET    /orders?page=1&per_page=20[&status=S]
//          -> {"data": [order…], "page", "per_page", "total"}  (ordered by id; pages from 1;
//             per_page 1..100, default 20)
//   GET    /orders/{id}     -> order, or 404 {"error": "not_found"}
//   POST   /orders          {"customer", "amount", "currency"?, "status"?} -> 201 order
//                            (400 {"error": "invalid_request", "message"} when a field is bad)
//   PUT    /orders/{id}     partial update of the same fields -> 200 order, 404
//   DELETE /orders/{id}     -> 204, 404
//   order = {"id", "number", "customer", "amount" (string, 2 decimals), "currency", "status",
//            "created_at", "updated_at"}
//   Every /orders call needs `Authorization: Bearer <token>`, checked by introspection; a missing,
//   unknown or expired token -> 401 {"error": "invalid_token"} with
//   `WWW-Authenticate: Bearer realm="orders", error="invalid_token"` (no `error` when missing).
//   GET /_stats (no auth) -> {"token_requests", "tokens_issued", "token_errors", "api_calls",
//                             "unauthorized", "introspections", "orders"}
//   POST /_expire (no auth) -> revokes every token issued so far (tests of a token that went bad
//                              before its expiry)

import fs from 'node:fs';
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

function options() {
  const opts = {
    clientId: process.env.HUITONG_OAUTH2_CLIENT_ID || 'huitong',
    clientSecret: process.env.HUITONG_OAUTH2_CLIENT_SECRET || 'huitong-secret',
    ttl: Number(process.env.HUITONG_OAUTH2_TTL || 600),
    orders: 3,
  };
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i += 2) {
    const [name, value] = [args[i], args[i + 1]];
    if (value === undefined) throw new Error(`${name} needs a value`);
    switch (name) {
      case '--client-id': opts.clientId = value; break;
      case '--client-secret': opts.clientSecret = value; break;
      case '--ttl': opts.ttl = Number(value); break;
      case '--orders': opts.orders = Number(value); break;
      default: throw new Error(`unknown argument ${name}`);
    }
  }
  if (!Number.isInteger(opts.ttl) || opts.ttl < 1) throw new Error('--ttl must be a whole number of seconds >= 1');
  if (!Number.isInteger(opts.orders) || opts.orders < 0) throw new Error('--orders must be >= 0');
  return opts;
}

const opts = options();
const stats = {
  token_requests: 0, tokens_issued: 0, token_errors: 0,
  api_calls: 0, unauthorized: 0, introspections: 0,
};

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

// ---- the authorization server ----------------------------------------------------------------

const authHttp = http.createServer();
const authPort = await listen(authHttp);
const issuer = `http://127.0.0.1:${authPort}`;
// The REST service introspects with its own credentials, as a resource server does.
const apiClient = { id: 'orders-api', secret: crypto.randomBytes(24).toString('hex') };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: opts.clientId,
      client_secret: opts.clientSecret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: apiClient.id,
      client_secret: apiClient.secret,
      grant_types: [],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  features: {
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Only the resource server may introspect.
      allowedPolicy: async (ctx) => ctx.oidc.client.clientId === apiClient.id,
    },
    revocation: { enabled: true },
    devInteractions: { enabled: false },
  },
  scopes: ['openid', 'orders:read', 'orders:write'],
  ttl: { ClientCredentials: opts.ttl },
  // A throw-away signing key each run: nothing here outlives the process.
  jwks: { keys: [crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' })] },
});
provider.on('grant.success', () => { stats.tokens_issued += 1; });
provider.on('grant.error', () => { stats.token_errors += 1; });
provider.on('server_error', (ctx, err) => console.error('oauth2: server error', err));

const issued = [];
provider.on('client_credentials.saved', (token) => issued.push(token));

const providerCallback = provider.callback();
authHttp.on('request', (req, res) => {
  if (req.method === 'POST' && req.url.split('?')[0] === '/token') stats.token_requests += 1;
  providerCallback(req, res);
});

// ---- the protected REST service ---------------------------------------------------------------

const orders = new Map();
let nextId = 1;
function now() { return new Date().toISOString(); }
function money(value) {
  const n = typeof value === 'number' ? value : (typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN);
  return Number.isFinite(n) && n >= 0 ? n.toFixed(2) : null;
}
const STATUSES = ['new', 'confirmed', 'shipped', 'cancelled'];
function addOrder(fields) {
  const id = nextId++;
  const at = now();
  const order = {
    id, number: `SO-${String(id).padStart(5, '0')}`,
    customer: fields.customer, amount: fields.amount, currency: fields.currency || 'CNY',
    status: fields.status || 'new', created_at: at, updated_at: at,
  };
  orders.set(id, order);
  return order;
}
for (let i = 1; i <= opts.orders; i++) {
  addOrder({ customer: `Customer ${i}`, amount: money(i * 10.5), currency: 'CNY', status: 'new' });
}

// Check the fields of a create (all) or an update (those given); an error message or null.
function validate(body, partial) {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'body must be a JSON object';
  const known = ['customer', 'amount', 'currency', 'status'];
  for (const k of Object.keys(body)) if (!known.includes(k)) return `unknown field ${k}`;
  if (!partial || 'customer' in body) {
    if (typeof body.customer !== 'string' || body.customer.trim() === '') return 'customer is required';
  }
  if (!partial || 'amount' in body) {
    if (money(body.amount) === null) return 'amount must be a non-negative number';
  }
  if ('currency' in body && !/^[A-Z]{3}$/.test(body.currency)) return 'currency must be an ISO 4217 code';
  if ('status' in body && !STATUSES.includes(body.status)) return `status must be one of ${STATUSES.join(', ')}`;
  return null;
}

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 1 << 20) throw new Error('body too large');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  return text === '' ? undefined : JSON.parse(text);
}

async function introspect(token) {
  stats.introspections += 1;
  const basic = Buffer.from(`${apiClient.id}:${apiClient.secret}`).toString('base64');
  const res = await fetch(`${issuer}/token/introspection`, {
    method: 'POST',
    headers: { Authorization: `Basic ${basic}`, 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }).toString(),
  });
  if (!res.ok) throw new Error(`introspection answered ${res.status}`);
  return res.json();
}

function unauthorized(res, error) {
  stats.unauthorized += 1;
  const challenge = error
    ? `Bearer realm="orders", error="${error}", error_description="the access token is missing, unknown or expired"`
    : 'Bearer realm="orders"';
  send(res, 401, { error: error || 'unauthorized' }, { 'WWW-Authenticate': challenge });
}

async function api(req, res) {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/_stats' && req.method === 'GET') {
    return send(res, 200, { ...stats, orders: orders.size });
  }
  if (url.pathname === '/_expire' && req.method === 'POST') {
    const tokens = issued.splice(0);
    await Promise.all(tokens.map((t) => t.destroy()));
    return send(res, 200, { revoked: tokens.length });
  }
  const m = url.pathname.match(/^\/orders(?:\/(\d+))?\/?$/);
  if (!m) return send(res, 404, { error: 'not_found' });
  stats.api_calls += 1;

  const header = req.headers.authorization || '';
  const bearer = header.match(/^Bearer\s+(\S+)$/i);
  if (!bearer) return unauthorized(res, header ? 'invalid_token' : null);
  const info = await introspect(bearer[1]);
  if (!info.active || info.client_id !== opts.clientId) return unauthorized(res, 'invalid_token');

  const id = m[1] === undefined ? null : Number(m[1]);
  let body;
  if (req.method === 'POST' || req.method === 'PUT') {
    try {
      body = await readJson(req);
    } catch (e) {
      return send(res, 400, { error: 'invalid_request', message: `bad JSON body: ${e.message}` });
    }
  }
  if (id === null) {
    if (req.method === 'GET') {
      const page = Number(url.searchParams.get('page') || 1);
      const perPage = Number(url.searchParams.get('per_page') || 20);
      if (!Number.isInteger(page) || page < 1 || !Number.isInteger(perPage) || perPage < 1 || perPage > 100) {
        return send(res, 400, { error: 'invalid_request', message: 'page >= 1, 1 <= per_page <= 100' });
      }
      const status = url.searchParams.get('status');
      const all = [...orders.values()].filter((o) => !status || o.status === status);
      const data = all.slice((page - 1) * perPage, page * perPage);
      return send(res, 200, { data, page, per_page: perPage, total: all.length });
    }
    if (req.method === 'POST') {
      const problem = validate(body, false);
      if (problem) return send(res, 400, { error: 'invalid_request', message: problem });
      const order = addOrder({ ...body, amount: money(body.amount) });
      return send(res, 201, order, { Location: `/orders/${order.id}` });
    }
    return send(res, 405, { error: 'method_not_allowed' }, { Allow: 'GET, POST' });
  }
  const order = orders.get(id);
  if (!order) return send(res, 404, { error: 'not_found' });
  if (req.method === 'GET') return send(res, 200, order);
  if (req.method === 'PUT') {
    const problem = validate(body, true);
    if (problem) return send(res, 400, { error: 'invalid_request', message: problem });
    Object.assign(order, body, 'amount' in body ? { amount: money(body.amount) } : {}, { updated_at: now() });
    return send(res, 200, order);
  }
  if (req.method === 'DELETE') {
    orders.delete(id);
    return send(res, 204);
  }
  return send(res, 405, { error: 'method_not_allowed' }, { Allow: 'GET, PUT, DELETE' });
}

const apiHttp = http.createServer((req, res) => {
  api(req, res).catch((e) => {
    console.error('orders api:', e);
    if (!res.headersSent) send(res, 500, { error: 'server_error' });
  });
});
const apiPort = await listen(apiHttp);

process.stdout.write(JSON.stringify({
  issuer,
  token_url: `${issuer}/token`,
  introspection_url: `${issuer}/token/introspection`,
  api_url: `http://127.0.0.1:${apiPort}`,
  client_id: opts.clientId,
  client_secret: opts.clientSecret,
  ttl: opts.ttl,
}) + '\n');

// Stop with the test: on a signal, or when the parent closes our stdin (when it is a pipe).
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
if (fs.fstatSync(0).isFIFO()) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
