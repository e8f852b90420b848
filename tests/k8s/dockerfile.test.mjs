// The Dockerfile, checked offline against what it must agree with: the build packages of
// scripts/install-deps.sh, the CMake options, the shared libraries the built binary links, the
// manifests' user and port, and the .dockerignore.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { aptPackages, copiesOf, dockerIgnored, envOf, instructions, parseDockerfile } from "./lib/dockerfile.mjs";
import { build } from "./lib/kustomize.mjs";
import { find, sidecarOf } from "./lib/objects.mjs";
import { k8sDir, repoRoot } from "./lib/repo.mjs";
import { schemaJob } from "./lib/schema_job.mjs";
import { acceptedVariables, neededLibraries } from "./lib/sidecar.mjs";

const stages = parseDockerfile(readFileSync(`${repoRoot}/Dockerfile`, "utf8"));
const [buildStage, runtime] = [stages[0], stages.at(-1)];
const example = find(build(`${k8sDir}/example`), "Deployment", "example-api");
const sidecar = sidecarOf(example);

// Packages of scripts/install-deps.sh used only to test (the throwaway server and the pooler in
// front of it, gtest, the benchmarks, the fuzz build, the format check). Every other one is
// needed to build.
const testOnlyPackages = new Set([
  "postgresql-15", "postgresql-client-15", "pgbouncer", "libgtest-dev", "libgmock-dev",
  "libbenchmark-dev", "clang", "libclang-rt-14-dev", "clang-format",
]);

// Library packages of Debian 12's required set, present in debian:12-slim without installing.
const basePackages = new Set([
  "libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libzstd1", "liblzma5", "libbz2-1.0",
  "libcrypt1", "libselinux1", "libpcre2-8-0", "libacl1", "libattr1", "libtinfo6", "libmd0",
  "libgmp10", "libsystemd0", "libgcrypt20", "libgpg-error0", "liblz4-1", "libudev1", "libcap2",
  "libaudit1", "libcap-ng0", "libseccomp2", "libxxhash0",
]);

function installDepsPackages() {
  const script = readFileSync(`${repoRoot}/scripts/install-deps.sh`, "utf8");
  const block = /^packages=\(\n([\s\S]*?)^\)/m.exec(script);
  assert.ok(block, "scripts/install-deps.sh has a packages=( ... ) list");
  return block[1]
    .split("\n")
    .map((line) => line.replace(/#.*/, "").trim())
    .flatMap((line) => (line === "" ? [] : line.split(/\s+/)));
}

// The Debian package that owns a library file, trying the paths dpkg may have recorded it
// under (/lib and /usr/lib are one directory on Debian 12, but dpkg knows one of them).
function owningPackage(path) {
  const real = realpathSync(path);
  const candidates = new Set();
  for (const p of [path, real]) {
    candidates.add(p);
    candidates.add(p.startsWith("/usr/") ? p.slice(4) : `/usr${p}`);
  }
  for (const candidate of candidates) {
    try {
      const out = execFileSync("dpkg", ["-S", candidate], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
      return out.split("\n")[0].split(":")[0].split(",")[0].trim();
    } catch {
      // Not recorded under this path; try the next.
    }
  }
  throw new Error(`no Debian package owns ${path}`);
}

describe("the Dockerfile", () => {
  test("builds on Debian 12 and runs on debian:12-slim", () => {
    assert.equal(stages.length, 2);
    assert.ok(["debian:12", "debian:12-slim"].includes(buildStage.image));
    assert.ok(buildStage.name, "the build stage is named");
    assert.equal(runtime.image, "debian:12-slim");
  });

  test("the build stage installs every build package of scripts/install-deps.sh", () => {
    const listed = installDepsPackages();
    assert.ok(listed.includes("libuv1-dev") && listed.includes("clang-format"), "install-deps.sh read");
    const installed = new Set(aptPackages(buildStage));
    const missing = listed.filter((p) => !testOnlyPackages.has(p) && !installed.has(p));
    assert.deepEqual(missing, [], "add them to the Dockerfile's build stage (or, if test-only, to testOnlyPackages here)");
    assert.ok(installed.has("libmicrohttpd-dev"), "the admin server's library");
    const testOnly = [...installed].filter((p) => testOnlyPackages.has(p));
    assert.deepEqual(testOnly, [], "no test-only package in the image's build");
  });

  test("it builds the two executables without the tests, with an option CMake has", () => {
    const cmake = readFileSync(`${repoRoot}/CMakeLists.txt`, "utf8");
    assert.match(cmake, /^option\(RATELIMIT_TESTS /m);
    const runs = instructions(buildStage, "RUN").join(" && ");
    assert.match(runs, /cmake -S \. -B build .*-DRATELIMIT_TESTS=OFF/);
    assert.match(runs, /cmake --build build --target ratelimit-sidecar ratelimit-cli/);
  });

  test("it copies every source directory the build adds, none that .dockerignore drops", () => {
    const cmake = readFileSync(`${repoRoot}/CMakeLists.txt`, "utf8");
    const built = [...cmake.matchAll(/^add_subdirectory\((\w+)\)/gm)].map((m) => m[1]).filter((d) => d !== "tests");
    const copied = copiesOf(buildStage).filter((c) => c.from === undefined).flatMap((c) => c.sources.map((s) => s.replace(/\/$/, "")));
    for (const dir of built) assert.ok(copied.includes(dir), `COPY ${dir}/`);
    assert.ok(copied.includes("CMakeLists.txt"));
    const ignore = readFileSync(`${repoRoot}/.dockerignore`, "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    for (const source of copied) {
      assert.ok(existsSync(`${repoRoot}/${source}`), `${source} exists`);
      assert.ok(!dockerIgnored(ignore, source), `.dockerignore drops ${source}`);
    }
    for (const dropped of [".git", "build", "build-k8s", "tests/k8s/node_modules", "client/node_modules", "client/node"]) {
      assert.ok(dockerIgnored(ignore, dropped), `.dockerignore drops ${dropped}`);
    }
  });

  test("the runtime stage installs every library the binary links that the base image lacks", () => {
    const runtimePackages = new Set(aptPackages(runtime));
    assert.ok(runtimePackages.size > 0);
    assert.deepEqual([...runtimePackages].filter((p) => p.endsWith("-dev")), [], "no -dev package at run time");
    // A sanitizer build (RATELIMIT_SANITIZE) links the sanitizers' runtimes; the image's does not.
    const sanitizerRuntime = /^lib(asan|ubsan|tsan|lsan|hwasan)\.so/;
    const needed = neededLibraries().filter((l) => !(process.env.RATELIMIT_SANITIZE && sanitizerRuntime.test(l.soname)));
    assert.ok(needed.some((l) => l.soname.startsWith("libc.so")), "NEEDED read");
    const missing = [];
    for (const { soname, path } of needed) {
      const pkg = owningPackage(path);
      if (!runtimePackages.has(pkg) && !basePackages.has(pkg)) missing.push(`${soname} (${pkg})`);
    }
    assert.deepEqual(missing, []);
    assert.ok(runtimePackages.has("libmicrohttpd12"), "the admin server's library");
  });

  test("the entrypoint is the binary the build copies, and the manifests run it as it is", () => {
    const [entrypoint] = instructions(runtime, "ENTRYPOINT");
    const argv = JSON.parse(entrypoint);
    assert.deepEqual(argv, ["/usr/local/bin/ratelimit-sidecar"]);
    const copy = copiesOf(runtime).find((c) => c.from === buildStage.name);
    assert.ok(copy.sources.includes("/src/build/bin/ratelimit-sidecar"));
    assert.equal(copy.dest, "/usr/local/bin/");
    assert.equal(sidecar.command, undefined);
    assert.equal(sidecar.args, undefined);
  });

  test("the image's user is the manifests' runAsUser and runAsGroup", () => {
    const [user] = instructions(runtime, "USER");
    assert.match(user, /^\d+:\d+$/, "numeric, so the kubelet can check runAsNonRoot");
    const [uid, gid] = user.split(":").map(Number);
    assert.ok(uid > 0 && gid > 0);
    assert.equal(sidecar.securityContext.runAsUser, uid);
    assert.equal(sidecar.securityContext.runAsGroup, gid);
    assert.equal(example.spec.template.spec.securityContext.fsGroup, gid);
    const runs = instructions(runtime, "RUN").join(" && ");
    assert.match(runs, new RegExp(`groupadd --gid ${gid} `));
    assert.match(runs, new RegExp(`useradd --uid ${uid} --gid ${gid} `));
    assert.equal(schemaJob().pod.securityContext.runAsUser, uid, "the Job runs as the same non-root uid");
  });

  test("its environment is one the binary reads, the admin port is exposed, the socket path is the default", () => {
    const env = envOf(runtime);
    const accepted = acceptedVariables();
    for (const name of env.keys()) assert.ok(accepted.has(name), name);
    assert.equal(env.get("RATE_LIMIT_ADMIN_ADDR"), "0.0.0.0:9464");
    assert.ok(!env.has("RATE_LIMIT_SOCKET"));
    assert.deepEqual(instructions(runtime, "EXPOSE"), ["9464"]);
    assert.equal(sidecar.ports.find((p) => p.name === "admin").containerPort, 9464);
  });

  test("its version label is the project's version and the manifests' image tag", () => {
    const labels = instructions(runtime, "LABEL").join(" ");
    const version = /org\.opencontainers\.image\.version="([^"]+)"/.exec(labels)?.[1];
    const cmake = readFileSync(`${repoRoot}/CMakeLists.txt`, "utf8");
    assert.equal(version, /^project\(ratelimit VERSION (\S+)/m.exec(cmake)?.[1]);
    assert.equal(sidecar.image.split(":").at(-1), version);
  });
});

describe("the Dockerfile checks themselves can fail", () => {
  test("a stage without the package is seen", () => {
    const [stage] = parseDockerfile("FROM debian:12\nRUN apt-get update \\\n && apt-get install -y --no-install-recommends \\\n    cmake \\\n    g++\n");
    assert.deepEqual(aptPackages(stage), ["cmake", "g++"]);
  });

  test(".dockerignore matching", () => {
    assert.ok(dockerIgnored(["build-*"], "build-k8s/bin"));
    assert.ok(!dockerIgnored(["build-*"], "sidecar"));
    assert.ok(dockerIgnored(["**/node_modules"], "tests/k8s/node_modules"));
    assert.ok(!dockerIgnored(["tests", "!tests/keep"], "tests/keep"));
  });

  test("a library of no package is an error", () => {
    const dir = mkdtempSync(join(tmpdir(), "rl-k8s-lib-"));
    try {
      writeFileSync(join(dir, "libnothing.so.1"), "");
      assert.throws(() => owningPackage(join(dir, "libnothing.so.1")), /no Debian package owns/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
