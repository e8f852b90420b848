// Unknown-field check: the API server rejects a misspelled field (kubectl's default
// --validate=strict), but the JSON schemas of kubernetes-models accept any extra property. The
// field names come from the packages' TypeScript declarations, which list every property of
// every type; this reads the small subset of TypeScript they are written in.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { suiteDir } from "./deps.mjs";

const require = createRequire(join(suiteDir, "package.json"));

// Type nodes: {kind: "object", props: Map<name, type>, index: type|null}, {kind: "array", of},
// {kind: "ref", name, file} (resolved lazily: the types are recursive), {kind: "union", of: []},
// {kind: "leaf"} (strings, numbers, booleans, literals: their values are the schemas' business).

function tokenize(text) {
  const source = text.replace(/\/\*[\s\S]*?\*\//g, " ");
  const tokens = [];
  const pattern = /\s+|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([A-Za-z_$][\w$]*)|(-?\d+(?:\.\d+)?)|([{}<>[\]():;?|,.=&*])/gy;
  let match;
  while (pattern.lastIndex < source.length) {
    const at = pattern.lastIndex;
    match = pattern.exec(source);
    if (match === null) throw new Error(`cannot read a declaration at: ${source.slice(at, at + 40)}`);
    if (match[1] !== undefined) tokens.push({ type: "string", value: match[1].slice(1, -1) });
    else if (match[2] !== undefined) tokens.push({ type: "ident", value: match[2] });
    else if (match[3] !== undefined) tokens.push({ type: "number", value: match[3] });
    else if (match[4] !== undefined) tokens.push({ type: "punct", value: match[4] });
  }
  return tokens;
}

class Parser {
  constructor(tokens, file, imports) {
    this.tokens = tokens;
    this.pos = 0;
    this.file = file;
    this.imports = imports;
  }
  peek(offset = 0) {
    return this.tokens[this.pos + offset];
  }
  next() {
    const token = this.tokens[this.pos++];
    if (token === undefined) throw new Error(`${this.file}: unexpected end of declarations`);
    return token;
  }
  expect(value) {
    const token = this.next();
    if (token.value !== value) {
      throw new Error(`${this.file}: expected ${value}, found ${token.value}`);
    }
  }
  is(value) {
    return this.peek()?.value === value;
  }

  type() {
    if (this.is("|")) this.next();
    const options = [this.primary()];
    while (this.is("|")) {
      this.next();
      options.push(this.primary());
    }
    return options.length === 1 ? options[0] : { kind: "union", of: options };
  }

  primary() {
    const token = this.next();
    if (token.type === "string" || token.type === "number") return { kind: "leaf" };
    if (token.value === "{") return this.objectBody();
    if (token.value === "(") {
      const inner = this.type();
      this.expect(")");
      return this.arraySuffix(inner);
    }
    if (token.type !== "ident") throw new Error(`${this.file}: unexpected ${token.value} in a type`);
    let result;
    if (token.value === "Array") {
      this.expect("<");
      result = { kind: "array", of: this.type() };
      this.expect(">");
    } else if (["string", "number", "boolean", "true", "false", "null", "any", "unknown", "object"].includes(token.value)) {
      result = { kind: "leaf" };
    } else if (this.is("[")) {
      // IFoo["spec"]: a property of a type declared in this file.
      this.next();
      const property = this.next().value;
      this.expect("]");
      result = { kind: "member", of: { kind: "ref", name: token.value, file: this.file }, property };
    } else {
      result = this.reference(token.value);
    }
    return this.arraySuffix(result);
  }

  arraySuffix(type) {
    let result = type;
    while (this.is("[") && this.peek(1)?.value === "]") {
      this.next();
      this.next();
      result = { kind: "array", of: result };
    }
    return result;
  }

  reference(name) {
    const imported = this.imports.get(name);
    if (imported !== undefined) return { kind: "ref", name: imported.name, file: imported.file };
    return { kind: "ref", name, file: this.file };
  }

  // After "{": properties `"name"?: Type;` and index signatures `[key: string]: Type;`.
  objectBody() {
    const props = new Map();
    let index = null;
    while (!this.is("}")) {
      if (this.is("[")) {
        this.next();
        this.next();
        this.expect(":");
        this.next();
        this.expect("]");
        this.expect(":");
        index = this.type();
      } else {
        const token = this.next();
        if (token.value === "readonly") continue;
        if (token.type !== "string" && token.type !== "ident") {
          throw new Error(`${this.file}: unexpected ${token.value} in an object type`);
        }
        if (this.is("?")) this.next();
        this.expect(":");
        props.set(token.value, this.type());
      }
      if (this.is(";") || this.is(",")) this.next();
    }
    this.expect("}");
    return { kind: "object", props, index };
  }
}

const fileCache = new Map();

function resolveModule(specifier, fromFile) {
  if (specifier.startsWith(".")) return resolve(dirname(fromFile), `${specifier}.d.ts`);
  return require.resolve(specifier).replace(/\.js$/, ".d.ts");
}

// What a .d.ts file declares: its interfaces and type aliases, by name, and its re-exports.
function declarations(file) {
  let cached = fileCache.get(file);
  if (cached !== undefined) return cached;
  const text = readFileSync(file, "utf8");
  const imports = new Map();
  for (const m of text.matchAll(/^import \{([^}]*)\} from "([^"]+)";/gm)) {
    const target = resolveModule(m[2], file);
    for (const part of m[1].split(",")) {
      const [name, alias] = part.trim().split(/\s+as\s+/);
      if (name) imports.set(alias ?? name, { name, file: target });
    }
  }
  const aliases = new Map();
  for (const m of text.matchAll(/^export \{([^}]*)\}(?: from "([^"]+)")?;/gm)) {
    for (const part of m[1].split(",")) {
      const [name, alias] = part.trim().split(/\s+as\s+/);
      if (!name) continue;
      aliases.set(alias ?? name, m[2] ? { name, file: resolveModule(m[2], file) } : { name, file });
    }
  }
  const types = new Map();
  const body = text.replace(/\/\*[\s\S]*?\*\//g, "");
  for (const m of body.matchAll(/^export (?:declare )?interface (\w+)(?: extends ([\w, ]+))? \{/gm)) {
    const start = m.index + m[0].length;
    types.set(m[1], { source: body.slice(start, matchingBrace(body, start - 1) + 1), extends: m[2], brace: true });
  }
  for (const m of body.matchAll(/^export (?:declare )?type (\w+)(?:<[^>]*>)? = /gm)) {
    const start = m.index + m[0].length;
    types.set(m[1], { source: body.slice(start, statementEnd(body, start)), brace: false });
  }
  cached = { imports, aliases, types, parsed: new Map() };
  fileCache.set(file, cached);
  return cached;
}

function matchingBrace(text, open) {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === "{") depth++;
    else if (text[i] === "}" && --depth === 0) return i;
  }
  throw new Error("unbalanced braces in a declaration file");
}

function statementEnd(text, start) {
  let depth = 0;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (c === "{" || c === "(" || c === "<" || c === "[") depth++;
    else if (c === "}" || c === ")" || c === ">" || c === "]") depth--;
    else if (c === ";" && depth === 0) return i;
  }
  return text.length;
}

function lookup(name, file, seen = new Set()) {
  const key = `${file}#${name}`;
  if (seen.has(key)) throw new Error(`circular alias ${name} in ${file}`);
  seen.add(key);
  const decls = declarations(file);
  if (decls.parsed.has(name)) return decls.parsed.get(name);
  const declared = decls.types.get(name);
  if (declared !== undefined) {
    const parser = new Parser(tokenize(declared.source), file, decls.imports);
    let type = declared.brace ? parser.objectBody() : parser.type();
    if (declared.extends) {
      for (const base of declared.extends.split(",").map((s) => s.trim())) {
        if (base === "TypeMeta") {
          type.props.set("apiVersion", { kind: "leaf" });
          type.props.set("kind", { kind: "leaf" });
        } else {
          const parent = resolveType(parser.reference(base));
          for (const [k, v] of parent.props) type.props.set(k, v);
        }
      }
    }
    decls.parsed.set(name, type);
    return type;
  }
  const alias = decls.aliases.get(name);
  if (alias !== undefined) return lookup(alias.name, alias.file, seen);
  const imported = decls.imports.get(name);
  if (imported !== undefined) return lookup(imported.name, imported.file, seen);
  throw new Error(`no declaration of ${name} in ${file}`);
}

function resolveType(type) {
  let current = type;
  while (current.kind === "ref" || current.kind === "member") {
    if (current.kind === "ref") {
      current = lookup(current.name, current.file);
    } else {
      const owner = resolveType(current.of);
      const property = owner.kind === "object" ? owner.props.get(current.property) : undefined;
      if (property === undefined) throw new Error(`no property ${current.property} to refer to`);
      current = property;
    }
  }
  return current;
}

function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

// Every property path in `value` that `type` does not declare.
function unknownFields(value, type, path, out) {
  const t = resolveType(type);
  if (t.kind === "leaf") return;
  if (t.kind === "array") {
    if (Array.isArray(value)) value.forEach((item, i) => unknownFields(item, t.of, `${path}[${i}]`, out));
    return;
  }
  if (t.kind === "union") {
    // Fields are unknown only if no member of the union declares them.
    let best = null;
    for (const option of t.of) {
      const found = [];
      unknownFields(value, option, path, found);
      if (best === null || found.length < best.length) best = found;
    }
    out.push(...(best ?? []));
    return;
  }
  if (!isPlainObject(value)) return;
  for (const [key, child] of Object.entries(value)) {
    const field = t.props.get(key) ?? t.index;
    if (field === null || field === undefined) {
      out.push(`${path}.${key}`);
    } else {
      unknownFields(child, field, `${path}.${key}`, out);
    }
  }
}

// The fields of `object` that its type (the interface `I<Kind>` declared in `declarationFile`)
// does not have, as paths like `.spec.template.spec.containers[0].readinesProbe`.
export function findUnknownFields(object, declarationFile, kind) {
  const out = [];
  unknownFields(object, { kind: "ref", name: `I${kind}`, file: declarationFile }, "", out);
  return out;
}
