// RateLimitClient against the real sidecar: decisions, bursts, pipelining and invalid requests.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { RateLimitClient, RateLimitError, RateLimitInvalidRequestError } from '../dist/index.js';
import { startSidecar } from './helpers/sidecar.mjs';

// One token per 6 s: the refill during a test (well under a second) never reaches a whole token,
// so `remaining` is exact and waits are known to within the test's own duration.
const LIMIT = 10;
const WINDOW_MS = 60_000;
const MS_PER_TOKEN = WINDOW_MS / LIMIT;
const SLACK_MS = 1000; // Time the assertions allow to have passed during the test.

function assertAbout(actual, expected, what) {
  assert.ok(
    actual <= expected && actual > expected - SLACK_MS,
    `${what}: ${actual}, expected ${expected - SLACK_MS} < x <= ${expected}`,
  );
}

describe('RateLimitClient with the sidecar', () => {
  let sidecar;
  let client;
  before(async () => {
    sidecar = await startSidecar({
      env: { RATE_LIMIT_MAX_REQUESTS: '100', RATE_LIMIT_WINDOW_MS: '60000' },
    });
    client = new RateLimitClient({ socketPath: sidecar.socketPath, timeoutMs: 5000 });
  });
  after(async () => {
    await client?.close();
    await sidecar?.dispose();
  });

  test('ping reports the protocol version and the store', async () => {
    assert.deepEqual(await client.ping(), { protocolVersion: 1, store: 'memory', ready: true });
  });

  test('token bucket: new keys are full, checks take cost, reads and denials take nothing', async () => {
    const policy = { limit: LIMIT, windowMs: WINDOW_MS };
    const first = await client.check('bucket', { ...policy, cost: 3 });
    assert.equal(first.allowed, true);
    assert.equal(first.limit, LIMIT);
    assert.equal(first.remaining, 7);
    assert.equal(first.retryAfterMs, 0);
    assert.equal(first.source, 'memory');
    assertAbout(first.resetAfterMs, 3 * MS_PER_TOKEN, 'time until full after taking 3');

    const read = await client.check('bucket', { ...policy, cost: 0 });
    assert.equal(read.allowed, true);
    assert.equal(read.remaining, 7);

    const denied = await client.check('bucket', { ...policy, cost: 8 });
    assert.equal(denied.allowed, false);
    assert.equal(denied.remaining, 7);
    assertAbout(denied.retryAfterMs, MS_PER_TOKEN, 'time until 8 tokens');

    // The denial took nothing: all 7 are still there.
    const rest = await client.check('bucket', { ...policy, cost: 7 });
    assert.equal(rest.allowed, true);
    assert.equal(rest.remaining, 0);
    assertAbout(rest.resetAfterMs, WINDOW_MS, 'time until full when empty');

    const empty = await client.check('bucket', { ...policy, cost: 1 });
    assert.equal(empty.allowed, false);
    assert.equal(empty.remaining, 0);
    assertAbout(empty.retryAfterMs, MS_PER_TOKEN, 'time until 1 token');
  });

  test('a check without a policy gets the sidecar default (RATE_LIMIT_MAX_REQUESTS)', async () => {
    const result = await client.check('default-policy');
    assert.equal(result.limit, 100);
    assert.equal(result.remaining, 99);
  });

  test('500 concurrent checks of one key with limit 100: exactly 100 allowed', async () => {
    const results = await Promise.all(
      Array.from({ length: 500 }, () => client.check('burst', { limit: 100, windowMs: 3_600_000 })),
    );
    assert.equal(results.filter((r) => r.allowed).length, 100);
    for (const r of results.filter((r) => !r.allowed)) assert.equal(r.remaining, 0);
  });

  for (const connections of [1, 4]) {
    test(`${connections} connection(s): 1000 pipelined checks each get their own answer`, async () => {
      const own = new RateLimitClient({
        socketPath: sidecar.socketPath,
        connections,
        timeoutMs: 5000,
      });
      try {
        // Key i has limit i and costs i % 7: each answer says which request it belongs to.
        const n = 1000;
        const results = await Promise.all(
          Array.from({ length: n }, (_, i) =>
            own.check(`pipelined-${connections}-${i + 1}`, {
              limit: i + 1,
              windowMs: 3_600_000,
              cost: (i + 1) % 7,
            }),
          ),
        );
        results.forEach((r, i) => {
          const limit = i + 1;
          const cost = limit % 7;
          assert.equal(r.limit, limit);
          assert.equal(r.allowed, cost <= limit);
          assert.equal(r.remaining, cost <= limit ? limit - cost : limit);
        });
      } finally {
        await own.close();
      }
    });
  }

  test('invalid requests are refused with RateLimitInvalidRequestError', async (t) => {
    const cases = [
      ['an empty key', '', {}, 'InvalidRequest'],
      ['a 513-byte key', 'k'.repeat(513), {}, 'InvalidRequest'],
      [
        'a key of 256 two-byte characters and one more byte',
        '\u00e9'.repeat(256) + 'k',
        {},
        'InvalidRequest',
      ],
      ['a key with a lone surrogate', 'k\ud800', {}, 'InvalidRequest'],
      ['a key that is not a string', 42, {}, 'InvalidRequest'],
      ['a negative cost', 'k', { cost: -1 }, 'InvalidRequest'],
      ['a fractional cost', 'k', { cost: 1.5 }, 'InvalidRequest'],
      ['a cost above uint32', 'k', { cost: 2 ** 32 }, 'InvalidRequest'],
      ['a limit that is not a number', 'k', { limit: '10', windowMs: 1000 }, 'InvalidRequest'],
      [
        'a cost above the limit (sidecar)',
        'k',
        { cost: 11, limit: 10, windowMs: 1000 },
        'CostExceedsLimit',
      ],
      ['a limit without a window (sidecar)', 'k', { limit: 10 }, 'InvalidRequest'],
    ];
    for (const [name, key, options, wireStatus] of cases) {
      await t.test(name, async () => {
        await assert.rejects(client.check(key, options), (error) => {
          assert.ok(error instanceof RateLimitInvalidRequestError, String(error));
          assert.ok(error instanceof RateLimitError);
          assert.equal(error.code, 'RATE_LIMIT_INVALID_REQUEST');
          assert.equal(error.wireStatus, wireStatus);
          return true;
        });
      });
    }
    // The longest key there is works, and the connection survived the refusals.
    assert.equal((await client.check('\u00e9'.repeat(256))).allowed, true);
  });
});
