// Runs the example gateway: `node server.mjs` (PORT, default 3000; the rest in gateway.mjs).
import { RateLimitClient } from 'ratelimit-sidecar-client';

import { configFromEnv, createGateway, createLimiter } from './gateway.mjs';

const config = configFromEnv();
const client = new RateLimitClient({ socketPath: config.socketPath });
const app = createGateway({ limiter: createLimiter(config, client), apiKeys: config.apiKeys });
const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`gateway listening on http://127.0.0.1:${server.address().port}`);
});
process.once('SIGTERM', () => {
  server.close(() => client.close());
  server.closeIdleConnections();
});
