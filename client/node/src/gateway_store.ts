// createRateLimiterStore and createRateLimiter: the sidecar behind the store and limiter
// interfaces of the Node gateway this product replaces, so its routes and tests keep their code.
import { CheckOptions, CheckResult } from './types';
import { OnUnavailable, checkOnUnavailable, unavailableResult } from './unavailable';
import { MAX_UINT32, integerOption, positiveUint32 } from './validate';

// Anything with RateLimitClient's check(): the client, or the in-process stand-in
// (createLocalRateLimiter) in tests. Declared by shape so that neither has to be a class of
// this package.
export interface RateLimitChecker {
  check(key: string, options?: CheckOptions): Promise<CheckResult>;
}

// The gateway's result, exactly: no other own fields, so tests comparing with deepStrictEqual
// keep passing.
export type RateLimiterStoreResult = { allowed: true } | { allowed: false; retryAfterMs: number };

export interface RateLimiterStoreCheckOptions {
  // The window's capacity: requests admitted per window (the sidecar's limit).
  maxRequests: number;
  windowMs: number;
  // Accepted for the gateway's interface and ignored: the sidecar decides on its own clock (the
  // database's, with the PostgreSQL store), never a caller's. Tests that need to move time use
  // the stand-in, whose `now` option is its clock.
  now?: number;
}

// The gateway's RateLimiterStore, structurally.
export interface RateLimiterStore {
  check(bucketKey: string, options: RateLimiterStoreCheckOptions): Promise<RateLimiterStoreResult>;
}

// The gateway's RateLimiter, structurally.
export interface RateLimiter {
  check(apiKey: string): Promise<RateLimiterStoreResult>;
}

export interface RateLimiterStoreOptions {
  client: RateLimitChecker;
  // Put before every bucket key (say 'gateway:'), so that these buckets cannot meet other users'
  // of the same sidecar or table. Default ''. The prefixed key must be 1 to 512 bytes of UTF-8.
  keyPrefix?: string;
  // When no decision can be had (see OnUnavailable): 'allow' resolves { allowed: true }, 'deny'
  // { allowed: false, retryAfterMs: 1000 }, 'throw' rejects with the client's error. Default:
  // the client's own policy (RateLimitClient's default is 'throw', which the gateway's routes
  // answer with a 500).
  onUnavailable?: OnUnavailable;
}

export interface RateLimiterOptions extends RateLimiterStoreOptions {
  maxRequests: number;
  windowMs: number;
}

// A RateLimiterStore deciding by the sidecar: check(key, { maxRequests, windowMs }) is the
// client's check(keyPrefix + key, { limit: maxRequests, windowMs }), cost 1. The window's shape
// is the sidecar's RATE_LIMIT_ALGORITHM: run it with fixed_window for the gateway's windows
// (retryAfterMs the rest of the window), or token_bucket (retryAfterMs the time until one token).
// maxRequests and windowMs must be integers from 1 to 2^32 - 1, else the check rejects with
// RateLimitInvalidRequestError. Throws TypeError for invalid options, when created.
export function createRateLimiterStore(options: RateLimiterStoreOptions): RateLimiterStore {
  const { client } = options;
  if (typeof client?.check !== 'function') throw new TypeError('client must have a check method');
  const keyPrefix = options.keyPrefix ?? '';
  if (typeof keyPrefix !== 'string') throw new TypeError('keyPrefix must be a string');
  const onUnavailable = checkOnUnavailable(options.onUnavailable);

  return {
    async check(bucketKey, { maxRequests, windowMs }) {
      const limit = positiveUint32('maxRequests', maxRequests);
      const checkOptions: CheckOptions = { limit, windowMs: positiveUint32('windowMs', windowMs) };
      if (onUnavailable !== undefined) checkOptions.onUnavailable = onUnavailable;
      let result: CheckResult;
      try {
        result = await client.check(`${keyPrefix}${bucketKey}`, checkOptions);
      } catch (error) {
        // A checker that does not know the option (a stand-in, a wrapper) rejects instead.
        if (onUnavailable === undefined) throw error;
        result = unavailableResult(onUnavailable, limit, error);
      }
      return result.allowed
        ? { allowed: true }
        : { allowed: false, retryAfterMs: result.retryAfterMs };
    },
  };
}

// A RateLimiter: createRateLimiterStore's check of the API key under one policy.
// Throws TypeError or RangeError for invalid options, when created.
export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const maxRequests = requiredInteger('maxRequests', options.maxRequests);
  const windowMs = requiredInteger('windowMs', options.windowMs);
  const store = createRateLimiterStore(options);
  return { check: (apiKey) => store.check(apiKey, { maxRequests, windowMs }) };
}

function requiredInteger(name: string, value: unknown): number {
  if (value === undefined) throw new TypeError(`${name} is required`);
  return integerOption(name, value, 0, 1, MAX_UINT32);
}
