// The sidecar's configuration in the manifests is one the built binary accepts: every variable
// name is one it reads (its --help, or libpq's PG* variables), and the real binary starts with
// the ConfigMap's values, serves the probes' paths, and stops cleanly on SIGTERM.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { applyComponent, build } from "./lib/kustomize.mjs";
import { componentDir, containerEnv, find, sidecarOf } from "./lib/objects.mjs";
import { k8sDir } from "./lib/repo.mjs";
import { acceptedVariables, neededLibraries, startSidecar, unacceptedNames } from "./lib/sidecar.mjs";

const accepted = acceptedVariables();
const exampleObjects = build(`${k8sDir}/example`);
const example = find(exampleObjects, "Deployment", "example-api");
const sidecar = sidecarOf(example);
const sidecarEnv = containerEnv(sidecar, exampleObjects);
const componentConfig = find(applyComponent(componentDir, []), "ConfigMap", "ratelimit-sidecar-config");

describe("variable names", () => {
  test("--help lists the variables the manifests rely on", () => {
    for (const name of ["RATE_LIMIT_SOCKET", "RATE_LIMIT_ADMIN_ADDR", "RATE_LIMIT_SHUTDOWN_GRACE_MS", "DATABASE_URL"]) {
      assert.ok(accepted.has(name), name);
    }
    assert.equal(accepted.get("RATE_LIMIT_SOCKET"), "/var/run/ratelimit/ratelimit.sock");
  });

  test("every variable the sidecar container gets is one the binary reads", () => {
    assert.ok(sidecarEnv.size > 5);
    assert.deepEqual(unacceptedNames(sidecarEnv.keys(), accepted), []);
  });

  test("every key of the component's ConfigMap is one the binary reads", () => {
    assert.deepEqual(unacceptedNames(Object.keys(componentConfig.data), accepted), []);
  });

  test("a misspelled or foreign name is caught", () => {
    assert.deepEqual(unacceptedNames(["RATE_LIMIT_MAX_REQUEST", "PGPASSWORD", "PG_PASSWORD", "RATE_LIMIT_STORE"], accepted),
      ["RATE_LIMIT_MAX_REQUEST", "PG_PASSWORD"]);
  });

  test("the ConfigMap holds no password, and k8s/README.md says how to create the Secrets", () => {
    assert.ok(!("PGPASSWORD" in componentConfig.data));
    const readme = readFileSync(join(k8sDir, "README.md"), "utf8");
    for (const variable of sidecar.env.filter((v) => v.valueFrom?.secretKeyRef)) {
      const { name, key } = variable.valueFrom.secretKeyRef;
      assert.match(readme, new RegExp(`kubectl create secret generic ${name} --from-literal=${key}=`));
    }
  });
});

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function httpGet(port, path) {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, timeout: 2000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode, type: res.headers["content-type"] ?? "", body }));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

// Appends query parameters to a URI or keywords to a keyword/value conninfo: later ones win.
function overrideConninfo(conninfo, params) {
  if (/^postgres(ql)?:\/\//.test(conninfo)) {
    const query = Object.entries(params).map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&");
    return `${conninfo}${conninfo.includes("?") ? "&" : "?"}${query}`;
  }
  return `${conninfo} ${Object.entries(params).map(([k, v]) => `${k}=${v}`).join(" ")}`;
}

describe("the binary with the manifests' configuration", () => {
  const dir = mkdtempSync(join(tmpdir(), "rl-k8s-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("starts, serves the probes' paths and stops with exit 0 on SIGTERM", { timeout: 30_000 }, async (t) => {
    const adminPort = await freePort();
    // The sidecar's environment, except what would reach outside this machine: the socket goes
    // to a temporary directory, the admin server to loopback, and the database to 127.0.0.1:1,
    // where nothing listens (so the store is down and the fallback answers).
    const env = {};
    for (const [name, value] of sidecarEnv) env[name] = typeof value === "string" ? value : "not-a-real-password";
    env.RATE_LIMIT_SOCKET = join(dir, "ratelimit.sock");
    env.RATE_LIMIT_ADMIN_ADDR = `127.0.0.1:${adminPort}`;
    if (env.DATABASE_URL) env.DATABASE_URL = overrideConninfo(env.DATABASE_URL, { hostaddr: "127.0.0.1", port: "1" });

    const sidecarProcess = startSidecar(env);
    let stopped = false;
    t.after(async () => {
      if (!stopped) await sidecarProcess.stop();
    });
    await sidecarProcess.listening;
    const listening = JSON.parse(sidecarProcess.lines.find((l) => l.includes('"msg":"listening"')));
    assert.equal(listening.store, env.RATE_LIMIT_STORE ?? accepted.get("RATE_LIMIT_STORE"));
    if (listening.store === "postgres") assert.equal(listening.mode, env.RATE_LIMIT_MODE ?? accepted.get("RATE_LIMIT_MODE"));
    const complaints = sidecarProcess.lines.filter((l) => /"level":"error"|ignoring unknown variable/.test(l));
    assert.deepEqual(complaints, []);
    for (const line of sidecarProcess.lines.filter((l) => l.includes("database connection failed"))) {
      assert.match(line, /127\.0\.0\.1.*port 1/, "the database is only ever tried on loopback");
    }

    // The admin server: present once the binary has one (it links libmicrohttpd).
    const hasAdmin = neededLibraries().some((lib) => lib.soname.startsWith("libmicrohttpd"));
    let reachable = true;
    try {
      await httpGet(adminPort, "/healthz");
    } catch (error) {
      if (hasAdmin || error.code !== "ECONNREFUSED") throw error;
      reachable = false;
    }
    if (reachable) {
      for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        // Readiness may take a moment while the store reports it cannot reach the database and
        // the fallback takes over; it must then answer 200 (RATE_LIMIT_FALLBACK allows serving).
        const path = sidecar[probe].httpGet.path;
        let response;
        for (let i = 0; i < 50; i++) {
          response = await httpGet(adminPort, path);
          if (response.status === 200) break;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        assert.equal(response.status, 200, `${probe} ${path}: ${response.body}`);
      }
      const metrics = await httpGet(adminPort, "/metrics");
      assert.equal(metrics.status, 200);
      assert.match(metrics.type, /^text\/plain/);
      assert.match(metrics.body, /^# (HELP|TYPE) /m);
    } else {
      t.diagnostic("this build has no admin server yet (nothing on RATE_LIMIT_ADMIN_ADDR, no libmicrohttpd): probe paths not checked");
    }

    const { code, signal } = await sidecarProcess.stop();
    stopped = true;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, sidecarProcess.lines.join("\n"));
    assert.ok(sidecarProcess.lines.some((l) => l.includes('"msg":"stopped"')));
  });

  test("a value the binary refuses is caught", { timeout: 15_000 }, async () => {
    const env = { RATE_LIMIT_SOCKET: join(dir, "refused.sock"), RATE_LIMIT_WINDOW_MS: "a minute" };
    const refused = startSidecar(env);
    await assert.rejects(refused.listening, /exited \(code 2,.*RATE_LIMIT_WINDOW_MS/s);
  });
});
