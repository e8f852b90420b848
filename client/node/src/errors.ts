// Errors of the rate-limit client: one base class, one subclass per way a check can fail.

// Status names of schema/ratelimit.fbs, spelled as the schema spells them.
export type WireStatus =
  'Ok' | 'InvalidRequest' | 'CostExceedsLimit' | 'StoreUnavailable' | 'Overloaded' | 'ShuttingDown';

export type RateLimitErrorCode =
  | 'RATE_LIMIT_UNAVAILABLE'
  | 'RATE_LIMIT_TIMEOUT'
  | 'RATE_LIMIT_INVALID_REQUEST'
  | 'RATE_LIMIT_PROTOCOL';

// Every error the client produces. `code` is stable; messages are for people and never contain
// the key, which is often an API key.
export class RateLimitError extends Error {
  readonly code: RateLimitErrorCode;
  // The sidecar's Status behind the error, when there is one. Deliberately not called `status`:
  // Express error handlers read `err.status` as an HTTP status code.
  readonly wireStatus: WireStatus | undefined;

  constructor(
    code: RateLimitErrorCode,
    message: string,
    wireStatus?: WireStatus,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.code = code;
    this.wireStatus = wireStatus;
  }
}

RateLimitError.prototype.name = 'RateLimitError';

// No decision could be had: the sidecar is not running, the connection broke, the client is
// closed, or the sidecar said it cannot decide now (StoreUnavailable, Overloaded, ShuttingDown).
// Nothing is known about the key's bucket; the caller chooses to fail open or closed.
export class RateLimitUnavailableError extends RateLimitError {
  constructor(message: string, wireStatus?: WireStatus, options?: { cause?: unknown }) {
    super('RATE_LIMIT_UNAVAILABLE', message, wireStatus, options);
  }
}

RateLimitUnavailableError.prototype.name = 'RateLimitUnavailableError';

// No answer within timeoutMs (connecting included). The check may still have been decided, and
// may have spent tokens: it is never sent again.
export class RateLimitTimeoutError extends RateLimitUnavailableError {
  override readonly code: RateLimitErrorCode = 'RATE_LIMIT_TIMEOUT';
}

RateLimitTimeoutError.prototype.name = 'RateLimitTimeoutError';

// The request is wrong, whatever the sidecar's state: found by the client before sending
// (wireStatus 'InvalidRequest', the answer the sidecar would give) or answered by the sidecar
// ('InvalidRequest', 'CostExceedsLimit'). Retrying does not help.
export class RateLimitInvalidRequestError extends RateLimitError {
  constructor(message: string, wireStatus: WireStatus = 'InvalidRequest') {
    super('RATE_LIMIT_INVALID_REQUEST', message, wireStatus);
  }
}

RateLimitInvalidRequestError.prototype.name = 'RateLimitInvalidRequestError';

// The sidecar sent something this client cannot read, or refused a frame this client sent: a
// version mismatch or a bug on one side. The connection it came on is closed.
export class RateLimitProtocolError extends RateLimitError {
  constructor(message: string, wireStatus?: WireStatus) {
    super('RATE_LIMIT_PROTOCOL', message, wireStatus);
  }
}

RateLimitProtocolError.prototype.name = 'RateLimitProtocolError';
