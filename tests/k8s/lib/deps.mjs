// The suite's npm dependencies, loaded only after checking that `npm ci` installed them, so a
// fresh clone fails with what to run instead of a module resolution error.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const suiteDir = dirname(dirname(fileURLToPath(import.meta.url)));
export const installCommand = "npm ci --prefix tests/k8s --no-audit --no-fund";

function checkInstalled() {
  const nodeModules = join(suiteDir, "node_modules");
  if (!existsSync(nodeModules)) {
    throw new Error(`tests/k8s/node_modules is missing: run \`${installCommand}\` first`);
  }
  // A node_modules left from another lockfile would test against other schemas.
  const wanted = JSON.parse(readFileSync(join(suiteDir, "package.json"), "utf8")).dependencies;
  for (const [name, version] of Object.entries(wanted)) {
    const manifest = join(nodeModules, name, "package.json");
    const installed = existsSync(manifest) ? JSON.parse(readFileSync(manifest, "utf8")).version : null;
    if (installed !== version) {
      throw new Error(
        `tests/k8s/node_modules has ${name} ${installed ?? "missing"}, package.json pins ` +
          `${version}: run \`${installCommand}\` again`,
      );
    }
  }
}

checkInstalled();

export const YAML = await import("yaml");
