// Writes dist/index.mjs and dist/index.d.mts: the ES module entry point, which re-exports the
// CommonJS build's exports by name.
//
// A wrapper rather than a second build: `import` and `require` then load one copy of the code,
// so an error class is the same class from both (instanceof holds in an app that mixes them)
// and the connections of one client are never split between two module instances.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const names = Object.keys(createRequire(import.meta.url)(join(dist, 'index.js'))).sort();
if (names.length === 0 || names.includes('default')) {
  throw new Error(`unexpected exports of dist/index.js: ${names.join(', ')}`);
}
const header =
  '// Written by scripts/esm-wrapper.mjs from the CommonJS build; never edited by hand.\n';
writeFileSync(
  join(dist, 'index.mjs'),
  `${header}import cjs from './index.js';\n\nexport const {\n${names.map((n) => `  ${n},\n`).join('')}} = cjs;\n`,
);
// The same declarations as the CommonJS entry point, seen from an ES module.
writeFileSync(join(dist, 'index.d.mts'), `${header}export * from './index.js';\n`);
console.log(`esm-wrapper: dist/index.mjs re-exports ${names.length} names`);
