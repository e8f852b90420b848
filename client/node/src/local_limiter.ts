// createLocalRateLimiter: an in-process stand-in for RateLimitClient, for tests, on a clock they hold.
import { WireStatus } from './errors';
import { checkResult } from './status';
import { CheckOptions, CheckResult } from './types';
import { integerOption, keyBytes, MAX_UINT32, uint32 } from './validate';

export type LocalAlgorithm = 'token_bucket' | 'fixed_window';

export interface LocalRateLimiterOptions {
  // The sidecar's RATE_LIMIT_ALGORITHM.
  algorithm: LocalAlgorithm;
  // Milliseconds, as Date.now() gives them (the default); read at every check. A test passes a
  // clock it moves itself. Only differences matter; it may stand still or step back (a bucket
  // then refills nothing, a window does not end).
  now?: () => number;
  // The default policy, for checks that name none: the sidecar's RATE_LIMIT_MAX_REQUESTS and
  // RATE_LIMIT_WINDOW_MS, with the same defaults.
  limit?: number;
  windowMs?: number;
}

// What stands where a RateLimitClient stands: the same check(), and a close() with nothing to
// close.
export interface LocalRateLimiter {
  check(key: string, options?: CheckOptions): Promise<CheckResult>;
  close(): Promise<void>;
}

const DEFAULT_LOCAL_LIMIT = 100;
const DEFAULT_LOCAL_WINDOW_MS = 60_000;

// Decides in this process what a sidecar with the memory store decides for the same checks at
// the same clock readings: the same arithmetic (sidecar/core/token_bucket.cc and
// fixed_window.cc, ported line by line: exact integers in microseconds, the same rounding of
// retryAfterMs and resetAfterMs, the same rescaling when a key's policy changes), the same
// validation and errors as RateLimitClient.check (a half-given policy, cost above the limit),
// and source 'memory'. Checks of cost 0 store nothing. client/node/test/differential.test.mjs
// compares it with a real sidecar on RATE_LIMIT_TEST_CLOCK=manual.
//
// Buckets live in a Map for the limiter's lifetime: a stand-in for tests, not a limiter for
// production (which would forget full buckets, as the sidecar does, with the same answers).
//
//   let t = 0;
//   const limiter = createLocalRateLimiter({ algorithm: 'fixed_window', now: () => t });
//   await limiter.check('k', { limit: 3, windowMs: 60_000 }); // then t += 60_000, ...
export function createLocalRateLimiter(options: LocalRateLimiterOptions): LocalRateLimiter {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError('createLocalRateLimiter needs an options object with an algorithm');
  }
  const engine = engineFor(options.algorithm);
  const now = options.now ?? Date.now;
  if (typeof now !== 'function')
    throw new TypeError('now must be a function returning milliseconds');
  const defaultPolicy: Policy = {
    limit: integerOption('limit', options.limit, DEFAULT_LOCAL_LIMIT, 1, MAX_UINT32),
    windowMs: integerOption('windowMs', options.windowMs, DEFAULT_LOCAL_WINDOW_MS, 1, MAX_UINT32),
  };
  return {
    // async: errors reject, as the client's do.
    async check(key: string, checkOptions: CheckOptions = {}): Promise<CheckResult> {
      keyBytes(key);
      const cost = uint32('cost', checkOptions.cost, 1);
      const limit = uint32('limit', checkOptions.limit, 0);
      const windowMs = uint32('windowMs', checkOptions.windowMs, 0);
      // The sidecar's Limiter::Check: a half-given policy, then cost above the limit.
      if ((limit !== 0) !== (windowMs !== 0)) return refusal('InvalidRequest', limit);
      const policy = limit !== 0 ? { limit, windowMs } : defaultPolicy;
      if (cost > policy.limit) return refusal('CostExceedsLimit', policy.limit);
      return engine.decide(key, cost, policy, nowMicros(now));
    },
    async close(): Promise<void> {},
  };
}

interface Policy {
  readonly limit: number;
  readonly windowMs: number;
}

type Decision = Omit<CheckResult, 'source'>;

// One bucket algorithm, as sidecar/core implements it: pure functions on a state the caller
// owns. decide may change the state in place.
interface Algorithm<S> {
  fresh(policy: Policy, nowUs: bigint): S;
  decide(state: S, policy: Policy, cost: number, nowUs: bigint): Decision;
  copy(state: S): S;
}

// The clock in whole microseconds, as the sidecar's Clock reads it.
function nowMicros(now: () => number): bigint {
  const ms = now();
  if (typeof ms !== 'number' || !Number.isFinite(ms)) {
    throw new TypeError(`now() must return a finite number of milliseconds, got ${String(ms)}`);
  }
  return BigInt(Math.round(ms * 1000));
}

function samePolicy(a: Policy, b: Policy): boolean {
  return a.limit === b.limit && a.windowMs === b.windowMs;
}

// The answer the sidecar gives a check it refuses, and the error the client makes of it.
function refusal(status: WireStatus, limit: number): never {
  checkResult(status, {
    allowed: false,
    limit,
    remaining: 0,
    retryAfterMs: 0,
    resetAfterMs: 0,
    source: 'memory',
  });
  throw new Error(`unreachable: ${status} is not a decision`);
}

// ---- Token bucket: sidecar/core/token_bucket.cc ----
// The level is fixed point: one token is windowMs * 1000 units, and the bucket gains `limit`
// units per microsecond, so refill is exact and fractional tokens are never rounded away.

interface TokenBucketState {
  level: bigint; // Tokens times window_us.
  updatedUs: bigint;
  policy: Policy;
}

const U32_MAX = BigInt(MAX_UINT32);

function windowMicros(policy: Policy): bigint {
  return BigInt(policy.windowMs) * 1000n;
}

function capacity(policy: Policy): bigint {
  return BigInt(policy.limit) * windowMicros(policy);
}

// Milliseconds, rounded up, until `units` more units have flowed in at `policy`'s rate.
function millisToGain(units: bigint, policy: Policy): number {
  const perMs = BigInt(policy.limit) * 1000n;
  const ms = (units + perMs - 1n) / perMs;
  return Number(ms < U32_MAX ? ms : U32_MAX);
}

function refill(state: TokenBucketState, nowUs: bigint): void {
  if (nowUs <= state.updatedUs) return; // A clock that stands still or steps back adds nothing.
  const elapsed = nowUs - state.updatedUs;
  const full = capacity(state.policy);
  const missing = full - state.level;
  const gained = elapsed * BigInt(state.policy.limit);
  state.level = gained >= missing ? full : state.level + gained;
  state.updatedUs = nowUs;
}

// Keeps the number of tokens (fractions included) and clamps it to the new capacity.
function rescale(state: TokenBucketState, policy: Policy): void {
  const scaled = (state.level * windowMicros(policy)) / windowMicros(state.policy);
  const full = capacity(policy);
  state.level = scaled < full ? scaled : full;
  state.policy = policy;
}

const tokenBucket: Algorithm<TokenBucketState> = {
  fresh: (policy, nowUs) => ({ level: capacity(policy), updatedUs: nowUs, policy }),
  copy: (state) => ({ ...state }),
  decide(state, policy, cost, nowUs) {
    refill(state, nowUs);
    if (!samePolicy(state.policy, policy)) {
      // Full means the same as no bucket: it starts over under the new policy.
      if (state.level === capacity(state.policy)) {
        Object.assign(state, tokenBucket.fresh(policy, nowUs));
      } else {
        rescale(state, policy);
      }
    }
    const perToken = windowMicros(policy);
    const need = BigInt(cost) * perToken;
    let allowed = false;
    let retryAfterMs = 0;
    if (state.level >= need) {
      state.level -= need;
      allowed = true;
    } else {
      retryAfterMs = millisToGain(need - state.level, policy);
    }
    return {
      allowed,
      limit: policy.limit,
      remaining: Number(state.level / perToken),
      retryAfterMs,
      resetAfterMs: millisToGain(capacity(policy) - state.level, policy),
    };
  },
};

// ---- Fixed window: sidecar/core/fixed_window.cc ----
// The older gateway's (tokens, window_start) in whole milliseconds: the clock floored to ms.

interface FixedWindowState {
  windowStartMs: bigint;
  tokens: number;
  policy: Policy;
}

function floorMillis(us: bigint): bigint {
  return us >= 0n ? us / 1000n : -((-us + 999n) / 1000n);
}

// Milliseconds of the current window still to run, within [0, windowMs].
function millisLeft(state: FixedWindowState, nowMs: bigint): number {
  const left = BigInt(state.policy.windowMs) - (nowMs - state.windowStartMs);
  if (left < 0n) return 0;
  return left > BigInt(state.policy.windowMs) ? state.policy.windowMs : Number(left);
}

// The window has ended by its own length: the same as no state.
function windowOver(state: FixedWindowState, nowUs: bigint): boolean {
  return floorMillis(nowUs) - state.windowStartMs >= BigInt(state.policy.windowMs);
}

const fixedWindow: Algorithm<FixedWindowState> = {
  fresh: (policy, nowUs) => ({ windowStartMs: floorMillis(nowUs), tokens: policy.limit, policy }),
  copy: (state) => ({ ...state }),
  decide(state, policy, cost, nowUs) {
    const nowMs = floorMillis(nowUs);
    if (windowOver(state, nowUs)) {
      Object.assign(state, fixedWindow.fresh(policy, nowUs));
    } else if (!samePolicy(state.policy, policy)) {
      state.tokens = Math.min(state.tokens, policy.limit);
      state.policy = policy;
    }
    if (nowMs - state.windowStartMs >= BigInt(policy.windowMs)) {
      state.tokens = policy.limit;
      state.windowStartMs = nowMs;
    }
    let allowed = false;
    let retryAfterMs = 0;
    if (state.tokens < cost) {
      retryAfterMs = millisLeft(state, nowMs);
    } else {
      state.tokens -= cost;
      allowed = true;
    }
    return {
      allowed,
      limit: policy.limit,
      remaining: state.tokens,
      retryAfterMs,
      resetAfterMs: state.tokens === policy.limit ? 0 : millisLeft(state, nowMs),
    };
  },
};

function engineFor(
  algorithm: unknown,
): MemoryEngine<TokenBucketState> | MemoryEngine<FixedWindowState> {
  if (algorithm === 'token_bucket') return new MemoryEngine(tokenBucket);
  if (algorithm === 'fixed_window') return new MemoryEngine(fixedWindow);
  throw new RangeError(
    `algorithm must be 'token_bucket' or 'fixed_window', got ${String(algorithm)}`,
  );
}

// The sidecar's MemoryEngine (sidecar/core/memory_engine.cc): one state per key. A read (cost 0)
// answers from a copy, so it neither stores a new key nor restarts a window nor rescales a
// bucket; a check that takes tokens keeps its key.
class MemoryEngine<S> {
  private readonly states = new Map<string, S>();

  constructor(private readonly algorithm: Algorithm<S>) {}

  decide(key: string, cost: number, policy: Policy, nowUs: bigint): CheckResult {
    const stored = this.states.get(key);
    let decision: Decision;
    if (stored !== undefined && cost > 0) {
      decision = this.algorithm.decide(stored, policy, cost, nowUs);
    } else {
      const state =
        stored !== undefined ? this.algorithm.copy(stored) : this.algorithm.fresh(policy, nowUs);
      decision = this.algorithm.decide(state, policy, cost, nowUs);
      if (stored === undefined && cost > 0) this.states.set(key, state);
    }
    return { ...decision, source: 'memory' };
  }
}
