// rateLimitMiddleware: Express-compatible middleware admitting or refusing requests by the sidecar.
import type { IncomingMessage, ServerResponse } from 'node:http';

import { RateLimitInvalidRequestError } from './errors';
import {
  policyItem,
  rateLimitField,
  rateLimitPolicyField,
  retryAfterSeconds,
  secondsUp,
} from './headers';
import { CheckOptions, CheckResult } from './types';
import { checkOnUnavailable, isNoDecision } from './unavailable';
import { MAX_UINT32, integerOption } from './validate';

export interface RateLimitMiddlewareOptions<Req extends IncomingMessage = IncomingMessage> {
  // A RateLimitClient, or anything with its check().
  client: { check(key: string, options?: CheckOptions): Promise<CheckResult> };
  // The bucket a request spends from, e.g. its API key. May be async; it runs per request, when
  // the request reaches the middleware, so it can read what earlier middleware (the app's
  // authentication, answering 401/403 first) put on the request. Returning no key
  // (undefined, null or '') is an error passed to next(), never a free pass.
  key: (req: Req) => string | null | undefined | Promise<string | null | undefined>;
  // Requests for which it returns (or resolves) true go on at once, unchecked and without
  // RateLimit fields (health checks, internal callers). May be async; one that throws or rejects
  // passes its error to next(). Runs before `key`.
  skip?: (req: Req) => boolean | Promise<boolean>;
  // Answers a denial instead of the default plain-text 429. Called with the RateLimit-Policy,
  // RateLimit and Retry-After fields already set (it may change them) and the status code not
  // set; it must end the response (or call next). An error it throws or rejects with goes to
  // next().
  onDenied?: (
    req: Req,
    res: ServerResponse,
    next: (err?: unknown) => void,
    result: CheckResult,
  ) => void | Promise<void>;
  // The policy, both or neither; neither selects the sidecar's default policy.
  limit?: number;
  windowMs?: number;
  // Tokens a request spends; default 1.
  cost?: number | ((req: Req) => number);
  // When no decision can be had (sidecar unreachable, timed out, overloaded, or an unreadable
  // answer): 'allow' (default) lets the request through without RateLimit headers; 'deny'
  // answers 503 with Retry-After: 1; 'throw' passes the error to next(), for the app's error
  // handler. (A client created with its own onUnavailable 'allow' or 'deny' answers before the
  // middleware sees an error: its answer, of source 'unavailable', is then treated as a
  // decision without RateLimit fields.)
  onUnavailable?: 'allow' | 'deny' | 'throw';
  // The policy's name in the RateLimit-Policy and RateLimit fields; default 'default'.
  policyName?: string;
}

export type RateLimitMiddleware<Req extends IncomingMessage = IncomingMessage> = (
  req: Req,
  res: ServerResponse,
  next: (err?: unknown) => void,
) => void;

// Checks every request with the sidecar before it goes on:
// - skip(req) true: next(), nothing checked;
// - allowed: sets RateLimit-Policy and RateLimit (see headers.ts) and calls next();
// - denied: sets Retry-After (whole seconds, rounded up, at least 1) and the same fields, then
//   onDenied answers, or by default a plain-text 429;
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
  const { client, key, skip, onDenied } = options;
  if (typeof client?.check !== 'function') throw new TypeError('client must have a check method');
  if (typeof key !== 'function') throw new TypeError('key must be a function of the request');
  if (skip !== undefined && typeof skip !== 'function') {
    throw new TypeError('skip must be a function of the request');
  }
  if (onDenied !== undefined && typeof onDenied !== 'function') {
    throw new TypeError('onDenied must be a function (req, res, next, result)');
  }
  if ((options.limit === undefined) !== (options.windowMs === undefined)) {
    throw new TypeError('give both limit and windowMs, or neither');
  }
  const limit = integerOption('limit', options.limit, 0, 0, MAX_UINT32);
  const windowMs = integerOption('windowMs', options.windowMs, 0, 0, MAX_UINT32);
  const cost =
    typeof options.cost === 'function'
      ? options.cost
      : integerOption('cost', options.cost, 1, 0, MAX_UINT32);
  const onUnavailable = checkOnUnavailable(options.onUnavailable) ?? 'allow';
  const item = policyItem(options.policyName ?? 'default');

  // The decision, or null when the request is skipped.
  async function decide(req: Req): Promise<CheckResult | null> {
    if (skip !== undefined && (await skip(req))) return null;
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

  // A denial: the RateLimit fields and Retry-After, then onDenied's answer or the default 429.
  function deny(req: Req, res: ServerResponse, next: (err?: unknown) => void, result: CheckResult) {
    const retryAfter = retryAfterSeconds(result.retryAfterMs);
    if (result.source !== 'unavailable') {
      res.setHeader('RateLimit', rateLimitField(item, result.remaining, retryAfter));
    }
    if (onDenied === undefined) {
      refuse(res, 429, retryAfter, 'Too Many Requests');
      return;
    }
    res.setHeader('Retry-After', String(retryAfter));
    // The handler's own errors go to next() as they are: they are not the limiter's.
    new Promise<void>((resolve) => resolve(onDenied(req, res, next, result))).catch(next);
  }

  return (req, res, next) => {
    decide(req).then(
      (result) => {
        if (res.headersSent) return; // Answered meanwhile (say, by a request timeout).
        if (result === null) {
          next();
          return;
        }
        // An answer of the client's own onUnavailable policy says nothing about the quota.
        const known = result.source !== 'unavailable';
        if (known) {
          res.setHeader('RateLimit-Policy', rateLimitPolicyField(item, result.limit, windowMs));
        }
        if (!result.allowed) {
          deny(req, res, next, result);
          return;
        }
        if (known) {
          res.setHeader(
            'RateLimit',
            rateLimitField(item, result.remaining, secondsUp(result.resetAfterMs)),
          );
        }
        next();
      },
      (error: unknown) => {
        if (res.headersSent) return;
        if (!isNoDecision(error) || onUnavailable === 'throw') next(error);
        else if (onUnavailable === 'allow') next();
        else refuse(res, 503, 1, 'Service Unavailable');
      },
    );
  };
}

function refuse(res: ServerResponse, status: number, retryAfter: number, text: string): void {
  res.statusCode = status;
  res.setHeader('Retry-After', String(retryAfter));
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.end(`${text}\n`);
}
