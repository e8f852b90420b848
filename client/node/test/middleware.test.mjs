// rateLimitMiddleware in an Express app on a real HTTP server, with the real sidecar behind it.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';

import express from 'express';

import {
  RateLimitClient,
  RateLimitInvalidRequestError,
  rateLimitMiddleware,
} from '../dist/index.js';
import { startSidecar } from './helpers/sidecar.mjs';

const HTTP_TIMEOUT_MS = 5000;

// `app` on a free port of 127.0.0.1.
async function serve(app) {
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    close() {
      server.closeAllConnections();
      server.close();
    },
  };
}

// GET base + path: the status, the body and the rate-limit header fields.
async function getFrom(base, path, headers = {}) {
  const res = await fetch(`${base}${path}`, {
    headers,
    signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
  });
  return {
    status: res.status,
    body: await res.text(),
    policy: res.headers.get('ratelimit-policy'),
    limit: res.headers.get('ratelimit'),
    retryAfter: res.headers.get('retry-after'),
  };
}

// An Express app with one limiter per route prefix, and an error handler that shows what the
// middleware passed on: 400 for RateLimitInvalidRequestError, 500 for anything else.
function makeApp(client) {
  const app = express();
  const apiKey = (req) => req.get('x-api-key');
  app.use('/limited', rateLimitMiddleware({ client, key: apiKey, limit: 2, windowMs: 60_000 }));
  app.use('/default-policy', rateLimitMiddleware({ client, key: apiKey }));
  app.use(
    '/costly',
    rateLimitMiddleware({
      client,
      key: apiKey,
      limit: 10,
      windowMs: 10_000,
      cost: (req) => Number(req.get('x-cost')),
    }),
  );
  app.use(
    '/broken-key',
    rateLimitMiddleware({
      client,
      key: () => {
        throw new Error('key lookup failed');
      },
    }),
  );
  app.use(
    '/fail-open',
    rateLimitMiddleware({
      client,
      key: apiKey,
      limit: 2,
      windowMs: 60_000,
      onUnavailable: 'allow',
    }),
  );
  app.use(
    '/fail-closed',
    rateLimitMiddleware({ client, key: apiKey, limit: 2, windowMs: 60_000, onUnavailable: 'deny' }),
  );
  app.get('/*', (req, res) => res.send('served'));
  app.use((err, req, res, next) => {
    res
      .status(err instanceof RateLimitInvalidRequestError ? 400 : 500)
      .send(`${err.name}: ${err.message}`);
  });
  return app;
}

describe('rateLimitMiddleware', () => {
  let sidecar;
  let client;
  let server;
  let base;

  const get = (path, headers) => getFrom(base, path, headers);

  before(async () => {
    sidecar = await startSidecar({
      env: { RATE_LIMIT_MAX_REQUESTS: '100', RATE_LIMIT_WINDOW_MS: '60000' },
    });
    client = new RateLimitClient({ socketPath: sidecar.socketPath, timeoutMs: 1000 });
    server = makeApp(client).listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${server.address().port}`;
  });
  after(async () => {
    server?.closeAllConnections();
    server?.close();
    await client?.close();
    await sidecar?.dispose();
  });

  test('admits with RateLimit-Policy and RateLimit, then 429 with Retry-After', async () => {
    const key = { 'x-api-key': 'customer-1' };
    // Capacity 2 per 60 s: a token comes back every 30 s; t and Retry-After round up.
    assert.deepEqual(await get('/limited/a', key), {
      status: 200,
      body: 'served',
      policy: '"default";q=2;w=60',
      limit: '"default";r=1;t=30',
      retryAfter: null,
    });
    assert.deepEqual(await get('/limited/b', key), {
      status: 200,
      body: 'served',
      policy: '"default";q=2;w=60',
      limit: '"default";r=0;t=60',
      retryAfter: null,
    });
    assert.deepEqual(await get('/limited/c', key), {
      status: 429,
      body: 'Too Many Requests\n',
      policy: '"default";q=2;w=60',
      limit: '"default";r=0;t=30',
      retryAfter: '30',
    });
    // Another key has its own bucket.
    assert.equal((await get('/limited/a', { 'x-api-key': 'customer-2' })).status, 200);
  });

  test("without limit and windowMs, the sidecar's default policy; w is then left out", async () => {
    const res = await get('/default-policy', { 'x-api-key': 'customer-3' });
    assert.equal(res.status, 200);
    assert.equal(res.policy, '"default";q=100');
    assert.equal(res.limit, '"default";r=99;t=1');
  });

  test('a cost function spends its cost; cost above the limit goes to the error handler', async () => {
    const key = { 'x-api-key': 'customer-4' };
    assert.equal((await get('/costly', { ...key, 'x-cost': '4' })).limit, '"default";r=6;t=4');
    const tooMuch = await get('/costly', { ...key, 'x-cost': '11' });
    assert.equal(tooMuch.status, 400);
    assert.match(tooMuch.body, /RateLimitInvalidRequestError: .*CostExceedsLimit/);
  });

  test('no key, or a key function that throws, goes to the error handler', async () => {
    const noKey = await get('/limited/a');
    assert.equal(noKey.status, 400);
    assert.match(noKey.body, /RateLimitInvalidRequestError: the key function returned no key/);
    const tooLong = await get('/limited/a', { 'x-api-key': 'k'.repeat(513) });
    assert.equal(tooLong.status, 400);
    const broken = await get('/broken-key');
    assert.equal(broken.status, 500);
    assert.match(broken.body, /Error: key lookup failed/);
  });

  test("sidecar stopped: onUnavailable 'allow' serves, without headers; 'deny' is 503", async () => {
    await sidecar.stop();
    const key = { 'x-api-key': 'customer-5' };
    assert.deepEqual(await get('/fail-open', key), {
      status: 200,
      body: 'served',
      policy: null,
      limit: null,
      retryAfter: null,
    });
    assert.deepEqual(await get('/fail-closed', key), {
      status: 503,
      body: 'Service Unavailable\n',
      policy: null,
      limit: null,
      retryAfter: '1',
    });
  });
});

// An app shaped like a real gateway's: authentication first (async, 401/403), then the limiter
// keyed by what authentication found, a skip rule, and the app's own JSON 429.
function makeGatewayApp(client, unreachable) {
  const app = express();
  const customers = new Map([
    ['key-1', 'customer-1'],
    ['key-2', 'customer-2'],
    ['key-3', 'customer-3'],
  ]);
  const authenticate = async (req, res, next) => {
    await new Promise((resolve) => setImmediate(resolve)); // A lookup elsewhere.
    const apiKey = req.get('x-api-key');
    if (!apiKey) return res.status(401).json({ code: 'UNAUTHORIZED' });
    const customer = customers.get(apiKey);
    if (!customer) return res.status(403).json({ code: 'FORBIDDEN' });
    req.customer = customer;
    next();
  };
  const onDenied = (req, res, next, result) =>
    res.status(429).json({ code: 'TOO_MANY_REQUESTS', retryAfterMs: result.retryAfterMs });
  const limited = (options) =>
    rateLimitMiddleware({
      client,
      key: async (req) => req.customer,
      limit: 2,
      windowMs: 60_000,
      onDenied,
      ...options,
    });
  app.use(
    '/api',
    authenticate,
    limited({
      skip: async (req) => req.get('x-internal') === 'yes',
    }),
  );
  app.use(
    '/sync-skip',
    authenticate,
    limited({ skip: (req) => req.path === '/health', policyName: 'sync' }),
  );
  app.use(
    '/broken-skip',
    limited({
      skip: () => {
        throw new Error('skip failed');
      },
    }),
  );
  app.use(
    '/broken-handler',
    authenticate,
    limited({
      policyName: 'broken',
      onDenied: async () => {
        throw new Error('handler failed');
      },
    }),
  );
  app.use(
    '/unreachable-throw',
    authenticate,
    limited({ client: unreachable, onUnavailable: 'throw' }),
  );
  app.use(
    '/unreachable-client-deny',
    authenticate,
    rateLimitMiddleware({
      client: unreachable.denying,
      key: (req) => req.customer,
      limit: 2,
      windowMs: 60_000,
    }),
  );
  app.get('/*', (req, res) => res.send(`served ${req.customer ?? 'internal'}`));
  app.use((err, req, res, next) => res.status(500).json({ error: `${err.name}: ${err.message}` }));
  return app;
}

describe('rateLimitMiddleware after authentication, with skip and onDenied', () => {
  let checks = 0;
  // The sidecar, the counting client, the clients of no sidecar, and the app's HTTP server.
  let sidecar, client, unreachable, http;
  const get = (path, headers) => getFrom(http.base, path, headers);

  before(async () => {
    sidecar = await startSidecar();
    const real = new RateLimitClient({ socketPath: sidecar.socketPath, timeoutMs: 1000 });
    // The real client, counting the checks that reach it.
    client = {
      check: (key, options) => {
        checks++;
        return real.check(key, options);
      },
      close: () => real.close(),
    };
    const nowhere = `${sidecar.dir}/nobody.sock`;
    unreachable = new RateLimitClient({ socketPath: nowhere });
    unreachable.denying = new RateLimitClient({ socketPath: nowhere, onUnavailable: 'deny' });
    http = await serve(makeGatewayApp(client, unreachable));
  });
  after(async () => {
    http?.close();
    await client?.close();
    await unreachable?.close();
    await unreachable?.denying.close();
    await sidecar?.dispose();
  });

  test('401 and 403 come before the limiter, which is keyed by the authenticated customer', async () => {
    const before = checks;
    assert.equal((await get('/api/x')).status, 401);
    assert.equal((await get('/api/x', { 'x-api-key': 'stolen' })).status, 403);
    assert.equal(checks, before, 'unauthenticated requests never reach the limiter');
    const first = await get('/api/x', { 'x-api-key': 'key-1' });
    assert.equal(first.status, 200);
    assert.equal(first.body, 'served customer-1');
    assert.equal(first.policy, '"default";q=2;w=60');
    assert.equal(checks, before + 1);
    // The bucket is the customer's, not the header's value.
    const read = await client.check('customer-1', { limit: 2, windowMs: 60_000, cost: 0 });
    assert.equal(read.remaining, 1);
  });

  test("onDenied answers the app's own 429, with RateLimit-Policy, RateLimit and Retry-After set", async () => {
    const key = { 'x-api-key': 'key-2' };
    assert.equal((await get('/api/x', key)).status, 200);
    assert.equal((await get('/api/x', key)).status, 200);
    const denied = await get('/api/x', key);
    assert.equal(denied.status, 429);
    const body = JSON.parse(denied.body);
    assert.equal(body.code, 'TOO_MANY_REQUESTS');
    assert.ok(body.retryAfterMs > 29_000 && body.retryAfterMs <= 30_000, denied.body);
    assert.equal(denied.policy, '"default";q=2;w=60');
    assert.equal(denied.limit, '"default";r=0;t=30');
    assert.equal(denied.retryAfter, '30');
  });

  test('skip (async or sync) lets requests through unchecked, without RateLimit fields', async () => {
    const before = checks;
    const key = { 'x-api-key': 'key-3' };
    for (let i = 0; i < 3; i++) {
      const internal = await get('/api/x', { ...key, 'x-internal': 'yes' });
      assert.deepEqual(internal, {
        status: 200,
        body: 'served customer-3',
        policy: null,
        limit: null,
        retryAfter: null,
      });
      const health = await get('/sync-skip/health', key);
      assert.equal(health.status, 200);
      assert.equal(health.policy, null);
    }
    assert.equal(checks, before, 'skipped requests never reach the limiter');
    assert.equal((await get('/sync-skip/other', key)).policy, '"sync";q=2;w=60');
  });

  test("errors of skip and onDenied go to the app's error handler", async () => {
    const skip = await get('/broken-skip/x');
    assert.equal(skip.status, 500);
    assert.match(skip.body, /Error: skip failed/);
    const key = { 'x-api-key': 'key-1' }; // customer-1 has one request left from the first test.
    assert.equal((await get('/broken-handler/x', key)).status, 200);
    const handler = await get('/broken-handler/x', key);
    assert.equal(handler.status, 500);
    assert.match(handler.body, /Error: handler failed/);
  });

  test("onUnavailable 'throw' passes the error on; a client's own 'deny' is a 429 without RateLimit fields", async () => {
    const key = { 'x-api-key': 'key-1' };
    const thrown = await get('/unreachable-throw/x', key);
    assert.equal(thrown.status, 500);
    assert.match(thrown.body, /RateLimitUnavailableError: cannot connect/);
    assert.deepEqual(await get('/unreachable-client-deny/x', key), {
      status: 429,
      body: 'Too Many Requests\n',
      policy: null,
      limit: null,
      retryAfter: '1',
    });
  });
});

describe('rateLimitMiddleware options', () => {
  const client = { check: async () => ({}) };
  const key = () => 'k';
  for (const [name, options, error] of [
    ['no client', { key }, TypeError],
    ['no key function', { client }, TypeError],
    ['a limit without a window', { client, key, limit: 10 }, TypeError],
    ['a negative limit', { client, key, limit: -1, windowMs: 10 }, RangeError],
    ['a fractional cost', { client, key, cost: 0.5 }, RangeError],
    ['an unknown onUnavailable', { client, key, onUnavailable: 'maybe' }, TypeError],
    ['a skip that is not a function', { client, key, skip: true }, TypeError],
    ['an onDenied that is not a function', { client, key, onDenied: 'json' }, TypeError],
    ['a policy name a header cannot carry', { client, key, policyName: 'caf\u00e9' }, TypeError],
  ]) {
    test(`refuses ${name} when created`, () => {
      assert.throws(() => rateLimitMiddleware(options), error);
    });
  }
});
