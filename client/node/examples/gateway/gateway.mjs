// An Express API gateway shaped like the one the sidecar replaces: API-key authentication
// (401/403), then the rate limiter, then billing; a denial is a JSON 429 with Retry-After, a
// limiter that fails is a 500.
import { randomUUID } from 'node:crypto';

import express from 'express';
import { RateLimitClient, createRateLimiter } from 'ratelimit-sidecar-client';

// The gateway's configuration from its environment:
//   RATE_LIMIT_MAX_REQUESTS, RATE_LIMIT_WINDOW_MS  the limit per API key (default 100 per 60000)
//   RATE_LIMIT_SOCKET                               the sidecar's socket (the client's default)
//   GATEWAY_API_KEYS                                key=customer pairs, comma-separated
//   GATEWAY_RATE_LIMIT_ON_UNAVAILABLE               allow | deny | throw (default: throw -> 500)
// Throws for a value that is not what it should be.
export function configFromEnv(env = process.env) {
  const integer = (name, fallback) => {
    const text = env[name] || String(fallback);
    if (!/^[1-9][0-9]*$/.test(text))
      throw new Error(`${name}=${text}: expected a positive integer`);
    return Number(text);
  };
  const apiKeys = new Map(
    (env.GATEWAY_API_KEYS ?? '')
      .split(',')
      .filter((pair) => pair !== '')
      .map((pair) => pair.split('=', 2)),
  );
  return {
    maxRequests: integer('RATE_LIMIT_MAX_REQUESTS', 100),
    windowMs: integer('RATE_LIMIT_WINDOW_MS', 60_000),
    socketPath: env.RATE_LIMIT_SOCKET || undefined,
    apiKeys,
    onUnavailable: env.GATEWAY_RATE_LIMIT_ON_UNAVAILABLE || 'throw',
  };
}

// The limiter of a configuration: the gateway's RateLimiter, deciding by the sidecar.
export function createLimiter(
  config,
  client = new RateLimitClient({ socketPath: config.socketPath }),
) {
  return createRateLimiter({
    client,
    maxRequests: config.maxRequests,
    windowMs: config.windowMs,
    keyPrefix: 'gateway:',
    onUnavailable: config.onUnavailable,
  });
}

// The app. `limiter` is anything with check(apiKey) resolving { allowed, retryAfterMs? }.
// app.locals.billed counts the requests billed per customer.
export function createGateway({ limiter, apiKeys }) {
  const app = express();
  const billed = new Map();
  app.locals.billed = billed;

  const fail = (req, res, status, code, message) =>
    res.status(status).json({ code, message, requestId: req.requestId });

  app.use((req, res, next) => {
    req.requestId = randomUUID();
    res.setHeader('X-Request-Id', req.requestId);
    next();
  });

  const authenticate = (req, res, next) => {
    const apiKey = req.get('x-api-key');
    if (!apiKey) return fail(req, res, 401, 'UNAUTHORIZED', 'an API key is required');
    const customer = apiKeys.get(apiKey);
    if (customer === undefined) return fail(req, res, 403, 'FORBIDDEN', 'unknown API key');
    req.apiKey = apiKey;
    req.customer = customer;
    next();
  };

  const rateLimit = async (req, res, next) => {
    let result;
    try {
      result = await limiter.check(req.apiKey);
    } catch (error) {
      return next(error); // The error handler's 500.
    }
    if (result.allowed) return next();
    const retryAfter =
      result.retryAfterMs === undefined ? 1 : Math.ceil(result.retryAfterMs / 1000);
    res.setHeader('Retry-After', String(retryAfter));
    fail(req, res, 429, 'TOO_MANY_REQUESTS', `rate limit exceeded, retry in ${retryAfter} s`);
  };

  const bill = (req, res, next) => {
    billed.set(req.customer, (billed.get(req.customer) ?? 0) + 1);
    next();
  };

  app.post('/v1/messages', authenticate, rateLimit, bill, (req, res) => {
    res.json({ accepted: true, customer: req.customer, requestId: req.requestId });
  });

  app.use((error, req, res, next) => {
    if (res.headersSent) return next(error);
    fail(req, res, 500, 'INTERNAL_ERROR', 'internal error');
  });
  return app;
}
