// The built ratelimit-sidecar: the variables it accepts (from --help), starting it with a given
// environment, and the shared libraries it links.
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./repo.mjs";

export function sidecarBinary() {
  const path = process.env.RATELIMIT_SIDECAR_BIN;
  if (path === undefined || path === "") {
    throw new Error(
      "RATELIMIT_SIDECAR_BIN is not set: run these tests through ctest, or set it to a built " +
        `ratelimit-sidecar (for example ${join(repoRoot, "build", "bin", "ratelimit-sidecar")})`,
    );
  }
  if (!existsSync(path)) throw new Error(`RATELIMIT_SIDECAR_BIN=${path} does not exist: build it first`);
  return path;
}

// `ratelimit-sidecar --help` prints one line per variable: `  NAME  default VALUE  meaning`.
export function acceptedVariables() {
  const help = execFileSync(sidecarBinary(), ["--help"], { encoding: "utf8", timeout: 10_000, env: {} });
  const variables = new Map();
  for (const line of help.split("\n")) {
    const m = /^ {2}([A-Z][A-Z0-9_]*) +default (\S+)/.exec(line);
    if (m !== null) variables.set(m[1], m[2] === "(empty)" ? "" : m[2]);
  }
  if (variables.size === 0) throw new Error(`--help listed no variables:\n${help}`);
  return variables;
}

// libpq's environment variables (PostgreSQL 15 documentation, "Environment Variables" of the
// libpq chapter): the sidecar's connections honour them, as DATABASE_URL's help line says.
export const libpqVariables = new Set([
  "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE",
  "PGCHANNELBINDING", "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGAPPNAME", "PGSSLMODE",
  "PGREQUIRESSL", "PGSSLCOMPRESSION", "PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT", "PGSSLCRL",
  "PGSSLCRLDIR", "PGSSLSNI", "PGREQUIREPEER", "PGSSLMINPROTOCOLVERSION",
  "PGSSLMAXPROTOCOLVERSION", "PGGSSENCMODE", "PGKRBSRVNAME", "PGGSSLIB", "PGCONNECT_TIMEOUT",
  "PGCLIENTENCODING", "PGTARGETSESSIONATTRS", "PGDATESTYLE", "PGTZ", "PGGEQO", "PGSYSCONFDIR",
  "PGLOCALEDIR",
]);

// The names in `names` that the sidecar would not read.
export function unacceptedNames(names, accepted = acceptedVariables()) {
  return [...names].filter((name) => !accepted.has(name) && !libpqVariables.has(name));
}

// Starts the sidecar with exactly `env` (nothing inherited). Resolves once it logged
// "listening", rejects if it exits or stays silent for `timeoutMs` first.
export function startSidecar(env, { timeoutMs = 10_000 } = {}) {
  const child = spawn(sidecarBinary(), [], { env, stdio: ["ignore", "ignore", "pipe"] });
  const lines = [];
  let buffered = "";
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  const listening = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`no "listening" line within ${timeoutMs} ms; stderr:\n${lines.join("\n")}`));
    }, timeoutMs);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf("\n")) !== -1) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        lines.push(line);
        if (line.includes('"msg":"listening"')) {
          clearTimeout(timer);
          resolve();
        }
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`exited (code ${code}, signal ${signal}) before listening; stderr:\n${lines.join("\n")}`));
    });
  });
  // Sends SIGTERM and waits (bounded) for the exit; SIGKILL if it does not come.
  const stop = async (stopTimeoutMs = 10_000) => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    let timer;
    const result = await Promise.race([
      exited,
      new Promise((resolve) => {
        timer = setTimeout(() => {
          child.kill("SIGKILL");
          resolve({ code: null, signal: "timeout" });
        }, stopTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    return result;
  };
  listening.catch(() => {});
  return { child, lines, listening, stop };
}

// The shared libraries the binary needs (DT_NEEDED), each with the file ldd resolves it to.
export function neededLibraries(binary = sidecarBinary()) {
  const dump = execFileSync("objdump", ["-p", binary], { encoding: "utf8" });
  const needed = [...dump.matchAll(/^\s*NEEDED\s+(\S+)$/gm)].map((m) => m[1]);
  const ldd = execFileSync("ldd", [binary], { encoding: "utf8" });
  return needed.map((soname) => {
    const m = new RegExp(`^\\s*${soname.replace(/[.+]/g, "\\$&")} => (\\S+)`, "m").exec(ldd);
    if (m === null) throw new Error(`ldd does not resolve ${soname}:\n${ldd}`);
    return { soname, path: m[1] };
  });
}
