// RateLimitClient against a fake sidecar: answers out of order, late, malformed, refused, or none.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';

import {
  RateLimitClient,
  RateLimitInvalidRequestError,
  RateLimitProtocolError,
  RateLimitTimeoutError,
  RateLimitUnavailableError,
} from '../dist/index.js';
import {
  checkResponseFrame,
  errorResponseFrame,
  pingResponseFrame,
  rawFrame,
  startFakeSidecar,
} from './helpers/fake_sidecar.mjs';
import { makeTempDir } from './helpers/sidecar.mjs';
import { waitFor } from './helpers/wait.mjs';

const STATUS = {
  InvalidRequest: 1,
  CostExceedsLimit: 2,
  StoreUnavailable: 3,
  Overloaded: 4,
  ShuttingDown: 5,
};

// A fake sidecar whose every connection is served by `serve`, and a client of it; both closed
// after the test.
async function setUp(t, serve, clientOptions = {}) {
  const fake = await startFakeSidecar(serve);
  const client = new RateLimitClient({
    socketPath: fake.socketPath,
    timeoutMs: 2000,
    ...clientOptions,
  });
  t.after(async () => {
    await client.close();
    await fake.close();
  });
  return { fake, client };
}

// Rejects with a RateLimitUnavailableError that is not a timeout.
function isUnavailableNow(error) {
  assert.ok(error instanceof RateLimitUnavailableError, String(error));
  assert.ok(!(error instanceof RateLimitTimeoutError), String(error));
  return true;
}

// A check through a socket that cannot be connected to fails at once, not at its (long)
// timeout, with the system's reason in the message.
async function expectUnavailableAtOnce(socketPath, reason) {
  const client = new RateLimitClient({ socketPath, timeoutMs: 10_000 });
  try {
    await assert.rejects(client.check('k'), (error) => {
      isUnavailableNow(error);
      assert.match(error.message, reason);
      return true;
    });
  } finally {
    await client.close();
  }
}

describe('answers matched by id', () => {
  test('50 checks answered in reverse order each get their own answer', async (t) => {
    const n = 50;
    const { client } = await setUp(t, async (socket, requests) => {
      const read = [];
      for await (const request of requests) {
        read.push(request);
        if (read.length === n) break;
      }
      // Echo each request's limit and cost back in its answer, last request first.
      const frames = read
        .reverse()
        .map((r) => checkResponseFrame(r.id, { limit: r.limit, remaining: r.cost }));
      socket.write(Buffer.concat(frames));
    });
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        client.check(`key-${i}`, { limit: 1000 + i, windowMs: 1000, cost: i }),
      ),
    );
    results.forEach((r, i) => {
      assert.equal(r.limit, 1000 + i);
      assert.equal(r.remaining, i);
    });
  });

  test('with connections: 4, concurrent checks are spread over 4 connections', async (t) => {
    const keysByConnection = [];
    const { client } = await setUp(
      t,
      async (socket, requests) => {
        const keys = new Set();
        keysByConnection.push(keys);
        for await (const request of requests) {
          keys.add(request.key);
          socket.write(checkResponseFrame(request.id, { allowed: true, limit: request.limit }));
        }
      },
      { connections: 4 },
    );
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => client.check(`k${i}`, { limit: i + 1, windowMs: 1000 })),
    );
    results.forEach((r, i) => assert.equal(r.limit, i + 1));
    assert.equal(keysByConnection.length, 4);
    for (const keys of keysByConnection) assert.equal(keys.size, 10);
  });

  test('a ping and a check answered in swapped order', async (t) => {
    const { client } = await setUp(t, async (socket, requests) => {
      const read = [];
      for await (const request of requests) {
        read.push(request);
        if (read.length === 2) break;
      }
      const [check, ping] = read;
      socket.write(
        Buffer.concat([pingResponseFrame(ping.id), checkResponseFrame(check.id, { limit: 5 })]),
      );
    });
    const [check, ping] = await Promise.all([client.check('k'), client.ping()]);
    assert.equal(check.limit, 5);
    assert.equal(ping.store, 'fake');
  });
});

describe('timeouts', () => {
  test('a sidecar that never answers: RateLimitTimeoutError after timeoutMs', async (t) => {
    const { fake, client } = await setUp(t, async () => {}, { timeoutMs: 100 });
    const started = Date.now();
    await assert.rejects(client.check('k'), (error) => {
      assert.ok(error instanceof RateLimitTimeoutError, String(error));
      assert.ok(error instanceof RateLimitUnavailableError);
      assert.equal(error.code, 'RATE_LIMIT_TIMEOUT');
      return true;
    });
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 95 && elapsed < 1000, `gave up after ${elapsed} ms`);
    assert.equal(fake.connections(), 1, 'the connection stays open for later checks');
  });

  test('the late answer to a timed-out check is dropped; later checks get their own', async (t) => {
    const { client } = await setUp(
      t,
      async (socket, requests) => {
        for await (const request of requests) {
          const frame = checkResponseFrame(request.id, { limit: request.limit });
          if (request.limit === 1) setTimeout(() => socket.write(frame), 300);
          else socket.write(frame);
        }
      },
      { timeoutMs: 100 },
    );
    await assert.rejects(client.check('slow', { limit: 1, windowMs: 1000 }), RateLimitTimeoutError);
    assert.equal((await client.check('fast', { limit: 2, windowMs: 1000 })).limit, 2);
    await sleep(300); // The late answer arrives meanwhile.
    assert.equal((await client.check('fast', { limit: 3, windowMs: 1000 })).limit, 3);
  });
});

describe('malformed answers: RateLimitProtocolError, and the connection is closed', () => {
  const cases = [
    ['garbage with a valid length', rawFrame(16, Buffer.alloc(16, 0xab))],
    ['a frame length over the 64 KiB cap', rawFrame(64 * 1024 + 1)],
    ['a frame length of 0', rawFrame(0)],
    ['a ping answer to a check', null],
    ['an answer to an id never sent', null],
  ];
  for (const [name, bytes] of cases) {
    test(name, async (t) => {
      let closedByClient;
      const { client } = await setUp(t, async (socket, requests) => {
        closedByClient = once(socket, 'close');
        for await (const request of requests) {
          if (bytes !== null) socket.write(bytes);
          else if (name.startsWith('a ping')) socket.write(pingResponseFrame(request.id));
          else socket.write(checkResponseFrame(request.id + 1000n));
        }
      });
      await assert.rejects(client.check('k'), (error) => {
        assert.ok(error instanceof RateLimitProtocolError, String(error));
        assert.equal(error.code, 'RATE_LIMIT_PROTOCOL');
        return true;
      });
      await closedByClient;
    });
  }
});

describe('refusals and broken connections', () => {
  test('ErrorResponse Overloaded, then close: RateLimitUnavailableError with the status', async (t) => {
    const { client } = await setUp(t, (socket) => {
      socket.end(errorResponseFrame(0, STATUS.Overloaded, 'too many connections'));
    });
    await assert.rejects(client.check('k'), (error) => {
      isUnavailableNow(error);
      assert.equal(error.wireStatus, 'Overloaded');
      assert.match(error.message, /too many connections/);
      return true;
    });
  });

  test('an ErrorResponse on a connection the sidecar leaves open: the client closes it', async (t) => {
    let closedByClient;
    const { client } = await setUp(t, async (socket, requests) => {
      closedByClient = once(socket, 'close');
      for await (const request of requests) {
        socket.write(errorResponseFrame(request.id, STATUS.Overloaded, 'busy'));
      }
    });
    await assert.rejects(client.check('k'), (error) => {
      isUnavailableNow(error);
      assert.equal(error.wireStatus, 'Overloaded');
      return true;
    });
    // Nothing is pending any more, so the client does not wait for the sidecar to close it.
    await closedByClient;
    // And the next check goes out on a new connection.
    await assert.rejects(client.check('k'), RateLimitUnavailableError);
  });

  test('an ErrorResponse for the request (InvalidRequest): RateLimitProtocolError', async (t) => {
    const { client } = await setUp(t, async (socket, requests) => {
      for await (const request of requests) {
        socket.end(errorResponseFrame(request.id, STATUS.InvalidRequest, 'cannot verify frame'));
      }
    });
    await assert.rejects(client.check('k'), (error) => {
      assert.ok(error instanceof RateLimitProtocolError, String(error));
      assert.equal(error.wireStatus, 'InvalidRequest');
      return true;
    });
  });

  for (const status of ['StoreUnavailable', 'Overloaded', 'ShuttingDown']) {
    test(`a CheckResponse with status ${status}: RateLimitUnavailableError`, async (t) => {
      const { client } = await setUp(t, async (socket, requests) => {
        for await (const request of requests) {
          socket.write(checkResponseFrame(request.id, { allowed: false, status: STATUS[status] }));
        }
      });
      await assert.rejects(client.check('k'), (error) => {
        isUnavailableNow(error);
        assert.equal(error.wireStatus, status);
        return true;
      });
      // Not a broken connection: the next check is read as usual.
      await assert.rejects(client.check('k'), RateLimitUnavailableError);
    });
  }

  test('a connection closed in the middle of an answer: RateLimitUnavailableError', async (t) => {
    const { client } = await setUp(t, async (socket, requests) => {
      for await (const request of requests) {
        socket.end(checkResponseFrame(request.id).subarray(0, 10));
      }
    });
    await assert.rejects(client.check('k'), isUnavailableNow);
  });

  test('no socket file (ENOENT): RateLimitUnavailableError at once', async () => {
    await expectUnavailableAtOnce(join(makeTempDir(), 'none.sock'), /ENOENT/);
  });

  test('a socket nobody listens on (ECONNREFUSED): RateLimitUnavailableError at once', async () => {
    const socketPath = join(makeTempDir(), 'stale.sock');
    // A process that listens and is killed leaves its socket file behind.
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    await once(child, 'exit');
    await expectUnavailableAtOnce(socketPath, /ECONNREFUSED/);
  });

  test('after a broken connection the next check opens a new one', async (t) => {
    let connection = 0;
    const { fake, client } = await setUp(t, async (socket, requests) => {
      connection += 1;
      for await (const request of requests) {
        if (connection === 1)
          socket.destroy(); // The first connection breaks on its first check.
        else socket.write(checkResponseFrame(request.id, { limit: 7 }));
      }
    });
    await assert.rejects(client.check('k'), isUnavailableNow);
    await waitFor(() => fake.connections() === 0, 'the broken connection to close');
    assert.equal((await client.check('k')).limit, 7);
    assert.equal(connection, 2);
  });
});

describe("onUnavailable answers for the sidecar's no-decision answers, never for refusals", () => {
  // Per request key: what the fake sidecar answers.
  const answers = {
    garbage: () => rawFrame(16, Buffer.alloc(16, 0xab)),
    'store-unavailable': (id) =>
      checkResponseFrame(id, { allowed: false, status: STATUS.StoreUnavailable }),
    'cost-exceeds-limit': (id) =>
      checkResponseFrame(id, { allowed: false, status: STATUS.CostExceedsLimit }),
  };
  const serve = async (socket, requests) => {
    for await (const request of requests) socket.write(answers[request.key](request.id));
  };

  test("an unreadable answer and StoreUnavailable are answered by 'allow' and 'deny'", async (t) => {
    const { client } = await setUp(t, serve, { onUnavailable: 'allow' });
    for (const key of ['garbage', 'store-unavailable']) {
      const allowed = await client.check(key, { limit: 5, windowMs: 1000 });
      assert.deepEqual([allowed.allowed, allowed.source], [true, 'unavailable'], key);
      const denied = await client.check(key, { limit: 5, windowMs: 1000, onUnavailable: 'deny' });
      assert.deepEqual([denied.allowed, denied.retryAfterMs], [false, 1000], key);
    }
    await assert.rejects(
      client.check('garbage', { onUnavailable: 'throw' }),
      RateLimitProtocolError,
    );
  });

  test('CostExceedsLimit still rejects: a wrong request is not an outage', async (t) => {
    const { client } = await setUp(t, serve, { onUnavailable: 'allow' });
    await assert.rejects(client.check('cost-exceeds-limit'), RateLimitInvalidRequestError);
  });
});
