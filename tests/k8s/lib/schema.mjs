// Validates Kubernetes objects offline: the API's JSON schemas (kubernetes-models, and
// @kubernetes-models/prometheus-operator for the operator's CRDs), plus unknown fields.
import { createRequire } from "node:module";
import { join } from "node:path";
import { suiteDir } from "./deps.mjs";
import { findUnknownFields } from "./known_fields.mjs";

const require = createRequire(join(suiteDir, "package.json"));

// The module of each API group this project's manifests may use. Any other apiVersion is an
// error, so a new kind of object cannot slip in unvalidated.
const groups = {
  v1: "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "batch/v1": "kubernetes-models/batch/v1",
  "policy/v1": "kubernetes-models/policy/v1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};

function moduleOf(apiVersion, kind) {
  const group = groups[apiVersion];
  if (group === undefined) throw new Error(`no schema known for apiVersion ${apiVersion}`);
  if (!/^[A-Z][A-Za-z0-9]*$/.test(kind ?? "")) throw new Error(`not a kind: ${kind}`);
  return `${group}/${kind}`;
}

// Throws unless `object` is a valid instance of its apiVersion and kind, with no unknown field.
export async function validateObject(object) {
  const specifier = moduleOf(object?.apiVersion, object?.kind);
  let model;
  try {
    model = (await import(specifier))[object.kind];
  } catch (error) {
    throw new Error(`no schema for ${object.apiVersion} ${object.kind}: ${error.message}`);
  }
  if (typeof model !== "function") throw new Error(`no model ${object.kind} in ${specifier}`);
  const name = `${object.kind} ${object.metadata?.name ?? "(no name)"}`;
  try {
    new model(structuredClone(object)).validate();
  } catch (error) {
    throw new Error(`${name} is invalid: ${error.message}`);
  }
  const unknown = findUnknownFields(object, declarationFile(object), object.kind);
  if (unknown.length > 0) throw new Error(`${name} has unknown fields: ${unknown.join(", ")}`);
}

// Throws if a partial object (a strategic-merge patch) has fields its kind does not.
export function checkPatchFields(patch) {
  const unknown = findUnknownFields(patch, declarationFile(patch), patch.kind);
  if (unknown.length > 0) {
    throw new Error(`patch for ${patch.kind} has unknown fields: ${unknown.join(", ")}`);
  }
}

function declarationFile(object) {
  return require.resolve(moduleOf(object?.apiVersion, object?.kind)).replace(/\.js$/, ".d.ts");
}
