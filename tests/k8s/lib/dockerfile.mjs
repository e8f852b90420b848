// Reads a Dockerfile into stages and instructions: comment lines dropped, continuation lines
// joined, as the builder does. Enough for the consistency checks, not a full parser.

export function parseDockerfile(text) {
  const logical = [];
  let current = "";
  for (const line of text.split("\n")) {
    if (/^\s*#/.test(line)) continue;
    if (/\\\s*$/.test(line)) {
      current += line.replace(/\\\s*$/, " ");
      continue;
    }
    current += line;
    if (current.trim() !== "") logical.push(current.trim());
    current = "";
  }
  if (current.trim() !== "") logical.push(current.trim());

  const stages = [];
  for (const line of logical) {
    const m = /^([A-Za-z]+)\s+([\s\S]*)$/.exec(line);
    if (m === null) throw new Error(`not an instruction: ${line}`);
    const op = m[1].toUpperCase();
    const args = m[2].replace(/\s+/g, " ").trim();
    if (op === "FROM") {
      const from = /^(?:--platform=\S+ )?(\S+)(?: AS (\S+))?$/i.exec(args);
      if (from === null) throw new Error(`unreadable FROM: ${args}`);
      stages.push({ image: from[1], name: from[2], instructions: [] });
      continue;
    }
    if (stages.length === 0) throw new Error(`${op} before the first FROM`);
    stages.at(-1).instructions.push({ op, args });
  }
  return stages;
}

export function instructions(stage, op) {
  return stage.instructions.filter((i) => i.op === op).map((i) => i.args);
}

// The packages of every `apt-get install` in the stage's RUN instructions.
export function aptPackages(stage) {
  const packages = [];
  for (const run of instructions(stage, "RUN")) {
    for (const command of run.split(/&&|;/)) {
      const m = /\bapt-get\s+(?:\S+\s+)*?install\s+(.*)$/.exec(command.trim());
      if (m === null) continue;
      packages.push(...m[1].split(" ").filter((word) => word !== "" && !word.startsWith("-")));
    }
  }
  return packages;
}

// ENV KEY=VALUE ... (or the old ENV KEY VALUE), values without quotes.
export function envOf(stage) {
  const env = new Map();
  for (const args of instructions(stage, "ENV")) {
    if (!args.includes("=")) {
      const [key, ...rest] = args.split(" ");
      env.set(key, rest.join(" "));
      continue;
    }
    for (const pair of args.split(" ")) {
      const eq = pair.indexOf("=");
      if (eq <= 0) throw new Error(`unreadable ENV: ${args}`);
      env.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
  }
  return env;
}

// COPY [--from=STAGE] SRC... DEST
export function copiesOf(stage) {
  return instructions(stage, "COPY").map((args) => {
    const words = args.split(" ");
    const flags = words.filter((w) => w.startsWith("--"));
    const paths = words.filter((w) => !w.startsWith("--"));
    const from = flags.find((f) => f.startsWith("--from="))?.slice("--from=".length);
    return { from, sources: paths.slice(0, -1), dest: paths.at(-1) };
  });
}

// Whether a .dockerignore pattern list excludes `path` (a path relative to the context): the
// patterns are matched like the builder's filepath.Match, on the path or any parent of it.
export function dockerIgnored(patterns, path) {
  const toRegex = (pattern) => {
    let re = "";
    for (let i = 0; i < pattern.length; i++) {
      const c = pattern[i];
      if (c === "*" && pattern[i + 1] === "*") {
        re += ".*";
        i++;
        if (pattern[i + 1] === "/") i++;
      } else if (c === "*") re += "[^/]*";
      else if (c === "?") re += "[^/]";
      else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    }
    return new RegExp(`^${re}$`);
  };
  const parts = path.replace(/\/$/, "").split("/");
  let ignored = false;
  for (const raw of patterns) {
    const negate = raw.startsWith("!");
    const pattern = (negate ? raw.slice(1) : raw).replace(/^\/+/, "").replace(/\/+$/, "");
    const re = toRegex(pattern);
    for (let n = 1; n <= parts.length; n++) {
      if (re.test(parts.slice(0, n).join("/"))) {
        ignored = !negate;
        break;
      }
    }
  }
  return ignored;
}
