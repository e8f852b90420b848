// Benchmark: checks/s and latency of RateLimitClient under N concurrent callers, over several runs.
//
//   npm run bench -- [--socket PATH] [--concurrency 64] [--duration-ms 3000] [--count N]
//                    [--runs 3] [--warmup-ms 500] [--connections 1] [--keys 1000]
//
// Without --socket it starts the sidecar named by RATELIMIT_SIDECAR_BIN (memory store) in a
// temporary directory and stops it at the end. Each run lasts --duration-ms, or until --count
// checks, whichever comes first; so every run is bounded. Prints one line per run and the median
// of each figure over the runs. Exits 1 if any check failed.
import { parseArgs } from 'node:util';

import { RateLimitClient } from '../dist/index.js';
import { startSidecar } from '../test/helpers/sidecar.mjs';

const { values: flags } = parseArgs({
  options: {
    socket: { type: 'string' },
    concurrency: { type: 'string', default: '64' },
    'duration-ms': { type: 'string', default: '3000' },
    count: { type: 'string' },
    runs: { type: 'string', default: '3' },
    'warmup-ms': { type: 'string', default: '500' },
    connections: { type: 'string', default: '1' },
    keys: { type: 'string', default: '1000' },
  },
});

function integerFlag(name, min, fallback) {
  const text = flags[name];
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`--${name} must be an integer of at least ${min}, got ${text}`);
  }
  return value;
}

const concurrency = integerFlag('concurrency', 1);
const durationMs = integerFlag('duration-ms', 1);
const count = integerFlag('count', 1, Infinity);
const runs = integerFlag('runs', 1);
const warmupMs = integerFlag('warmup-ms', 0);
const connections = integerFlag('connections', 1);
const keys = integerFlag('keys', 1);
// So large that every check is allowed: the figures are those of the round trip, not of denials.
const POLICY = { limit: 1_000_000_000, windowMs: 1000 };

// Runs `concurrency` callers, each checking one key after another, until `ms` passed or `max`
// checks started. Latencies in milliseconds.
async function run(client, ms, max) {
  const latencies = [];
  let started = 0;
  let errors = 0;
  let firstError = null;
  const begin = performance.now();
  const end = begin + ms;
  async function caller(index) {
    let key = index;
    while (started < max && performance.now() < end) {
      started += 1;
      key = (key + concurrency) % keys;
      const t0 = performance.now();
      try {
        await client.check(`bench-${key}`, POLICY);
        latencies.push(performance.now() - t0);
      } catch (error) {
        errors += 1;
        firstError ??= error;
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, (_, i) => caller(i)));
  const seconds = (performance.now() - begin) / 1000;
  const sorted = Float64Array.from(latencies).sort();
  const at = (q) =>
    sorted.length === 0
      ? NaN
      : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  return {
    checks: latencies.length,
    errors,
    firstError,
    perSecond: latencies.length / seconds,
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    max: sorted.length === 0 ? NaN : sorted[sorted.length - 1],
  };
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

const ms = (value) => `${value.toFixed(3)} ms`;
function describeRun(r) {
  const latency = `p50 ${ms(r.p50)}  p90 ${ms(r.p90)}  p99 ${ms(r.p99)}  max ${ms(r.max)}`;
  return `${Math.round(r.perSecond)} checks/s  ${latency}`;
}

const sidecar = flags.socket === undefined ? await startSidecar() : null;
const socketPath = flags.socket ?? sidecar.socketPath;
const client = new RateLimitClient({ socketPath, connections, timeoutMs: 5000 });
let failed = false;
try {
  const { store } = await client.ping();
  console.log(
    `sidecar: ${sidecar ? 'started by the benchmark' : socketPath} (${store} store), ` +
      `node ${process.version}`,
  );
  console.log(
    `concurrency ${concurrency}, ${connections} connection(s), ${keys} keys, ` +
      `${runs} run(s) of ${durationMs} ms${Number.isFinite(count) ? ` or ${count} checks` : ''}`,
  );
  if (warmupMs > 0) await run(client, warmupMs, Infinity); // JIT and connection warm-up.
  const results = [];
  for (let i = 1; i <= runs; i++) {
    const r = await run(client, durationMs, count);
    results.push(r);
    console.log(`run ${i}: ${describeRun(r)}  (${r.checks} checks, ${r.errors} errors)`);
    if (r.errors > 0) {
      failed = true;
      console.log(`  first error: ${r.firstError}`);
    }
  }
  const pick = (field) => median(results.map((r) => r[field]));
  const medians = Object.fromEntries(
    ['perSecond', 'p50', 'p90', 'p99', 'max'].map((field) => [field, pick(field)]),
  );
  console.log(`median: ${describeRun(medians)}`);
} finally {
  await client.close();
  await sidecar?.dispose();
}
process.exitCode = failed ? 1 : 0;
