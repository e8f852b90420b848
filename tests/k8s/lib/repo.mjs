// Where the repository's files are, and reading the YAML documents of k8s/ strictly.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { suiteDir, YAML } from "./deps.mjs";

export const repoRoot = resolve(process.env.RATELIMIT_SOURCE_DIR ?? join(suiteDir, "..", ".."));
export const k8sDir = join(repoRoot, "k8s");

export function rel(path) {
  return relative(repoRoot, path);
}

export function listFiles(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(path));
    else out.push(path);
  }
  return out.sort();
}

export function yamlFiles(dir = k8sDir) {
  return listFiles(dir).filter((path) => /\.ya?ml$/.test(path));
}

// Every document of a YAML file as plain data. Any parse error or warning (a duplicate key, a
// tab, ...) throws: kubectl would refuse the file or read it otherwise than it looks.
export function readDocuments(path) {
  const text = readFileSync(path, "utf8");
  const docs = YAML.parseAllDocuments(text, { uniqueKeys: true, strict: true });
  const out = [];
  for (const doc of docs) {
    const problems = [...doc.errors, ...doc.warnings];
    if (problems.length > 0) throw new Error(`${rel(path)}: ${problems[0].message}`);
    const value = doc.toJS({ maxAliasCount: 0 });
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

export function readOne(path) {
  const docs = readDocuments(path);
  if (docs.length !== 1) throw new Error(`${rel(path)}: expected one YAML document, found ${docs.length}`);
  return docs[0];
}
