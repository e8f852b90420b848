// How the sidecar's Status values become results and typed errors.
import {
  RateLimitError,
  RateLimitInvalidRequestError,
  RateLimitProtocolError,
  RateLimitUnavailableError,
  WireStatus,
} from './errors';
import { CheckResult } from './types';

// The decision of a CheckResponse, or the error its status stands for:
// InvalidRequest and CostExceedsLimit are the caller's mistake (RateLimitInvalidRequestError);
// StoreUnavailable, Overloaded and ShuttingDown mean no decision now (RateLimitUnavailableError),
// so callers treat them like an unreachable sidecar.
export function checkResult(status: WireStatus, result: CheckResult): CheckResult {
  switch (status) {
    case 'Ok':
      return result;
    case 'InvalidRequest':
    case 'CostExceedsLimit':
      throw new RateLimitInvalidRequestError(
        `sidecar refused the check: ${status}` +
          (status === 'CostExceedsLimit' ? ` (limit ${result.limit})` : ''),
        status,
      );
    default:
      throw new RateLimitUnavailableError(`sidecar could not decide the check: ${status}`, status);
  }
}

// The error an ErrorResponse stands for. The sidecar sends one when it refuses a connection
// (Overloaded, ShuttingDown: no decision now, as for an unreachable sidecar) or a frame it cannot
// read (this client and that sidecar disagree about the protocol); it then closes the connection.
export function errorResponseError(status: WireStatus, message: string): RateLimitError {
  const text = `sidecar refused the request (${status}): ${message}`;
  if (status === 'Overloaded' || status === 'ShuttingDown' || status === 'StoreUnavailable') {
    return new RateLimitUnavailableError(text, status);
  }
  return new RateLimitProtocolError(text, status);
}
