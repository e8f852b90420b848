// The package as users get it: `npm pack` of the built package, installed offline into an empty
// project by a PATH holding only `node` (no flatc, no TypeScript, no compiler, an empty npm
// cache, an unreachable registry), then a CommonJS script and an ES module script that check
// against the real sidecar, and a TypeScript consumer type-checked against the installed
// declarations. The pack skips the prepack script (npm run build, which the test command runs
// before the suites): rebuilding dist/ here would pull it from under the suites running beside
// this one.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { makeTempDir, startSidecar } from './helpers/sidecar.mjs';

const run = promisify(execFile);
const packageDir = join(dirname(fileURLToPath(import.meta.url)), '..');
const STEP_TIMEOUT_MS = 60_000;

// npm's own script, run by `node`, so that no PATH lookup is needed for it.
function npmCli() {
  return join(dirname(realpathSync(join(dirname(process.execPath), 'npm'))), 'npm-cli.js');
}

const CJS_SCRIPT = `
const assert = require('node:assert/strict');
const pkg = require('ratelimit-sidecar-client');
const { RateLimitClient, RateLimitError, createRateLimiter, createRateLimiterStore } = pkg;
(async () => {
  const client = new RateLimitClient({ socketPath: process.env.SOCKET });
  const store = createRateLimiterStore({ client, keyPrefix: 'cjs:' });
  const limiter = createRateLimiter({ client, maxRequests: 1, windowMs: 60000, keyPrefix: 'cjs-l:' });
  const results = [
    await store.check('k', { maxRequests: 2, windowMs: 60000 }),
    await store.check('k', { maxRequests: 2, windowMs: 60000 }),
    await store.check('k', { maxRequests: 2, windowMs: 60000 }),
    await limiter.check('k'),
    await limiter.check('k'),
  ];
  const ping = await client.ping();
  await client.close();
  const err = await client.check('k').catch((e) => e);
  assert.ok(err instanceof RateLimitError);
  console.log(JSON.stringify({ results, ping, main: require.resolve('ratelimit-sidecar-client') }));
})();
`;

const ESM_SCRIPT = `
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as esm from 'ratelimit-sidecar-client';
import { RateLimitClient, RateLimitUnavailableError, createRateLimiterStore } from 'ratelimit-sidecar-client';
const cjs = createRequire(import.meta.url)('ratelimit-sidecar-client');
// One copy of the code behind both: the same classes and functions.
assert.deepEqual(Object.keys(esm).sort(), Object.keys(cjs).sort());
for (const name of Object.keys(cjs)) assert.equal(esm[name], cjs[name], name);
const client = new RateLimitClient({ socketPath: process.env.SOCKET });
const store = createRateLimiterStore({ client, keyPrefix: 'esm:' });
const results = [];
for (let i = 0; i < 3; i++) results.push(await store.check('k', { maxRequests: 2, windowMs: 60000 }));
await client.close();
const nowhere = new RateLimitClient({ socketPath: process.env.SOCKET + '.none' });
const err = await nowhere.check('k').catch((e) => e);
assert.ok(err instanceof cjs.RateLimitUnavailableError && err instanceof RateLimitUnavailableError);
const denied = await createRateLimiterStore({ client: nowhere, onUnavailable: 'deny' })
  .check('k', { maxRequests: 2, windowMs: 60000 });
console.log(JSON.stringify({ results, denied, url: import.meta.resolve('ratelimit-sidecar-client') }));
`;

// A consumer of the types, in both module systems: the store's and the client's types, used as
// the gateway's code would, and uses the types must refuse (each @ts-expect-error fails the
// check if the declarations let it through, say because they are missing and everything is any).
const CONSUMER_COMMON = `
const client = new RateLimitClient({ socketPath: '/tmp/x.sock', onUnavailable: 'deny' });
const store: RateLimiterStore = createRateLimiterStore({ client, keyPrefix: 'p:' });
const limiter: RateLimiter = createRateLimiter({ client, maxRequests: 3, windowMs: 60_000 });
async function use(): Promise<number> {
  const r: RateLimiterStoreResult = await store.check('k', { maxRequests: 3, windowMs: 60_000, now: Date.now() });
  const s: { allowed: boolean; retryAfterMs?: number } = await limiter.check('k');
  const c: CheckResult = await client.check('k', { limit: 3, windowMs: 60_000, onUnavailable: 'allow' });
  const source: DecisionSource = c.source;
  // A stand-in with the client's check fits the store's client.
  const standIn = { check: async (key: string, o?: CheckOptions): Promise<CheckResult> => c };
  createRateLimiterStore({ client: standIn });
  // @ts-expect-error: a denial carries retryAfterMs.
  const bad: RateLimiterStoreResult = { allowed: false };
  // @ts-expect-error: the policy names maxRequests, not limit.
  await store.check('k', { limit: 3, windowMs: 60_000 });
  // @ts-expect-error: onUnavailable is 'allow', 'deny' or 'throw'.
  createRateLimiterStore({ client, onUnavailable: 'open' });
  // The gateway's own interfaces, declared as it declares them: ours fit them.
  interface RateLimitResult { allowed: boolean; retryAfterMs?: number }
  interface GatewayStoreOptions { maxRequests: number; now: number; windowMs: number }
  interface GatewayStore { check(bucketKey: string, options: GatewayStoreOptions): Promise<RateLimitResult> }
  interface GatewayLimiter { check(apiKey: string): Promise<RateLimitResult> }
  const gatewayStore: GatewayStore = store;
  const gatewayLimiter: GatewayLimiter = limiter;
  void [gatewayStore, gatewayLimiter];
  const o: OnUnavailable = 'throw';
  void [s, source, bad, o];
  return r.allowed ? 0 : r.retryAfterMs;
}
void use;
`;
const CONSUMER_IMPORTS =
  'RateLimitClient, createRateLimiter, createRateLimiterStore, type CheckOptions, type CheckResult, ' +
  'type DecisionSource, type OnUnavailable, type RateLimiter, type RateLimiterStore, ' +
  'type RateLimiterStoreResult';

describe('the packed package, installed offline into an empty project', () => {
  let sidecar;
  let app;
  let tarball;
  const env = {};

  before(async () => {
    sidecar = await startSidecar({ env: { RATE_LIMIT_ALGORITHM: 'fixed_window' } });
    const dir = makeTempDir('rl-pack-');
    const { stdout } = await run(
      process.execPath,
      [npmCli(), 'pack', '--ignore-scripts', '--json', '--pack-destination', dir],
      { cwd: packageDir, timeout: STEP_TIMEOUT_MS },
    );
    const [packed] = JSON.parse(stdout.slice(stdout.indexOf('[')));
    tarball = { path: join(dir, packed.filename), files: packed.files.map((f) => f.path) };

    // The empty project, and a PATH with node and nothing else.
    app = join(dir, 'app');
    const bin = join(dir, 'bin');
    mkdirSync(app);
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    writeFileSync(
      join(app, 'package.json'),
      '{ "name": "app", "version": "1.0.0", "private": true }\n',
    );
    Object.assign(env, {
      PATH: bin,
      HOME: dir,
      npm_config_cache: join(dir, 'empty-npm-cache'),
      npm_config_registry: 'http://127.0.0.1:9/', // Nothing listens there.
      npm_config_update_notifier: 'false',
    });
    await run(
      process.execPath,
      [npmCli(), 'install', '--offline', '--no-audit', '--no-fund', tarball.path],
      { cwd: app, env, timeout: STEP_TIMEOUT_MS },
    );
  });
  after(async () => {
    await sidecar?.dispose();
  });

  test('the tarball carries the built code, the ES module entry, the types and the flatbuffers runtime, not the sources', () => {
    const files = tarball.files;
    for (const file of [
      'package.json',
      'README.md',
      'dist/index.js',
      'dist/index.d.ts',
      'dist/index.mjs',
      'dist/index.d.mts',
      'dist/gateway_store.js',
      'dist/gateway_store.d.ts',
      'dist/generated/ratelimit/wire/frame.js',
    ]) {
      assert.ok(files.includes(file), `${file} is in the tarball`);
    }
    assert.ok(
      files.some((f) => f.startsWith('node_modules/flatbuffers/')),
      'flatbuffers bundled',
    );
    assert.deepEqual(
      files.filter((f) => /^(src|test|scripts|bench)\//.test(f)),
      [],
      'no sources or tests',
    );
  });

  test('a CommonJS script requires it and checks against the sidecar', async () => {
    writeFileSync(join(app, 'check.cjs'), CJS_SCRIPT);
    const { stdout } = await run('node', ['check.cjs'], {
      cwd: app,
      env: { ...env, SOCKET: sidecar.socketPath },
      timeout: STEP_TIMEOUT_MS,
    });
    const out = JSON.parse(stdout);
    assert.equal(
      out.main,
      join(realpathSync(app), 'node_modules/ratelimit-sidecar-client/dist/index.js'),
    );
    assert.deepStrictEqual(out.results.slice(0, 2), [{ allowed: true }, { allowed: true }]);
    assert.deepStrictEqual(Object.keys(out.results[2]), ['allowed', 'retryAfterMs']);
    assert.equal(out.results[2].allowed, false);
    assert.deepStrictEqual(out.results[3], { allowed: true });
    assert.equal(out.results[4].allowed, false);
    assert.deepStrictEqual(out.ping, { protocolVersion: 1, store: 'memory', ready: true });
  });

  test('an ES module script imports it (the same classes as require) and checks against the sidecar', async () => {
    writeFileSync(join(app, 'check.mjs'), ESM_SCRIPT);
    const { stdout } = await run('node', ['check.mjs'], {
      cwd: app,
      env: { ...env, SOCKET: sidecar.socketPath },
      timeout: STEP_TIMEOUT_MS,
    });
    const out = JSON.parse(stdout);
    assert.match(out.url, /\/node_modules\/ratelimit-sidecar-client\/dist\/index\.mjs$/);
    assert.deepStrictEqual(out.results.slice(0, 2), [{ allowed: true }, { allowed: true }]);
    assert.equal(out.results[2].allowed, false);
    assert.deepStrictEqual(out.denied, { allowed: false, retryAfterMs: 1000 });
  });

  test('tsc --noEmit type-checks a TypeScript consumer, ES module and CommonJS, against the installed types', async () => {
    writeFileSync(
      join(app, 'consumer.mts'),
      `import { ${CONSUMER_IMPORTS} } from 'ratelimit-sidecar-client';\n${CONSUMER_COMMON}`,
    );
    writeFileSync(
      join(app, 'consumer.cts'),
      `import { ${CONSUMER_IMPORTS} } from 'ratelimit-sidecar-client';\n${CONSUMER_COMMON}` +
        `const required: typeof import('ratelimit-sidecar-client') = require('ratelimit-sidecar-client');\n` +
        `void required;\n`,
    );
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          strict: true,
          noEmit: true,
          // As most applications have it: declaration files are used, not checked themselves
          // (ours come from the strict build; checking @types/node too would triple the time).
          skipLibCheck: true,
          // The consumer's own @types/node; here the repository's copy.
          typeRoots: [join(packageDir, 'node_modules', '@types')],
          types: ['node'],
        },
        files: ['consumer.mts', 'consumer.cts'],
      }),
    );
    const tsc = join(packageDir, 'node_modules', 'typescript', 'bin', 'tsc');
    const result = await run('node', [tsc, '-p', 'tsconfig.json'], {
      cwd: app,
      env,
      timeout: STEP_TIMEOUT_MS,
    }).catch((error) => error);
    assert.equal(result.code ?? 0, 0, `tsc failed:\n${result.stdout}${result.stderr}`);
  });
});
