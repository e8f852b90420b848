// createRateLimiterStore, createRateLimiter and the client's onUnavailable, against the real
// sidecar (fixed windows, memory store), and against no sidecar at all.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  RateLimitClient,
  RateLimitInvalidRequestError,
  RateLimitTimeoutError,
  RateLimitUnavailableError,
  UNAVAILABLE_RETRY_AFTER_MS,
  createRateLimiter,
  createRateLimiterStore,
} from '../dist/index.js';
import { makeTempDir, startSidecar } from './helpers/sidecar.mjs';

const WINDOW_MS = 60_000;
const policy = { maxRequests: 3, windowMs: WINDOW_MS };

// A fixed window's denial: the rest of the window, opened less than `elapsedMs` ago.
function assertRestOfWindow(result, elapsedMs) {
  assert.deepStrictEqual(Object.keys(result), ['allowed', 'retryAfterMs']);
  assert.equal(result.allowed, false);
  assert.ok(
    result.retryAfterMs <= WINDOW_MS && result.retryAfterMs >= WINDOW_MS - elapsedMs,
    `retryAfterMs ${result.retryAfterMs}, expected the rest of a window opened ${elapsedMs} ms ago`,
  );
}

describe('createRateLimiterStore with a fixed-window sidecar', () => {
  let sidecar;
  let client;
  before(async () => {
    sidecar = await startSidecar({ env: { RATE_LIMIT_ALGORITHM: 'fixed_window' } });
    client = new RateLimitClient({ socketPath: sidecar.socketPath });
  });
  after(async () => {
    await client?.close();
    await sidecar?.dispose();
  });

  test("answers exactly the gateway's results: { allowed: true }, then { allowed: false, retryAfterMs }", async () => {
    const store = createRateLimiterStore({ client });
    const started = Date.now();
    for (let i = 0; i < 3; i++) {
      assert.deepStrictEqual(await store.check('key-a', policy), { allowed: true });
    }
    assertRestOfWindow(await store.check('key-a', policy), Date.now() - started);
    // Another key has its own window.
    assert.deepStrictEqual(await store.check('key-b', policy), { allowed: true });
  });

  test('now is accepted and ignored: the sidecar keeps its own clock', async () => {
    const store = createRateLimiterStore({ client });
    const started = Date.now();
    for (let i = 0; i < 3; i++) await store.check('key-now', { ...policy, now: started });
    // A caller's clock a window later opens no new window.
    const later = { ...policy, now: started + 2 * WINDOW_MS };
    assertRestOfWindow(await store.check('key-now', later), Date.now() - started);
  });

  test('keyPrefix is put before every key: prefixes keep buckets apart', async () => {
    const a = createRateLimiterStore({ client, keyPrefix: 'gateway-a:' });
    const b = createRateLimiterStore({ client, keyPrefix: 'gateway-b:' });
    for (let i = 0; i < 3; i++) await a.check('key-p', policy);
    assert.equal((await a.check('key-p', policy)).allowed, false);
    assert.deepStrictEqual(await b.check('key-p', policy), { allowed: true });
    // The sidecar's bucket is the prefixed key's: reading it (cost 0) shows b's one request.
    const read = await client.check('gateway-b:key-p', { limit: 3, windowMs: WINDOW_MS, cost: 0 });
    assert.equal(read.remaining, 2);
  });

  test('maxRequests is the window: a larger policy admits more', async () => {
    const store = createRateLimiterStore({ client });
    for (let i = 0; i < 5; i++) {
      assert.deepStrictEqual(await store.check('key-5', { maxRequests: 5, windowMs: WINDOW_MS }), {
        allowed: true,
      });
    }
    assert.equal(
      (await store.check('key-5', { maxRequests: 5, windowMs: WINDOW_MS })).allowed,
      false,
    );
  });

  test('a check without a valid policy rejects with RateLimitInvalidRequestError, whatever onUnavailable says', async () => {
    const store = createRateLimiterStore({ client, onUnavailable: 'allow' });
    for (const bad of [
      { maxRequests: 0, windowMs: WINDOW_MS },
      { maxRequests: 3, windowMs: 0 },
      { maxRequests: 2.5, windowMs: WINDOW_MS },
      { windowMs: WINDOW_MS },
      { maxRequests: 2 ** 32, windowMs: WINDOW_MS },
    ]) {
      await assert.rejects(store.check('key-bad', bad), RateLimitInvalidRequestError);
    }
    await assert.rejects(store.check('', policy), RateLimitInvalidRequestError);
  });

  test('createRateLimiter checks an API key under its policy', async () => {
    const limiter = createRateLimiter({
      client,
      maxRequests: 2,
      windowMs: WINDOW_MS,
      keyPrefix: 'l:',
    });
    const started = Date.now();
    assert.deepStrictEqual(await limiter.check('api-key-1'), { allowed: true });
    assert.deepStrictEqual(await limiter.check('api-key-1'), { allowed: true });
    assertRestOfWindow(await limiter.check('api-key-1'), Date.now() - started);
    assert.deepStrictEqual(await limiter.check('api-key-2'), { allowed: true });
  });
});

describe('onUnavailable without a sidecar', () => {
  // A socket path nobody listens on: every check fails at once with RateLimitUnavailableError.
  const socketPath = join(makeTempDir(), 'nobody.sock');
  const clients = [];
  const newClient = (options = {}) => {
    const client = new RateLimitClient({ socketPath, ...options });
    clients.push(client);
    return client;
  };
  after(() => Promise.all(clients.map((c) => c.close())));

  test("the store: 'allow' admits, 'deny' denies for 1 s, 'throw' and the default reject", async () => {
    const client = newClient();
    const store = (onUnavailable) => createRateLimiterStore({ client, onUnavailable });
    assert.deepStrictEqual(await store('allow').check('k', policy), { allowed: true });
    assert.deepStrictEqual(await store('deny').check('k', policy), {
      allowed: false,
      retryAfterMs: UNAVAILABLE_RETRY_AFTER_MS,
    });
    assert.equal(UNAVAILABLE_RETRY_AFTER_MS, 1000);
    await assert.rejects(store('throw').check('k', policy), RateLimitUnavailableError);
    await assert.rejects(store(undefined).check('k', policy), RateLimitUnavailableError);
  });

  test("the store follows the client's own policy when it has none, and overrides it when it has one", async () => {
    const client = newClient({ onUnavailable: 'deny' });
    assert.deepStrictEqual(await createRateLimiterStore({ client }).check('k', policy), {
      allowed: false,
      retryAfterMs: 1000,
    });
    const limiter = createRateLimiter({ client, ...policy, onUnavailable: 'allow' });
    assert.deepStrictEqual(await limiter.check('k'), { allowed: true });
    await assert.rejects(
      createRateLimiter({ client, ...policy, onUnavailable: 'throw' }).check('k'),
      RateLimitUnavailableError,
    );
  });

  test('a checker that rejects instead of knowing the option gets the store policy applied', async () => {
    // Pure logic: a checker without onUnavailable support, as a wrapper might be.
    const failing = {
      check: async () => {
        throw new RateLimitUnavailableError('no sidecar here');
      },
    };
    const invalid = {
      check: async () => {
        throw new RateLimitInvalidRequestError('bad key');
      },
    };
    const store = (client) => createRateLimiterStore({ client, onUnavailable: 'deny' });
    assert.deepStrictEqual(await store(failing).check('k', policy), {
      allowed: false,
      retryAfterMs: 1000,
    });
    await assert.rejects(store(invalid).check('k', policy), RateLimitInvalidRequestError);
  });

  test("the client: onUnavailable answers with source 'unavailable'; a check's option overrides the client's", async () => {
    const client = newClient({ onUnavailable: 'allow' });
    const options = { limit: 10, windowMs: 1000 };
    assert.deepStrictEqual(await client.check('k', options), {
      allowed: true,
      limit: 10,
      remaining: 0,
      retryAfterMs: 0,
      resetAfterMs: 0,
      source: 'unavailable',
    });
    assert.deepStrictEqual(await client.check('k', { ...options, onUnavailable: 'deny' }), {
      allowed: false,
      limit: 10,
      remaining: 0,
      retryAfterMs: 1000,
      resetAfterMs: 0,
      source: 'unavailable',
    });
    await assert.rejects(
      client.check('k', { ...options, onUnavailable: 'throw' }),
      RateLimitUnavailableError,
    );
    // The default policy's limit is unknown to the client: 0.
    assert.equal((await client.check('k')).limit, 0);
    // A wrong request is not an outage: it rejects whatever the policy.
    await assert.rejects(client.check('', options), RateLimitInvalidRequestError);
    await assert.rejects(client.check('k', { cost: -1 }), RateLimitInvalidRequestError);
    assert.equal(newClient().onUnavailable, 'throw');
    await assert.rejects(newClient().check('k', options), RateLimitUnavailableError);
  });

  test('options are checked when created', async () => {
    const client = newClient();
    assert.throws(() => new RateLimitClient({ socketPath, onUnavailable: 'maybe' }), TypeError);
    await assert.rejects(client.check('k', { onUnavailable: 'maybe' }), TypeError);
    assert.throws(() => createRateLimiterStore({}), TypeError);
    assert.throws(() => createRateLimiterStore({ client, onUnavailable: 'open' }), TypeError);
    assert.throws(() => createRateLimiterStore({ client, keyPrefix: 7 }), TypeError);
    assert.throws(() => createRateLimiter({ client, windowMs: 1000 }), TypeError);
    assert.throws(() => createRateLimiter({ client, maxRequests: 3 }), TypeError);
    assert.throws(() => createRateLimiter({ client, maxRequests: 0, windowMs: 1000 }), RangeError);
    assert.throws(() => createRateLimiter({ client, maxRequests: 3, windowMs: 1.5 }), RangeError);
  });
});

describe('onUnavailable with a sidecar that does not answer', () => {
  let sidecar;
  let client;
  before(async () => {
    sidecar = await startSidecar();
    client = new RateLimitClient({ socketPath: sidecar.socketPath, timeoutMs: 100 });
  });
  after(async () => {
    sidecar?.thaw();
    await client?.close();
    await sidecar?.dispose();
  });

  test('a timeout is no decision too: the policy answers it', async () => {
    assert.equal((await client.check('k')).allowed, true); // Connected.
    sidecar.freeze();
    const store = createRateLimiterStore({ client, onUnavailable: 'deny' });
    assert.deepStrictEqual(await store.check('k', policy), { allowed: false, retryAfterMs: 1000 });
    await assert.rejects(client.check('k'), RateLimitTimeoutError);
    sidecar.thaw();
  });
});
