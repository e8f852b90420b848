// RateLimitClient across sidecar restarts and freezes: unavailable while down, reconnected after.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';

import {
  RateLimitClient,
  RateLimitTimeoutError,
  RateLimitUnavailableError,
} from '../dist/index.js';
import { startSidecar } from './helpers/sidecar.mjs';

const POLICY = { limit: 5, windowMs: 3_600_000 };

describe('sidecar restarts', () => {
  let sidecar;
  let client;
  before(async () => {
    sidecar = await startSidecar();
    client = new RateLimitClient({ socketPath: sidecar.socketPath, timeoutMs: 500 });
  });
  after(async () => {
    await client?.close();
    await sidecar?.dispose();
  });

  test('checks fail at once while the sidecar is down and succeed once it is back', async () => {
    assert.equal((await client.check('restart', POLICY)).remaining, 4);

    assert.equal(await sidecar.stop(), 0, 'the sidecar exits 0 on SIGTERM');
    for (let i = 0; i < 3; i++) {
      await assert.rejects(client.check('restart', POLICY), (error) => {
        assert.ok(error instanceof RateLimitUnavailableError, String(error));
        assert.ok(!(error instanceof RateLimitTimeoutError), 'no socket: no need to wait');
        return true;
      });
    }

    await sidecar.start(); // Same socket path.
    // A new process: its buckets start full.
    assert.equal((await client.check('restart', POLICY)).remaining, 4);
    assert.equal((await client.check('restart', POLICY)).remaining, 3);
  });

  test('a restart between two checks loses no check: the closed connection is seen first', async () => {
    assert.equal((await client.check('between', POLICY)).remaining, 4);
    await sidecar.restart();
    assert.equal((await client.check('between', POLICY)).remaining, 4);
  });
});

describe('a frozen sidecar (SIGSTOP)', () => {
  let sidecar;
  const held = [];
  before(async () => {
    sidecar = await startSidecar();
  });
  after(async () => {
    for (const socket of held) socket.destroy();
    await sidecar?.dispose();
  });

  test('checks and connects (full backlog) time out; all is well after SIGCONT', async () => {
    const client = new RateLimitClient({ socketPath: sidecar.socketPath, timeoutMs: 200 });
    try {
      assert.equal((await client.check('frozen', POLICY)).remaining, 4);
      sidecar.freeze();

      const started = Date.now();
      await assert.rejects(client.check('frozen', POLICY), RateLimitTimeoutError);
      assert.ok(Date.now() - started >= 195);

      // Fill the listen backlog (511 on the sidecar) until connecting fails with EAGAIN.
      let refused = false;
      while (!refused && held.length < 2000) {
        const socket = connect(sidecar.socketPath);
        held.push(socket);
        const outcome = await new Promise((resolve) => {
          socket.once('connect', () => resolve('connected'));
          socket.once('error', (error) => resolve(error.code));
        });
        refused = outcome === 'EAGAIN';
      }
      assert.ok(refused, 'the backlog filled up');

      const fresh = new RateLimitClient({ socketPath: sidecar.socketPath, timeoutMs: 200 });
      try {
        await assert.rejects(fresh.check('frozen', POLICY), (error) => {
          assert.ok(error instanceof RateLimitTimeoutError, String(error));
          assert.match(error.message, /connect/);
          return true;
        });
      } finally {
        await fresh.close();
      }

      for (const socket of held.splice(0)) socket.destroy();
      sidecar.thaw();
      // The timed-out check was decided after all (it spent a token); its answer is dropped.
      assert.equal((await client.check('frozen', POLICY)).remaining, 2);
    } finally {
      sidecar.thaw();
      await client.close();
    }
  });
});
