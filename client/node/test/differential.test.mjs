// createLocalRateLimiter against a real sidecar on its test clock: the same answers, step by step.
//
// Seeded random sequences of checks (several keys, costs 0 to above the limit, policy changes,
// half-given policies) and clock steps (0, a few ms, around a window's or a token's boundary,
// several windows) run against the stand-in with a fake now() and against a sidecar started
// with RATE_LIMIT_TEST_CLOCK=manual, whose clock moves by the same steps over its admin server.
// Every answer is compared field by field (source apart), and every error by class, code,
// wire status and message. A failure names its seed: DIFFERENTIAL_SEEDS=<seed>[,<seed>...]
// replays exactly that sequence.
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { createLocalRateLimiter, RateLimitClient } from '../dist/index.js';
import { startSidecar } from './helpers/sidecar.mjs';

const DEFAULT_LIMIT = 4;
const DEFAULT_WINDOW_MS = 1000;
const FIXED_SEEDS = [1, 2, 3, 17, 20261207];
const STEPS_PER_SEED = 90;
const KEYS_PER_SEED = 3;
// Policies a key moves between; undefined is the default policy (nothing sent).
const POLICIES = [
  undefined,
  { limit: 3, windowMs: 1000 },
  { limit: 5, windowMs: 250 },
  { limit: 1, windowMs: 100 },
  { limit: 7, windowMs: 3000 },
  { limit: 10, windowMs: 60_000 },
  { limit: 3, windowMs: 7 },
];

function seeds() {
  const fromEnv = process.env.DIFFERENTIAL_SEEDS;
  if (fromEnv) return fromEnv.split(',').map(Number);
  return [...FIXED_SEEDS, randomInt(2 ** 31)];
}

// mulberry32: small, fast, and the same sequence for a seed on every machine.
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const below = (n) => Math.floor(next() * n);
  return { next, below, pick: (list) => list[below(list.length)] };
}

// One step of a sequence: { advance: ms } or { check: [key, options] }. The caller passes each
// check's answer back (as the value of its yield): some clock steps are the time that answer
// said to wait, give or take 1 ms, where off-by-one mistakes show.
function* sequence(seed, prefix) {
  const r = rng(seed);
  const keys = Array.from({ length: KEYS_PER_SEED }, (_, i) => `${prefix}-${seed}-k${i}`);
  const policyOf = new Map(keys.map((key) => [key, r.pick(POLICIES)]));
  let answer = {};
  for (let i = 0; i < STEPS_PER_SEED; i++) {
    const key = r.pick(keys);
    if (r.next() < 0.1) policyOf.set(key, r.pick(POLICIES));
    const policy = policyOf.get(key);
    const limit = policy?.limit ?? DEFAULT_LIMIT;
    const windowMs = policy?.windowMs ?? DEFAULT_WINDOW_MS;
    if (r.next() < 0.4) {
      yield { advance: clockStep(r, limit, windowMs, answer) };
      continue;
    }
    const options = { ...policy, cost: cost(r, limit) };
    if (r.next() < 0.03) delete options.windowMs; // Half a policy: InvalidRequest.
    answer = yield { check: [key, options] };
  }
}

function cost(r, limit) {
  const x = r.next();
  if (x < 0.12) return 0;
  if (x < 0.6) return 1;
  if (x < 0.93) return 1 + r.below(limit);
  return limit + 1 + r.below(3); // CostExceedsLimit.
}

function clockStep(r, limit, windowMs, answer) {
  const perToken = Math.max(1, Math.floor(windowMs / limit));
  const waits = [answer.retryAfterMs, answer.resetAfterMs].filter((ms) => ms > 0);
  if (waits.length > 0 && r.next() < 0.4) return Math.max(0, r.pick(waits) - 1 + r.below(3));
  switch (r.below(7)) {
    case 0:
      return 0;
    case 1:
      return 1 + r.below(20);
    case 2:
      return windowMs - 1 + r.below(3); // Just before, at, just after a window.
    case 3:
      return perToken - 1 + r.below(3); // Around one token's refill.
    case 4:
      return windowMs * (2 + r.below(4)); // Several windows.
    case 5:
      return r.below(windowMs);
    default:
      return 1;
  }
}

// What a settled check shows, for comparing: the result's fields but source, or the error's.
async function settle(promise) {
  try {
    const { allowed, limit, remaining, retryAfterMs, resetAfterMs } = await promise;
    return { allowed, limit, remaining, retryAfterMs, resetAfterMs };
  } catch (error) {
    return {
      error: error.constructor.name,
      code: error.code,
      wireStatus: error.wireStatus,
      message: error.message,
    };
  }
}

// The end of a sequence, for a failure's message: enough to see how the key got there.
function lastSteps(history, count = 40) {
  const skipped = history.length - count;
  return (skipped > 0 ? [`(${skipped} earlier steps)`] : [])
    .concat(history.slice(-count))
    .join('\n');
}

function adminPort(stderr) {
  const line = stderr.split('\n').find((l) => l.includes('"msg":"admin server listening"'));
  const port = line && JSON.parse(line).port;
  assert.ok(port, `no admin port in the sidecar's log:\n${stderr}`);
  return port;
}

for (const algorithm of ['token_bucket', 'fixed_window']) {
  describe(`stand-in and sidecar agree: ${algorithm}`, () => {
    let sidecar;
    let client;
    let port;
    before(async () => {
      sidecar = await startSidecar({
        env: {
          RATE_LIMIT_ALGORITHM: algorithm,
          RATE_LIMIT_TEST_CLOCK: 'manual',
          RATE_LIMIT_ADMIN_ADDR: '127.0.0.1:0',
          RATE_LIMIT_LOG_LEVEL: 'info',
          RATE_LIMIT_MAX_REQUESTS: String(DEFAULT_LIMIT),
          RATE_LIMIT_WINDOW_MS: String(DEFAULT_WINDOW_MS),
        },
      });
      port = adminPort(sidecar.stderr);
      client = new RateLimitClient({ socketPath: sidecar.socketPath, timeoutMs: 5000 });
    });
    after(async () => {
      await client?.close();
      await sidecar?.dispose();
    });

    async function advanceSidecar(ms) {
      const response = await fetch(`http://127.0.0.1:${port}/test/clock/advance?ms=${ms}`, {
        method: 'POST',
      });
      assert.equal(response.status, 200, await response.text());
    }

    // What the sequences exercised, over every seed: a comparison of only allowed checks, say,
    // would prove little.
    const seen = { allowed: 0, denied: 0, reads: 0, InvalidRequest: 0, CostExceedsLimit: 0 };

    for (const [run, seed] of seeds().entries()) {
      test(`seed ${seed}`, async () => {
        let now = 1_000_000;
        const local = createLocalRateLimiter({
          algorithm,
          now: () => now,
          limit: DEFAULT_LIMIT,
          windowMs: DEFAULT_WINDOW_MS,
        });
        const history = [];
        let checks = 0;
        const steps = sequence(seed, `${algorithm}-${run}`);
        for (let next = steps.next(); !next.done;) {
          const step = next.value;
          if ('advance' in step) {
            now += step.advance;
            await advanceSidecar(step.advance);
            history.push(`advance ${step.advance}`);
            next = steps.next();
            continue;
          }
          const [key, options] = step.check;
          const fromSidecar = await settle(client.check(key, options));
          const fromLocal = await settle(local.check(key, options));
          history.push(`check ${key} ${JSON.stringify(options)} -> ${JSON.stringify(fromSidecar)}`);
          checks++;
          next = steps.next(fromSidecar);
          if (fromSidecar.error) seen[fromSidecar.wireStatus]++;
          else if (options.cost === 0) seen.reads++;
          else seen[fromSidecar.allowed ? 'allowed' : 'denied']++;
          assert.deepEqual(
            fromLocal,
            fromSidecar,
            `seed ${seed} (replay: DIFFERENTIAL_SEEDS=${seed}), step ${history.length - 1}, ` +
              `the stand-in (actual) differs from the sidecar (expected); the steps:\n` +
              lastSteps(history),
          );
        }
        assert.ok(checks > STEPS_PER_SEED / 3, `only ${checks} checks`);
      });
    }

    test('the sequences allowed, denied, read and refused', () => {
      for (const [what, count] of Object.entries(seen)) {
        assert.ok(count > 0, `no ${what} in ${JSON.stringify(seen)}`);
      }
      console.log(`${algorithm}: ${JSON.stringify(seen)}`);
    });
  });
}
