// The example gateway (examples/gateway) over HTTP against real sidecars: the memory store with
// fixed windows, and 3 sidecars on one PostgreSQL table in strict and in lease mode, one gateway
// per sidecar as in a deployment of 3 pods.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { configFromEnv, createGateway, createLimiter } from '../examples/gateway/gateway.mjs';
import { RateLimitClient } from '../dist/index.js';
import { Sidecar, startSidecar } from './helpers/sidecar.mjs';

const HTTP_TIMEOUT_MS = 5000;
const WINDOW_MS = 60_000;
const API_KEYS = 'key-1=customer-1,key-2=customer-2,key-3=customer-3,key-4=customer-4';

// One gateway process's worth: a client of one sidecar, the limiter and the app on a port.
async function startGateway({ socketPath, maxRequests = 3, onUnavailable = 'throw' }) {
  const config = configFromEnv({
    RATE_LIMIT_MAX_REQUESTS: String(maxRequests),
    RATE_LIMIT_WINDOW_MS: String(WINDOW_MS),
    RATE_LIMIT_SOCKET: socketPath,
    GATEWAY_API_KEYS: API_KEYS,
    GATEWAY_RATE_LIMIT_ON_UNAVAILABLE: onUnavailable,
  });
  const client = new RateLimitClient({ socketPath: config.socketPath });
  const app = createGateway({ limiter: createLimiter(config, client), apiKeys: config.apiKeys });
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    billed: app.locals.billed,
    async close() {
      server.closeAllConnections();
      server.close();
      await client.close();
    },
  };
}

async function post(base, apiKey) {
  const res = await fetch(`${base}/v1/messages`, {
    method: 'POST',
    headers: apiKey === undefined ? {} : { 'x-api-key': apiKey },
    signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
  });
  return {
    status: res.status,
    body: await res.json(),
    retryAfter: res.headers.get('retry-after'),
    requestId: res.headers.get('x-request-id'),
  };
}

function assertJsonError(res, status, code) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.deepEqual(Object.keys(res.body).sort(), ['code', 'message', 'requestId']);
  assert.equal(res.body.code, code);
  assert.equal(res.body.requestId, res.requestId);
}

// 3 requests per 60 s on `apiKey`, spread over `bases` in turn: 3 admitted, then every gateway
// answers 429. Fixed windows: Retry-After is the rest of the window, rounded up: 60 while the
// window is under 1 s old, so the lower bound comes from the time the requests took (an upper
// bound on the window's age); never above 60.
async function assertThreePerMinute(bases, apiKey) {
  const started = Date.now();
  for (let i = 0; i < 3; i++) {
    const res = await post(bases[i % bases.length], apiKey);
    assert.equal(res.status, 200, `request ${i + 1} of 3: ${JSON.stringify(res.body)}`);
  }
  const period = WINDOW_MS;
  const high = Math.ceil(period / 1000);
  for (const base of bases) {
    const denied = await post(base, apiKey);
    const elapsedMs = Date.now() - started;
    assertJsonError(denied, 429, 'TOO_MANY_REQUESTS');
    const low = Math.ceil((period - elapsedMs) / 1000);
    const retryAfter = Number(denied.retryAfter);
    assert.ok(
      retryAfter <= high && retryAfter >= low,
      `Retry-After ${denied.retryAfter}, expected ${low} to ${high} (${elapsedMs} ms after the first)`,
    );
  }
}

// 20 requests at once on a fresh key at a limit of 5, spread over `bases`: exactly 5 admitted,
// and billed.
async function assertTwentyAtOnce(gateways, apiKey, customer) {
  const results = await Promise.all(
    Array.from({ length: 20 }, (_, i) => post(gateways[i % gateways.length].base, apiKey)),
  );
  const statuses = results.map((r) => r.status);
  assert.equal(statuses.filter((s) => s === 200).length, 5, `statuses: ${statuses.join(' ')}`);
  assert.equal(statuses.filter((s) => s === 429).length, 15, `statuses: ${statuses.join(' ')}`);
  const billed = gateways.reduce((sum, g) => sum + (g.billed.get(customer) ?? 0), 0);
  assert.equal(billed, 5, 'only admitted requests are billed');
}

// With its sidecar gone, a gateway follows onUnavailable: allow serves, deny is a 429 with
// Retry-After 1, throw is the gateway's 500.
async function assertUnreachable(socketPath, apiKey) {
  const gateways = {};
  for (const policy of ['allow', 'deny', 'throw']) {
    gateways[policy] = await startGateway({ socketPath, onUnavailable: policy });
  }
  try {
    assert.equal((await post(gateways.allow.base, apiKey)).status, 200);
    const denied = await post(gateways.deny.base, apiKey);
    assertJsonError(denied, 429, 'TOO_MANY_REQUESTS');
    assert.equal(denied.retryAfter, '1');
    assertJsonError(await post(gateways.throw.base, apiKey), 500, 'INTERNAL_ERROR');
  } finally {
    await Promise.all(Object.values(gateways).map((g) => g.close()));
  }
}

describe('the example gateway, memory store, fixed windows', () => {
  let sidecar;
  const gateways = [];
  before(async () => {
    sidecar = await startSidecar({ env: { RATE_LIMIT_ALGORITHM: 'fixed_window' } });
  });
  after(async () => {
    await Promise.all(gateways.map((g) => g.close()));
    await sidecar?.dispose();
  });

  test('runs as a process configured by the gateway variables: 401, 403, then 3 per 60 s and a 429 with Retry-After 60', async () => {
    const child = spawn(
      process.execPath,
      [fileURLToPath(new URL('../examples/gateway/server.mjs', import.meta.url))],
      {
        env: {
          PATH: process.env.PATH,
          PORT: '0',
          RATE_LIMIT_SOCKET: sidecar.socketPath,
          RATE_LIMIT_MAX_REQUESTS: '3',
          RATE_LIMIT_WINDOW_MS: '60000',
          GATEWAY_API_KEYS: API_KEYS,
        },
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const exited = once(child, 'exit');
    try {
      child.stdout.setEncoding('utf8');
      let output = '';
      for await (const chunk of child.stdout) {
        output += chunk;
        if (output.includes('\n')) break;
      }
      const base = output.match(/listening on (http:\S+)/)?.[1];
      assert.ok(base, `the gateway said: ${output}`);
      assertJsonError(await post(base, undefined), 401, 'UNAUTHORIZED');
      assertJsonError(await post(base, 'key-unknown'), 403, 'FORBIDDEN');
      await assertThreePerMinute([base], 'key-1');
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
    assert.equal(child.exitCode, 0);
  });

  test('401 and 403 come before the limiter: they spend nothing and bill nothing', async () => {
    const gateway = await startGateway({ socketPath: sidecar.socketPath });
    gateways.push(gateway);
    for (let i = 0; i < 5; i++) {
      assertJsonError(await post(gateway.base, undefined), 401, 'UNAUTHORIZED');
      assertJsonError(await post(gateway.base, 'not-a-key'), 403, 'FORBIDDEN');
    }
    const client = new RateLimitClient({ socketPath: sidecar.socketPath });
    const read = await client.check('gateway:not-a-key', {
      limit: 3,
      windowMs: WINDOW_MS,
      cost: 0,
    });
    await client.close();
    assert.equal(read.remaining, 3);
    assert.equal(gateway.billed.size, 0);
  });

  test('20 concurrent requests at a limit of 5 admit exactly 5', async () => {
    const gateway = await startGateway({ socketPath: sidecar.socketPath, maxRequests: 5 });
    gateways.push(gateway);
    await assertTwentyAtOnce([gateway], 'key-2', 'customer-2');
  });

  test('an unreachable sidecar follows onUnavailable: allow, deny (429), throw (500)', async () => {
    await assertUnreachable(join(sidecar.dir, 'nobody.sock'), 'key-3');
  });
});

// PostgreSQL: scripts/with-postgres.sh (which ctest runs the suites in) names the server.
const pgUrl = process.env.RATELIMIT_TEST_DATABASE_URL;
const pgRequired = process.env.RATELIMIT_REQUIRE_PG === '1';
const NO_PG =
  'RATELIMIT_TEST_DATABASE_URL is not set' +
  (pgRequired ? ' but RATELIMIT_REQUIRE_PG=1' : '') +
  ': run the tests through scripts/with-postgres.sh, e.g. ' +
  '`scripts/with-postgres.sh ctest --test-dir build -R node_client_example_gateway`';

// Polls ping until the sidecar reports its store ready, for at most 10 s.
async function waitReady(socketPath) {
  const client = new RateLimitClient({ socketPath });
  try {
    const deadline = Date.now() + 10_000;
    let ping;
    while (!(ping = await client.ping()).ready) {
      assert.ok(
        Date.now() < deadline,
        `sidecar at ${socketPath} not ready: ${JSON.stringify(ping)}`,
      );
      await sleep(20);
    }
    assert.equal(ping.store, 'postgres');
  } finally {
    await client.close();
  }
}

for (const mode of ['strict', 'lease']) {
  describe(
    `the example gateway, 3 sidecars on one PostgreSQL table, ${mode} mode`,
    {
      skip: !pgUrl && !pgRequired ? NO_PG : false,
    },
    () => {
      const sidecars = [];
      let gateways = [];

      before(async () => {
        if (!pgUrl) throw new Error(NO_PG);
        const env = {
          RATE_LIMIT_STORE: 'postgres',
          RATE_LIMIT_MODE: mode,
          DATABASE_URL: pgUrl,
          RATE_LIMIT_PG_TABLE: `example_gateway_${mode}_${process.pid}`,
          RATE_LIMIT_ALGORITHM: 'fixed_window',
        };
        sidecars.push(...(await Promise.all([0, 1, 2].map(() => startSidecar({ env })))));
        // Each is ready once it reached the database (and made the table).
        await Promise.all(sidecars.map((s) => waitReady(s.socketPath)));
      });
      after(async () => {
        await Promise.all(gateways.map((g) => g.close()));
        await Promise.all(sidecars.map((s) => s.dispose()));
      });

      test('3 requests per 60 s spread over the 3 gateways: the count is shared, the 4th gets 429 everywhere', async () => {
        gateways = await Promise.all(
          sidecars.map((s) => startGateway({ socketPath: s.socketPath })),
        );
        await assertThreePerMinute(
          gateways.map((g) => g.base),
          'key-1',
        );
      });

      test('20 concurrent requests over the 3 gateways at a limit of 5 admit exactly 5', async () => {
        const five = await Promise.all(
          sidecars.map((s) => startGateway({ socketPath: s.socketPath, maxRequests: 5 })),
        );
        gateways.push(...five);
        await assertTwentyAtOnce(five, 'key-2', 'customer-2');
      });

      test('a gateway whose sidecar is gone follows onUnavailable; the others still share the count', async () => {
        const gone = sidecars[2];
        await gone.stop();
        await assertUnreachable(gone.socketPath, 'key-3');
        // key-1 spent its window above, through all three sidecars: still denied on the others.
        for (const g of gateways.slice(0, 2)) {
          assert.equal((await post(g.base, 'key-1')).status, 429);
        }
      });
    },
  );
}
