// The schema Job, offline: it applies an exact copy of schema/postgres.sql, to the database the
// sidecars use, as another role than theirs, and grants theirs what checks need.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { posix } from "node:path";
import { describe, test } from "node:test";
import { restrictedViolations } from "./lib/pod_security.mjs";
import { k8sDir, repoRoot } from "./lib/repo.mjs";
import { schemaJob, sidecarConfig } from "./lib/schema_job.mjs";
import { acceptedVariables, libpqVariables } from "./lib/sidecar.mjs";

const { job, pod, container, env, mounts } = schemaJob();
const config = sidecarConfig();
const defaults = acceptedVariables();
const setting = (name) => config[name] ?? defaults.get(name);

function sqlMount() {
  const found = mounts.filter((m) => m.configMap !== undefined);
  assert.equal(found.length, 1, "one ConfigMap of SQL is mounted");
  return found[0];
}

describe("the schema Job", () => {
  test("k8s/schema/postgres.sql is byte-identical to schema/postgres.sql", () => {
    const original = readFileSync(`${repoRoot}/schema/postgres.sql`);
    const copy = readFileSync(`${k8sDir}/schema/postgres.sql`);
    assert.ok(copy.equals(original), "copy schema/postgres.sql to k8s/schema/postgres.sql again");
  });

  test("the mounted ConfigMap holds that SQL unchanged, and apply.sql includes it", () => {
    const { configMap } = sqlMount();
    assert.equal(configMap.data["postgres.sql"], readFileSync(`${repoRoot}/schema/postgres.sql`, "utf8"));
    const apply = configMap.data["apply.sql"];
    assert.match(apply, /^\\set ON_ERROR_STOP on$/m);
    assert.match(apply, /^\\ir postgres\.sql$/m);
    assert.match(apply, /^BEGIN;$[\s\S]*^\\ir postgres\.sql$[\s\S]*^COMMIT;$/m, "one transaction");
  });

  test("psql 15 runs apply.sql from the mount", () => {
    assert.match(container.image, /^postgres:15(\.\d+)?(-[a-z0-9]+)?$/);
    const { mount } = sqlMount();
    assert.equal(mount.readOnly, true);
    assert.equal(container.command[0], "psql");
    assert.ok(container.command.includes("--no-psqlrc"));
    assert.ok(container.command.includes(`--file=${posix.join(mount.mountPath, "apply.sql")}`));
    assert.equal(container.args, undefined);
  });

  test("it sets only libpq's variables and the ones apply.sql reads", () => {
    const apply = sqlMount().configMap.data["apply.sql"];
    const read = [...apply.matchAll(/^\\getenv \w+ (\w+)$/gm)].map((m) => m[1]);
    assert.deepEqual(read, ["SIDECAR_DB_ROLE"]);
    for (const name of env.keys()) assert.ok(libpqVariables.has(name) || read.includes(name), name);
    for (const name of read) assert.equal(typeof env.get(name), "string", `${name} is set`);
  });

  test("it connects to the sidecars' database, as another role, with a password from a Secret", () => {
    const url = new URL(setting("DATABASE_URL"));
    assert.equal(env.get("PGHOST"), url.hostname);
    assert.equal(env.get("PGPORT"), url.port || "5432");
    assert.equal(env.get("PGDATABASE"), url.pathname.slice(1));
    assert.equal(env.get("SIDECAR_DB_ROLE"), decodeURIComponent(url.username), "the role granted is the sidecars'");
    assert.notEqual(env.get("PGUSER"), env.get("SIDECAR_DB_ROLE"), "the sidecars' role needs no CREATE");
    assert.deepEqual(env.get("PGPASSWORD"), { from: { secretKeyRef: { name: "ratelimit-schema-db", key: "password" } } });
  });

  test("it creates the sidecars' table under the lock their own creation takes, for sidecars that do not create it", () => {
    assert.equal(setting("RATE_LIMIT_PG_CREATE_TABLE"), "false");
    const table = setting("RATE_LIMIT_PG_TABLE");
    const sql = readFileSync(`${repoRoot}/schema/postgres.sql`, "utf8");
    assert.match(sql, new RegExp(`CREATE TABLE IF NOT EXISTS ${table} \\(`));
    const apply = sqlMount().configMap.data["apply.sql"];
    assert.ok(apply.includes(`SELECT pg_advisory_xact_lock(hashtext('ratelimit:${table}'));`));
    assert.match(apply, new RegExp(`^GRANT SELECT, INSERT, UPDATE, DELETE ON ${table} TO :"sidecar_role";$`, "m"));
  });

  test("its pod meets Pod Security restricted and is bounded in time", () => {
    assert.deepEqual(restrictedViolations(pod), []);
    assert.equal(container.securityContext.readOnlyRootFilesystem, true);
    assert.ok(["OnFailure", "Never"].includes(pod.restartPolicy));
    assert.ok(job.spec.backoffLimit >= 1);
    assert.ok(job.spec.activeDeadlineSeconds > 0);
    assert.ok(container.resources.requests && container.resources.limits);
  });
});
