// Public types of the client: what a check asks and what the sidecar answers.

import type { OnUnavailable } from './unavailable';

// Where the answer came from: the sidecar's (schema Source, lower case), or 'unavailable' when
// the sidecar gave none and the check's onUnavailable policy answered instead.
export type DecisionSource = 'memory' | 'lease' | 'database' | 'fallback' | 'unavailable';

export interface CheckOptions {
  // Tokens to spend; default 1. 0 only reads the bucket.
  cost?: number;
  // Bucket capacity and the time a full refill takes. Give both or neither: neither (or 0) selects
  // the sidecar's default policy (RATE_LIMIT_MAX_REQUESTS per RATE_LIMIT_WINDOW_MS).
  limit?: number;
  windowMs?: number;
  // When no decision can be had (the sidecar unreachable, timed out, unable to decide now, or an
  // unreadable answer): 'throw' rejects, 'allow' and 'deny' resolve with source 'unavailable'.
  // Default: the client's onUnavailable option, whose default is 'throw'.
  onUnavailable?: OnUnavailable;
}

// A decision. Denied checks are results too, not errors.
export interface CheckResult {
  allowed: boolean;
  // The bucket's capacity under the policy that decided.
  limit: number;
  // Whole tokens left after this check.
  remaining: number;
  // 0 when allowed; else how long until `cost` tokens are there (waiting that long lets the same
  // check pass, unless others spend them first).
  retryAfterMs: number;
  // How long until the bucket is full again.
  resetAfterMs: number;
  source: DecisionSource;
}

export interface PingResult {
  protocolVersion: number;
  // 'memory' or 'postgres'.
  store: string;
  // Whether the store can decide checks now (false while the database is down).
  ready: boolean;
}
