// rateLimitMiddleware: Express-compatible middleware admitting or refusing requests by the sidecar.
import type { IncomingMessage, ServerResponse } from 'node:http';

import {
  RateLimitInvalidRequestError,
  RateLimitProtocolError,
  RateLimitUnavailableError,
} from './errors';
import {
  policyItem,
  rateLimitField,
  rateLimitPolicyField,
  retryAfterSeconds,
  secondsUp,
} from './headers';
import { CheckOptions, CheckResult } from './types';
import { MAX_UINT32, integerOption } from './validate';

export interface RateLimitMiddlewareOptions<Req extends IncomingMessage = IncomingMessage> {
  // A RateLimitClient, or anything with its check().
  client: { check(key: string, options?: CheckOptions): Promise<CheckResult> };
  // The bucket a request spends from, e.g. its API key. May be async. Returning no key
  // (undefined, null or '') is an error passed to next(), never a free pass.
  key: (req: Req) => string | null | undefined | Promise<string | null | undefined>;
  // The policy, both or neither; neither selects the sidecar's default policy.
  limit?: number;
  windowMs?: number;
  // Tokens a request spends; default 1.
  cost?: number | ((req: Req) => number);
  // When no decision can be had (sidecar unreachable, timed out, overloaded, or an unreadable
  // answer): 'allow' (default) lets the request through without RateLimit headers; 'deny'
  // answers 503 with Retry-After: 1.
  onUnavailable?: 'allow' | 'deny';
  // The policy's name in the RateLimit-Policy and RateLimit fields; default 'default'.
  policyName?: string;
}

export type RateLimitMiddleware<Req extends IncomingMessage = IncomingMessage> = (
  req: Req,
  res: ServerResponse,
  next: (err?: unknown) => void,
) => void;

// Checks every request with the sidecar before it goes on:
// - allowed: sets RateLimit-Policy and RateLimit (see headers.ts) and calls next();
// - denied: 429 with Retry-After (whole seconds, rounded up, at least 1) and the same fields;
// - no decision (RateLimitUnavailableError, RateLimitTimeoutError, RateLimitProtocolError):
//   onUnavailable decides;
// - an error of the application's (a key or cost function that throws, no key, a key the
//   sidecar refuses, cost above limit: RateLimitInvalidRequestError) goes to next(err), for
//   the application's error handler: the limiter does not guess whether the client or the
//   configuration is at fault.
// If the response was started while the check was out (say, by a request timeout), nothing
// more is done.
// Throws TypeError or RangeError for invalid options, when created.
export function rateLimitMiddleware<Req extends IncomingMessage = IncomingMessage>(
  options: RateLimitMiddlewareOptions<Req>,
): RateLimitMiddleware<Req> {
  const { client, key } = options;
  if (typeof client?.check !== 'function') throw new TypeError('client must have a check method');
  if (typeof key !== 'function') throw new TypeError('key must be a function of the request');
  if ((options.limit === undefined) !== (options.windowMs === undefined)) {
    throw new TypeError('give both limit and windowMs, or neither');
  }
  const limit = integerOption('limit', options.limit, 0, 0, MAX_UINT32);
  const windowMs = integerOption('windowMs', options.windowMs, 0, 0, MAX_UINT32);
  const cost =
    typeof options.cost === 'function'
      ? options.cost
      : integerOption('cost', options.cost, 1, 0, MAX_UINT32);
  const onUnavailable = options.onUnavailable ?? 'allow';
  if (onUnavailable !== 'allow' && onUnavailable !== 'deny') {
    throw new TypeError(`onUnavailable must be 'allow' or 'deny'`);
  }
  const item = policyItem(options.policyName ?? 'default');

  async function decide(req: Req): Promise<CheckResult> {
    const name = await key(req);
    if (name === undefined || name === null || name === '') {
      throw new RateLimitInvalidRequestError('the key function returned no key');
    }
    return client.check(name, {
      cost: typeof cost === 'function' ? cost(req) : cost,
      limit,
      windowMs,
    });
  }

  return (req, res, next) => {
    decide(req).then(
      (result) => {
        if (res.headersSent) return; // Answered meanwhile (say, by a request timeout).
        res.setHeader('RateLimit-Policy', rateLimitPolicyField(item, result.limit, windowMs));
        if (result.allowed) {
          res.setHeader(
            'RateLimit',
            rateLimitField(item, result.remaining, secondsUp(result.resetAfterMs)),
          );
          next();
          return;
        }
        const retryAfter = retryAfterSeconds(result.retryAfterMs);
        res.setHeader('RateLimit', rateLimitField(item, result.remaining, retryAfter));
        refuse(res, 429, retryAfter, 'Too Many Requests');
      },
      (error: unknown) => {
        if (res.headersSent) return;
        if (!noDecision(error)) next(error);
        else if (onUnavailable === 'allow') next();
        else refuse(res, 503, 1, 'Service Unavailable');
      },
    );
  };
}

function noDecision(error: unknown): boolean {
  return error instanceof RateLimitUnavailableError || error instanceof RateLimitProtocolError;
}

function refuse(res: ServerResponse, status: number, retryAfter: number, text: string): void {
  res.statusCode = status;
  res.setHeader('Retry-After', String(retryAfter));
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.end(`${text}\n`);
}
