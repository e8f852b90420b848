// The benchmark runs: a short smoke run against the real sidecar prints its figures.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { test } from 'node:test';

import { sidecarBinary } from './helpers/sidecar.mjs';

const BENCH = fileURLToPath(new URL('../bench/bench.mjs', import.meta.url));

test('bench.mjs --duration-ms 300 --runs 1 prints checks/s and latencies', async () => {
  sidecarBinary(); // Fails with the explanation when RATELIMIT_SIDECAR_BIN is not set.
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [BENCH, '--duration-ms', '300', '--runs', '1', '--warmup-ms', '0', '--concurrency', '8'],
    { timeout: 30_000 },
  );
  assert.match(
    stdout,
    /^run 1: \d+ checks\/s {2}p50 [\d.]+ ms {2}p90 [\d.]+ ms {2}p99 [\d.]+ ms {2}max [\d.]+ ms {2}\(\d+ checks, 0 errors\)$/m,
  );
  assert.match(stdout, /^median: \d+ checks\/s/m);
});
