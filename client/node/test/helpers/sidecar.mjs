// Sidecar process fixture: the real ratelimit-sidecar in a temporary directory, always cleaned up.
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { RateLimitClient } from '../../dist/index.js';

const START_TIMEOUT_MS = 5000;
const STOP_TIMEOUT_MS = 5000;

// Whatever is still running or still on disk when the process exits (a failed assertion, an
// exception) is killed and removed here, synchronously.
const running = new Set();
const tempDirs = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});
// A signal ends the process without 'exit' handlers; turn it into an exit so they run.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => process.exit(128 + osConstants.signals[signal]));
}

// The binary named by RATELIMIT_SIDECAR_BIN. Throws, failing the test, when it is not set: the
// tests are about the real sidecar and must not pass without one.
export function sidecarBinary() {
  const bin = process.env.RATELIMIT_SIDECAR_BIN;
  if (!bin) {
    throw new Error(
      'RATELIMIT_SIDECAR_BIN is not set. Build the sidecar (from the repository root: ' +
        'cmake --build build --target ratelimit-sidecar) and run the tests with ' +
        'RATELIMIT_SIDECAR_BIN=<repository>/build/bin/ratelimit-sidecar',
    );
  }
  try {
    accessSync(bin, constants.X_OK);
  } catch {
    throw new Error(`RATELIMIT_SIDECAR_BIN=${bin} is not an executable file`);
  }
  return bin;
}

// A directory removed when the process exits, or earlier by removeTempDir.
export function makeTempDir(prefix = 'rl-node-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir) {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

// A running sidecar. `env` adds to (or overrides) the defaults below.
export class Sidecar {
  constructor({ env = {}, dir = makeTempDir() } = {}) {
    this.dir = dir;
    this.socketPath = join(dir, 'rl.sock');
    this.env = {
      PATH: process.env.PATH ?? '',
      RATE_LIMIT_SOCKET: this.socketPath,
      RATE_LIMIT_ADMIN_ADDR: '',
      RATE_LIMIT_LOG_LEVEL: 'warn',
      RATE_LIMIT_MAX_REQUESTS: '100',
      RATE_LIMIT_WINDOW_MS: '60000',
      ...env,
    };
    this.child = null;
    this.stderr = '';
  }

  // Starts the process and waits until it answers a ping on its socket.
  async start() {
    const child = spawn(sidecarBinary(), [], {
      env: this.env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    this.stderr = '';
    running.add(child);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text) => (this.stderr += text));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.once('exit', () => running.delete(child));
    this.exited = exited;

    const deadline = Date.now() + START_TIMEOUT_MS;
    const client = new RateLimitClient({ socketPath: this.socketPath, timeoutMs: 200 });
    try {
      while (true) {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(
            `ratelimit-sidecar exited at start-up (${child.exitCode}): ${this.stderr}`,
          );
        }
        try {
          await client.ping();
          return;
        } catch (error) {
          if (Date.now() > deadline) {
            throw new Error(
              `ratelimit-sidecar did not answer within ${START_TIMEOUT_MS} ms: ${error}`,
            );
          }
        }
        await sleep(10);
      }
    } finally {
      await client.close();
    }
  }

  // SIGTERM, then SIGKILL if it has not exited in time. Resolves with the exit code.
  async stop() {
    const child = this.child;
    if (child === null) return null;
    this.child = null;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT'); // A frozen sidecar cannot act on SIGTERM.
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await this.exited;
      clearTimeout(timer);
    }
    return child.exitCode;
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  freeze() {
    this.child.kill('SIGSTOP');
  }

  thaw() {
    this.child.kill('SIGCONT');
  }

  // Stops the process and removes its directory.
  async dispose() {
    await this.stop();
    removeTempDir(this.dir);
  }
}

export async function startSidecar(options) {
  const sidecar = new Sidecar(options);
  await sidecar.start();
  return sidecar;
}
