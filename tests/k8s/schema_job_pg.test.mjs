// The schema Job for real: its psql command, with its environment and the SQL from its
// ConfigMap, run against a private PostgreSQL 15 (scripts/with-postgres.sh), as the Job would
// in the cluster; and a sidecar configured by the manifests (RATE_LIMIT_PG_CREATE_TABLE=false),
// which is not ready before the Job ran and becomes ready, deciding by the database, after.
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { schemaJob, sidecarConfig } from "./lib/schema_job.mjs";
import { startSidecar } from "./lib/sidecar.mjs";

const run = promisify(execFile);
const pgBin = process.env.RATELIMIT_TEST_PG_BIN;
const skip = process.env.RATELIMIT_TEST_DATABASE_URL
  ? false
  : "needs a PostgreSQL server: run it under scripts/with-postgres.sh (ctest does)";

describe("the schema Job on PostgreSQL 15", { skip, timeout: 60_000 }, () => {
  const { container, env: jobEnv, mounts } = skip ? {} : schemaJob();
  const config = skip ? {} : sidecarConfig();
  const dir = skip ? "" : mkdtempSync(join(tmpdir(), "rl-k8s-job-"));
  const server = { host: process.env.PGHOST, port: process.env.PGPORT };
  const path = `${pgBin}:${process.env.PATH}`;
  const database = jobEnv?.get("PGDATABASE");
  const owner = jobEnv?.get("PGUSER");
  const sidecarRole = jobEnv?.get("SIDECAR_DB_ROLE");
  let sidecar;

  // SQL as the server's superuser, in `db`; returns psql's unaligned output.
  const superuser = (sql, db = database) =>
    execFileSync(join(pgBin, "psql"), ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql], {
      encoding: "utf8",
      timeout: 20_000,
      env: {
        PATH: path, PGHOST: server.host, PGPORT: server.port, PGUSER: process.env.PGUSER,
        PGOPTIONS: "-c client_min_messages=warning",
      },
    });

  // The Job's container: its command and environment, the server's address in place of the
  // manifest's, the ConfigMap's files where the volume would be.
  const runJob = () => {
    const sqlDir = join(dir, "schema");
    rmSync(sqlDir, { recursive: true, force: true });
    execFileSync("mkdir", ["-p", sqlDir]);
    const { mount, configMap } = mounts.find((m) => m.configMap !== undefined);
    for (const [file, text] of Object.entries(configMap.data)) writeFileSync(join(sqlDir, file), text);
    const env = { PATH: path };
    for (const [name, value] of jobEnv) env[name] = typeof value === "string" ? value : "unused-with-trust-auth";
    env.PGHOST = server.host;
    env.PGPORT = server.port;
    const args = container.command.slice(1).map((arg) => arg.replace(mount.mountPath, sqlDir));
    return run(join(pgBin, "psql"), args, { env, timeout: 20_000 });
  };

  const ping = async () => {
    const cli = process.env.RATELIMIT_CLI_BIN;
    const socket = join(dir, "ratelimit.sock");
    const { stdout } = await run(cli, ["--socket", socket, "--timeout-ms", "2000", "ping"], { timeout: 10_000 });
    return stdout;
  };

  before(async () => {
    assert.ok(process.env.RATELIMIT_CLI_BIN, "RATELIMIT_CLI_BIN is set (ctest sets it)");
    // What the operator does once: the database, the Job's role (allowed to create tables) and
    // the sidecars' role (allowed nothing yet).
    superuser(`CREATE DATABASE ${database}`, "postgres");
    superuser(`CREATE ROLE ${owner} LOGIN; CREATE ROLE ${sidecarRole} LOGIN;`);
    superuser(`GRANT CREATE ON SCHEMA public TO ${owner}`);

    const env = { ...config, PGPASSWORD: "unused-with-trust-auth" };
    env.RATE_LIMIT_SOCKET = join(dir, "ratelimit.sock");
    env.RATE_LIMIT_ADMIN_ADDR = "";
    env.DATABASE_URL = `${config.DATABASE_URL}${config.DATABASE_URL.includes("?") ? "&" : "?"}` +
      `host=${encodeURIComponent(server.host)}&port=${server.port}`;
    sidecar = startSidecar(env);
    await sidecar.listening;
  });

  after(async () => {
    if (sidecar) {
      const { code } = await sidecar.stop();
      assert.equal(code, 0, sidecar.lines.join("\n"));
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("before the Job, a sidecar that may not create the table is not ready", async () => {
    assert.match(await ping(), /ready=false/);
  });

  test("the Job succeeds and creates the table of schema/postgres.sql, owned by its role", async () => {
    await runJob();
    const table = config.RATE_LIMIT_PG_TABLE ?? "rate_limit_buckets";
    assert.equal(superuser(`SELECT tableowner FROM pg_tables WHERE tablename = '${table}'`).trim(), owner);
    const columns = superuser(
      `SELECT column_name || ' ' || data_type FROM information_schema.columns WHERE table_name = '${table}' ORDER BY ordinal_position`,
    ).trim().split("\n");
    assert.deepEqual(columns, [
      "key bytea", "tokens double precision", "updated_at timestamp with time zone", "capacity bigint", "window_ms bigint",
      "algorithm smallint",
    ]);
    const privileges = superuser(
      `SELECT string_agg(privilege_type, ',' ORDER BY privilege_type) FROM information_schema.role_table_grants WHERE grantee = '${sidecarRole}' AND table_name = '${table}'`,
    ).trim();
    assert.equal(privileges, "DELETE,INSERT,SELECT,UPDATE");
  });

  test("then the sidecar becomes ready and decides checks by the database", async () => {
    let answer = "";
    for (let i = 0; i < 100 && !/ready=true/.test(answer); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      answer = await ping();
    }
    assert.match(answer, /ready=true/, sidecar.lines.join("\n"));
    const { stdout } = await run(process.env.RATELIMIT_CLI_BIN, ["--socket", join(dir, "ratelimit.sock"), "check", "k8s-schema-job"], { timeout: 10_000 });
    assert.match(stdout, /^allowed .*source=(lease|database)$/m);
  });

  test("running the Job again changes nothing and succeeds", async () => {
    const snapshot = () =>
      superuser("SELECT relname, relowner::regrole, relacl FROM pg_class WHERE relname LIKE 'rate_limit%' ORDER BY relname");
    const before = snapshot();
    assert.notEqual(before.trim(), "");
    await runJob();
    assert.equal(snapshot(), before);
  });

  test("a failing statement fails the Job", async () => {
    superuser(`DROP ROLE IF EXISTS missing_role`);
    const saved = jobEnv.get("SIDECAR_DB_ROLE");
    jobEnv.set("SIDECAR_DB_ROLE", "missing_role");
    try {
      await assert.rejects(runJob(), /role "missing_role" does not exist/);
    } finally {
      jobEnv.set("SIDECAR_DB_ROLE", saved);
    }
  });
});
