// close(): pending and later calls fail, nothing is sent after it, and the process can exit.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';

import {
  RateLimitClient,
  RateLimitTimeoutError,
  RateLimitUnavailableError,
} from '../dist/index.js';
import { checkResponseFrame, startFakeSidecar } from './helpers/fake_sidecar.mjs';
import { startSidecar } from './helpers/sidecar.mjs';
import { waitFor } from './helpers/wait.mjs';

const FIXTURE = fileURLToPath(new URL('./fixtures/client_exits.mjs', import.meta.url));
const EXIT_TIMEOUT_MS = 10_000;

function closedError(error) {
  assert.ok(error instanceof RateLimitUnavailableError, String(error));
  assert.ok(!(error instanceof RateLimitTimeoutError));
  assert.match(error.message, /closed/);
  return true;
}

describe('close()', () => {
  test('fails the checks in flight at once, and every later call', async () => {
    const read = [];
    const fake = await startFakeSidecar(async (socket, requests) => {
      for await (const request of requests) read.push(request); // Never answered.
    });
    const client = new RateLimitClient({ socketPath: fake.socketPath, timeoutMs: 60_000 });
    try {
      const pending = [client.check('a'), client.check('b'), client.ping()];
      await waitFor(() => read.length === 3, 'the three requests at the sidecar');
      // close() rejects them at once, so their handlers must be in place before.
      const rejected = pending.map((call) => assert.rejects(call, closedError));
      await client.close();
      await Promise.all(rejected);
      await assert.rejects(client.check('c'), closedError);
      await assert.rejects(client.ping(), closedError);
      await client.close(); // Idempotent.
    } finally {
      await fake.close();
    }
  });

  test('a check made just before close() is never sent', async () => {
    const seen = [];
    const fake = await startFakeSidecar(async (socket, requests) => {
      for await (const request of requests) {
        seen.push(request.key);
        socket.write(checkResponseFrame(request.id));
      }
    });
    try {
      for (const connected of [false, true]) {
        const client = new RateLimitClient({ socketPath: fake.socketPath });
        if (connected) assert.equal((await client.check('sent')).allowed, true);
        const rejected = assert.rejects(client.check('never-sent'), closedError);
        await client.close();
        await rejected;
      }
      // Once the sidecar's side of each connection is closed, it has read all it will ever get.
      await waitFor(() => fake.connections() === 0, 'the connections closed');
      assert.deepEqual(seen, ['sent']);
    } finally {
      await fake.close();
    }
  });
});

describe('the process exits by itself', () => {
  let sidecar;
  before(async () => {
    sidecar = await startSidecar();
  });
  after(async () => {
    await sidecar?.dispose();
  });

  for (const mode of ['close', 'idle']) {
    test(`after close() with checks in flight, or with an idle connection (${mode})`, async () => {
      const child = spawn(process.execPath, [FIXTURE, sidecar.socketPath, mode], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (text) => (output += text));
      child.stderr.on('data', (text) => (output += text));
      const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_TIMEOUT_MS);
      const [code, signal] = await once(child, 'exit');
      clearTimeout(timer);
      assert.equal(signal, null, `still running after ${EXIT_TIMEOUT_MS} ms: ${output}`);
      assert.equal(code, 0, output);
      assert.match(output, /done/);
    });
  }
});
