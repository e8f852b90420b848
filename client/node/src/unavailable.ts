// What a check resolves to when no decision can be had: the onUnavailable policy, shared by the
// client's checks, the gateway store and the middleware.
import { RateLimitProtocolError, RateLimitUnavailableError } from './errors';
import { CheckResult } from './types';

// 'throw': reject with the error (RateLimitUnavailableError, RateLimitTimeoutError or
// RateLimitProtocolError). 'allow': resolve allowed. 'deny': resolve denied, with
// retryAfterMs UNAVAILABLE_RETRY_AFTER_MS. Either answer has source 'unavailable'.
export type OnUnavailable = 'allow' | 'deny' | 'throw';

// A denial for want of a decision asks the caller back in one second: a sidecar restart takes
// well under that, and it is the Retry-After: 1 of the middleware's 503. A longer wait would
// lock clients out past the outage; 0 invites an immediate retry that fails the same way.
export const UNAVAILABLE_RETRY_AFTER_MS = 1000;

// Throws TypeError unless `value` is a policy (undefined passes, as "not given").
export function checkOnUnavailable(value: unknown): OnUnavailable | undefined {
  if (value === undefined || value === 'allow' || value === 'deny' || value === 'throw') {
    return value;
  }
  throw new TypeError(`onUnavailable must be 'allow', 'deny' or 'throw', got ${String(value)}`);
}

// Whether `error` means "no decision could be had" (the sidecar unreachable, timed out, unable
// to decide now, or an answer that cannot be read), as opposed to a request that is wrong.
export function isNoDecision(error: unknown): boolean {
  return error instanceof RateLimitUnavailableError || error instanceof RateLimitProtocolError;
}

// The answer `policy` gives for a check of capacity `limit` (0: the sidecar's default policy)
// that failed with `error`: rethrows `error` for 'throw' or when it is not a no-decision error.
// limit is the check's own, remaining and resetAfterMs are 0: the bucket's state is unknown.
export function unavailableResult(
  policy: OnUnavailable,
  limit: number,
  error: unknown,
): CheckResult {
  if (policy === 'throw' || !isNoDecision(error)) throw error;
  const allowed = policy === 'allow';
  return {
    allowed,
    limit,
    remaining: 0,
    retryAfterMs: allowed ? 0 : UNAVAILABLE_RETRY_AFTER_MS,
    resetAfterMs: 0,
    source: 'unavailable',
  };
}
