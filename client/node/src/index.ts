// ratelimit-sidecar-client: the Node.js client of the rate-limit sidecar and its Express middleware.
export {
  DEFAULT_CONNECTIONS,
  DEFAULT_SOCKET_PATH,
  DEFAULT_TIMEOUT_MS,
  RateLimitClient,
} from './client';
export type { RateLimitClientOptions } from './client';
export {
  RateLimitError,
  RateLimitInvalidRequestError,
  RateLimitProtocolError,
  RateLimitTimeoutError,
  RateLimitUnavailableError,
} from './errors';
export type { RateLimitErrorCode, WireStatus } from './errors';
export { RATELIMIT_HEADERS_DRAFT } from './headers';
export { rateLimitMiddleware } from './middleware';
export type { RateLimitMiddleware, RateLimitMiddlewareOptions } from './middleware';
export type { CheckOptions, CheckResult, DecisionSource, PingResult } from './types';
export { MAX_KEY_BYTES } from './validate';
export {
  createLocalRateLimiter,
  type LocalRateLimiter,
  type LocalRateLimiterOptions,
} from './local_limiter';
export { createRateLimiter, createRateLimiterStore } from './gateway_store';
export type {
  RateLimitChecker,
  RateLimiter,
  RateLimiterOptions,
  RateLimiterStore,
  RateLimiterStoreCheckOptions,
  RateLimiterStoreOptions,
  RateLimiterStoreResult,
} from './gateway_store';
export { UNAVAILABLE_RETRY_AFTER_MS } from './unavailable';
export type { OnUnavailable } from './unavailable';
