// createLocalRateLimiter on a fake clock: the sidecar's arithmetic, the client's errors.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { createLocalRateLimiter, RateLimitClient } from '../dist/index.js';

// A limiter whose clock is `clock.now`, in milliseconds, moved by the test.
function onClock(algorithm, options = {}) {
  const clock = { now: 1_000_000 };
  const limiter = createLocalRateLimiter({ algorithm, now: () => clock.now, ...options });
  return { clock, limiter };
}

// The fields the sidecar decides, without `source`.
function decision(result) {
  const { allowed, limit, remaining, retryAfterMs, resetAfterMs } = result;
  return { allowed, limit, remaining, retryAfterMs, resetAfterMs };
}

// [advance ms, check options, expected decision as [allowed, remaining, retryAfterMs,
// resetAfterMs]], run in order on one key.
async function expectSteps(algorithm, steps) {
  const { clock, limiter } = onClock(algorithm);
  for (const [
    i,
    [advance, options, [allowed, remaining, retryAfterMs, resetAfterMs]],
  ] of steps.entries()) {
    clock.now += advance;
    const r = await limiter.check('k', options);
    assert.deepEqual(
      decision(r),
      { allowed, limit: options.limit ?? 100, remaining, retryAfterMs, resetAfterMs },
      `step ${i}: ${JSON.stringify(options)} at +${advance} ms`,
    );
    assert.equal(r.source, 'memory');
  }
}

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return {
      name: error.name,
      code: error.code,
      wireStatus: error.wireStatus,
      message: error.message,
    };
  }
  assert.fail('expected a rejection');
}

describe('createLocalRateLimiter', () => {
  test('stands where a client stands: check and close, defaults as the sidecar', async () => {
    const limiter = createLocalRateLimiter({ algorithm: 'token_bucket' }); // now: Date.now
    const r = await limiter.check('k');
    assert.deepEqual(r, {
      allowed: true,
      limit: 100,
      remaining: 99,
      retryAfterMs: 0,
      resetAfterMs: 600,
      source: 'memory',
    });
    assert.equal(await limiter.close(), undefined);
    assert.equal((await limiter.check('k', { cost: 0 })).limit, 100, 'usable after close');
  });

  test('bad input is refused with the same errors as RateLimitClient.check', async () => {
    // The client validates before it connects: no sidecar is needed to see its errors.
    const client = new RateLimitClient({ socketPath: '/nonexistent/rl.sock', timeoutMs: 100 });
    const { limiter } = onClock('fixed_window');
    const cases = [
      [''],
      ['x'.repeat(513)],
      ['\ud800'],
      [42],
      ['k', { cost: -1 }],
      ['k', { cost: 1.5 }],
      ['k', { limit: 2 ** 32, windowMs: 1 }],
      ['k', { windowMs: 'x' }],
    ];
    for (const args of cases) {
      const expected = await rejection(client.check(...args));
      assert.equal(expected.code, 'RATE_LIMIT_INVALID_REQUEST', JSON.stringify(args));
      assert.deepEqual(await rejection(limiter.check(...args)), expected, JSON.stringify(args));
    }
    await client.close();
  });

  test('a half-given policy and a cost above the limit are refused as the sidecar refuses them', async () => {
    for (const algorithm of ['token_bucket', 'fixed_window']) {
      const { limiter } = onClock(algorithm);
      assert.deepEqual(await rejection(limiter.check('k', { limit: 5 })), {
        name: 'RateLimitInvalidRequestError',
        code: 'RATE_LIMIT_INVALID_REQUEST',
        wireStatus: 'InvalidRequest',
        message: 'sidecar refused the check: InvalidRequest',
      });
      assert.deepEqual(await rejection(limiter.check('k', { cost: 6, limit: 5, windowMs: 100 })), {
        name: 'RateLimitInvalidRequestError',
        code: 'RATE_LIMIT_INVALID_REQUEST',
        wireStatus: 'CostExceedsLimit',
        message: 'sidecar refused the check: CostExceedsLimit (limit 5)',
      });
      // Neither took anything.
      assert.equal((await limiter.check('k', { cost: 5, limit: 5, windowMs: 100 })).allowed, true);
    }
  });

  test('options are checked when the limiter is made', () => {
    assert.throws(() => createLocalRateLimiter({ algorithm: 'leaky_bucket' }), RangeError);
    assert.throws(() => createLocalRateLimiter(), TypeError);
    assert.throws(
      () => createLocalRateLimiter({ algorithm: 'fixed_window', limit: 0 }),
      RangeError,
    );
    assert.throws(
      () => createLocalRateLimiter({ algorithm: 'fixed_window', windowMs: 1.5 }),
      RangeError,
    );
    assert.throws(() => createLocalRateLimiter({ algorithm: 'fixed_window', now: 5 }), TypeError);
  });

  test('a clock that reads no number rejects the check', async () => {
    const limiter = createLocalRateLimiter({ algorithm: 'token_bucket', now: () => NaN });
    await assert.rejects(limiter.check('k'), TypeError);
  });
});

describe('token bucket, as sidecar/core/token_bucket.cc', () => {
  const p = { limit: 3, windowMs: 1000 }; // A token every 333.3 ms.

  test('exact refill, waits rounded up to the millisecond', () =>
    expectSteps('token_bucket', [
      [0, { ...p, cost: 3 }, [true, 0, 0, 1000]],
      [0, { ...p, cost: 1 }, [false, 0, 334, 1000]],
      [333, { ...p, cost: 1 }, [false, 0, 1, 667]],
      [1, { ...p, cost: 1 }, [true, 0, 0, 1000]], // 1.002 tokens: one taken, 0.002 kept.
      [0, { ...p, cost: 0 }, [true, 0, 0, 1000]],
      [2000, { ...p, cost: 0 }, [true, 3, 0, 0]], // Full, never above.
      [0, { ...p, cost: 2 }, [true, 1, 0, 667]],
      [0, { ...p, cost: 2 }, [false, 1, 334, 667]], // A denial takes nothing.
    ]));

  test('time is kept in microseconds: fractional tokens are never rounded away', async () => {
    // 3 tokens per second: one token takes 333,333.3 us to flow in.
    const { clock, limiter } = onClock('token_bucket');
    assert.equal((await limiter.check('k', { ...p, cost: 3 })).allowed, true);
    clock.now += 333.333;
    assert.equal((await limiter.check('k', { ...p, cost: 0 })).remaining, 0);
    clock.now += 0.001;
    assert.equal((await limiter.check('k', { ...p, cost: 0 })).remaining, 1);
    // A read stores nothing, so the same instants give the same answers to checks.
    clock.now -= 0.001;
    assert.equal((await limiter.check('k', { ...p, cost: 1 })).allowed, false);
    clock.now += 0.001;
    assert.equal((await limiter.check('k', { ...p, cost: 1 })).allowed, true);
  });

  test('a policy change keeps the tokens, clamped; a full bucket starts over', () =>
    expectSteps('token_bucket', [
      [0, { limit: 5, windowMs: 1000, cost: 2 }, [true, 3, 0, 400]],
      [0, { limit: 10, windowMs: 1000, cost: 0 }, [true, 3, 0, 700]], // A read rescales nothing,
      [0, { limit: 10, windowMs: 1000, cost: 1 }, [true, 2, 0, 800]], // a check does.
      [0, { limit: 2, windowMs: 1000, cost: 0 }, [true, 2, 0, 0]], // Clamped to the capacity.
      [0, { limit: 2, windowMs: 1000, cost: 1 }, [true, 1, 0, 500]],
      [500, { limit: 9, windowMs: 1000, cost: 1 }, [true, 8, 0, 112]], // Full: a fresh 9.
    ]));

  test('a clock that steps back refills nothing until it passes the last update again', () =>
    expectSteps('token_bucket', [
      [0, { ...p, cost: 3 }, [true, 0, 0, 1000]],
      [-5000, { ...p, cost: 1 }, [false, 0, 334, 1000]],
      [5000, { ...p, cost: 1 }, [false, 0, 334, 1000]],
      [334, { ...p, cost: 1 }, [true, 0, 0, 1000]], // 1.002 tokens, as above.
    ]));

  test('extreme policies do not overflow', () =>
    expectSteps('token_bucket', [
      [
        0,
        { limit: 2 ** 32 - 1, windowMs: 2 ** 32 - 1, cost: 2 ** 32 - 1 },
        [true, 0, 0, 2 ** 32 - 1],
      ],
      [0, { limit: 2 ** 32 - 1, windowMs: 2 ** 32 - 1, cost: 1 }, [false, 0, 1, 2 ** 32 - 1]],
      [2 ** 40, { limit: 2 ** 32 - 1, windowMs: 2 ** 32 - 1, cost: 0 }, [true, 2 ** 32 - 1, 0, 0]],
    ]));
});

describe('fixed window, as the older gateway (sidecar/core/fixed_window.cc)', () => {
  const p = { limit: 3, windowMs: 60_000 };

  test('3 per minute: the 4th waits for the rest of the window', () =>
    expectSteps('fixed_window', [
      [0, { ...p, cost: 1 }, [true, 2, 0, 60_000]],
      [10_000, { ...p, cost: 1 }, [true, 1, 0, 50_000]],
      [0, { ...p, cost: 1 }, [true, 0, 0, 50_000]],
      [0, { ...p, cost: 1 }, [false, 0, 50_000, 50_000]],
      [49_999, { ...p, cost: 1 }, [false, 0, 1, 1]],
      [1, { ...p, cost: 1 }, [true, 2, 0, 60_000]], // The next window opens at this request.
      [0, { ...p, cost: 0 }, [true, 2, 0, 60_000]],
    ]));

  test('the clock is floored to whole milliseconds, as the gateway read Date.now()', () =>
    expectSteps('fixed_window', [
      [0.4, { limit: 1, windowMs: 10, cost: 1 }, [true, 0, 0, 10]], // Window at floor(now).
      [9.5, { limit: 1, windowMs: 10, cost: 1 }, [false, 0, 1, 1]], // 9.9 ms: 9 whole ones.
      [0.1, { limit: 1, windowMs: 10, cost: 1 }, [true, 0, 0, 10]],
    ]));

  test('reads store nothing: a window opens at the first check, not at a read', () =>
    expectSteps('fixed_window', [
      [0, { ...p, cost: 0 }, [true, 3, 0, 0]],
      [30_000, { ...p, cost: 1 }, [true, 2, 0, 60_000]],
    ]));

  test('a policy change keeps a running window, clamps its tokens; an ended one is over', () =>
    expectSteps('fixed_window', [
      [0, { limit: 2, windowMs: 100, cost: 2 }, [true, 0, 0, 100]],
      [50, { limit: 2, windowMs: 1000, cost: 1 }, [false, 0, 950, 950]], // Extended.
      [0, { limit: 5, windowMs: 1000, cost: 0 }, [true, 0, 0, 950]],
      [1000, { limit: 2, windowMs: 100, cost: 1 }, [true, 1, 0, 100]],
      [150, { limit: 2, windowMs: 1000, cost: 1 }, [true, 1, 0, 1000]], // Ended: a new one.
      [0, { limit: 1, windowMs: 1000, cost: 1 }, [true, 0, 0, 1000]], // 1 token kept, <= 1.
    ]));

  test('a clock that steps back does not end a window, and the wait never exceeds a window', () =>
    expectSteps('fixed_window', [
      [0, { ...p, cost: 3 }, [true, 0, 0, 60_000]],
      [-30_000, { ...p, cost: 1 }, [false, 0, 60_000, 60_000]],
      [60_000, { ...p, cost: 1 }, [false, 0, 30_000, 30_000]],
      [30_000, { ...p, cost: 1 }, [true, 2, 0, 60_000]],
    ]));
});

test('keys are independent', async () => {
  const { limiter } = onClock('fixed_window');
  assert.equal((await limiter.check('a', { limit: 1, windowMs: 1000 })).allowed, true);
  assert.equal((await limiter.check('a', { limit: 1, windowMs: 1000 })).allowed, false);
  assert.equal((await limiter.check('b', { limit: 1, windowMs: 1000 })).allowed, true);
});
