// A small kustomize: enough of `kustomize build` for the kustomizations in k8s/ (resources,
// components, strategic-merge patches with or without a target, images, and configMapGenerator
// without name hashes), so the tests render them without a kustomize binary. Any field it does
// not implement is an error, never silently ignored. When kubectl is installed, the tests also
// compare its output with `kubectl kustomize`.
import { existsSync, readFileSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { isPlainObject, strategicMerge } from "./merge.mjs";
import { readDocuments, readOne, rel } from "./repo.mjs";

const kinds = {
  Kustomization: "kustomize.config.k8s.io/v1beta1",
  Component: "kustomize.config.k8s.io/v1alpha1",
};

// Fields of kustomize's Kustomization type that this renderer implements, and the rest of them
// (which it refuses: a typo in a kustomization is then reported as an unknown field).
const implemented = new Set([
  "apiVersion", "kind", "metadata", "resources", "components", "patches", "images",
  "configMapGenerator", "generatorOptions",
]);
const notImplemented = new Set([
  "bases", "buildMetadata", "commonAnnotations", "commonLabels", "configurations", "crds",
  "generators", "helmChartInflationGenerator", "helmCharts", "helmGlobals", "labels",
  "nameSuffix", "namePrefix", "namespace", "openapi", "patchesJson6902",
  "patchesStrategicMerge", "replacements", "replicas", "secretGenerator", "sortOptions",
  "transformers", "validators", "vars",
]);

export function kustomizationFile(dir) {
  return join(dir, "kustomization.yaml");
}

// Reads and checks a kustomization: its kind and apiVersion, its fields, and that every file or
// directory it names exists. Returns it with `dir` and `refs`: every path it uses, by role.
export function readKustomization(dir, expectedKind) {
  const file = kustomizationFile(dir);
  if (!existsSync(file)) throw new Error(`${rel(dir)} has no kustomization.yaml`);
  for (const other of ["kustomization.yml", "Kustomization"]) {
    if (existsSync(join(dir, other))) throw new Error(`${rel(dir)} has both kustomization.yaml and ${other}`);
  }
  const k = readOne(file);
  const where = rel(file);
  if (!(k.kind in kinds)) throw new Error(`${where}: kind ${k.kind} is not Kustomization or Component`);
  if (k.apiVersion !== kinds[k.kind]) {
    throw new Error(`${where}: a ${k.kind} has apiVersion ${kinds[k.kind]}, not ${k.apiVersion}`);
  }
  if (expectedKind !== undefined && k.kind !== expectedKind) {
    throw new Error(`${where}: used as a ${expectedKind} but is a ${k.kind}`);
  }
  for (const key of Object.keys(k)) {
    if (notImplemented.has(key)) throw new Error(`${where}: ${key} is not implemented by the test renderer`);
    if (!implemented.has(key)) throw new Error(`${where}: unknown field ${key}`);
  }
  const refs = { resources: [], components: [], patches: [], generatorFiles: [] };
  const mustExist = (path, what, { directory } = {}) => {
    const full = resolve(dir, path);
    if (!existsSync(full)) throw new Error(`${where}: ${what} ${path} does not exist`);
    if (directory === true && !statSync(full).isDirectory()) {
      throw new Error(`${where}: ${what} ${path} is not a directory`);
    }
    return full;
  };
  for (const path of k.resources ?? []) refs.resources.push(mustExist(path, "resource"));
  for (const path of k.components ?? []) {
    refs.components.push(mustExist(path, "component", { directory: true }));
  }
  for (const patch of k.patches ?? []) {
    for (const key of Object.keys(patch)) {
      if (!["path", "patch", "target", "options"].includes(key)) {
        throw new Error(`${where}: unknown field ${key} in a patch`);
      }
    }
    if ((patch.path === undefined) === (patch.patch === undefined)) {
      throw new Error(`${where}: a patch needs exactly one of path and patch`);
    }
    if (patch.path !== undefined) refs.patches.push(mustExist(patch.path, "patch"));
  }
  for (const generator of k.configMapGenerator ?? []) {
    for (const key of Object.keys(generator)) {
      if (!["name", "files", "literals", "options"].includes(key)) {
        throw new Error(`${where}: ${key} in a configMapGenerator is not implemented by the test renderer`);
      }
    }
    for (const entry of generator.files ?? []) {
      refs.generatorFiles.push(mustExist(entry.includes("=") ? entry.split("=")[1] : entry, "file"));
    }
  }
  for (const image of k.images ?? []) {
    for (const key of Object.keys(image)) {
      if (!["name", "newName", "newTag", "digest"].includes(key)) {
        throw new Error(`${where}: unknown field ${key} in images`);
      }
    }
  }
  return { ...k, dir, file, refs };
}

function id(object) {
  return `${object.apiVersion} ${object.kind} ${object.metadata?.namespace ?? ""}/${object.metadata?.name}`;
}

function addResource(list, object, where) {
  if (!isPlainObject(object) || !object.apiVersion || !object.kind || !object.metadata?.name) {
    throw new Error(`${where}: a resource needs apiVersion, kind and metadata.name`);
  }
  if (list.some((existing) => id(existing) === id(object))) {
    throw new Error(`${where}: ${id(object)} is defined twice`);
  }
  list.push(object);
}

function parseLabelSelector(selector) {
  return selector.split(",").map((term) => {
    const m = /^\s*([A-Za-z0-9./_-]+)\s*==?\s*([A-Za-z0-9._-]*)\s*$/.exec(term);
    if (m === null) throw new Error(`label selector term ${term} is not key=value`);
    return [m[1], m[2]];
  });
}

export function matchesTarget(object, target) {
  for (const key of Object.keys(target)) {
    if (!["group", "version", "kind", "name", "labelSelector"].includes(key)) {
      throw new Error(`patch target field ${key} is not implemented by the test renderer`);
    }
  }
  const [group, version] = object.apiVersion.includes("/") ? object.apiVersion.split("/") : ["", object.apiVersion];
  if (target.group !== undefined && target.group !== group) return false;
  if (target.version !== undefined && target.version !== version) return false;
  if (target.kind !== undefined && target.kind !== object.kind) return false;
  if (target.name !== undefined && target.name !== object.metadata.name) return false;
  if (target.labelSelector !== undefined) {
    const labels = object.metadata.labels ?? {};
    for (const [key, value] of parseLabelSelector(target.labelSelector)) {
      if (labels[key] !== value) return false;
    }
  }
  return true;
}

// Applies one strategic-merge patch the way kustomize does: to every object its target selects
// (the patch's own name is then ignored), or without a target to the one object it names.
export function applyPatch(objects, patch, target, where) {
  if (!isPlainObject(patch) || !patch.apiVersion || !patch.kind) {
    throw new Error(`${where}: a strategic-merge patch needs apiVersion and kind`);
  }
  if (target !== undefined) {
    const body = structuredClone(patch);
    delete body.metadata?.name;
    return objects.map((object) =>
      matchesTarget(object, target) && object.kind === patch.kind && object.apiVersion === patch.apiVersion
        ? strategicMerge(object, body)
        : object,
    );
  }
  const matches = objects.filter((o) => id(o) === id(patch));
  if (matches.length !== 1) throw new Error(`${where}: the patch's target ${id(patch)} is not there`);
  return objects.map((object) => (object === matches[0] ? strategicMerge(object, patch) : object));
}

function splitImage(image) {
  const at = image.indexOf("@");
  const withoutDigest = at === -1 ? image : image.slice(0, at);
  const colon = withoutDigest.lastIndexOf(":");
  const slash = withoutDigest.lastIndexOf("/");
  if (colon > slash) return { name: withoutDigest.slice(0, colon), tag: withoutDigest.slice(colon + 1) };
  return { name: withoutDigest, tag: undefined };
}

function applyImages(objects, images) {
  const rewrite = (container) => {
    if (typeof container.image !== "string") return container;
    const { name, tag } = splitImage(container.image);
    const rule = images.find((image) => image.name === name);
    if (rule === undefined) return container;
    let image = rule.newName ?? name;
    if (rule.digest !== undefined) image += `@${rule.digest}`;
    else if ((rule.newTag ?? tag) !== undefined) image += `:${rule.newTag ?? tag}`;
    return { ...container, image };
  };
  const walk = (value) => {
    if (Array.isArray(value)) return value.map(walk);
    if (!isPlainObject(value)) return value;
    const out = {};
    for (const [key, child] of Object.entries(value)) {
      out[key] = (key === "containers" || key === "initContainers") && Array.isArray(child)
        ? child.map((c) => rewrite(walk(c)))
        : walk(child);
    }
    return out;
  };
  return objects.map(walk);
}

function generateConfigMaps(k) {
  const out = [];
  for (const generator of k.configMapGenerator ?? []) {
    const options = { ...k.generatorOptions, ...generator.options };
    if (options.disableNameSuffixHash !== true) {
      throw new Error(`${rel(k.file)}: the test renderer does not compute name hashes; set disableNameSuffixHash`);
    }
    const data = {};
    for (const entry of generator.files ?? []) {
      const [key, path] = entry.includes("=") ? entry.split("=") : [basename(entry), entry];
      data[key] = readFileSync(resolve(k.dir, path), "utf8");
    }
    for (const literal of generator.literals ?? []) {
      const eq = literal.indexOf("=");
      data[literal.slice(0, eq)] = literal.slice(eq + 1);
    }
    const metadata = { name: generator.name };
    if (options.labels) metadata.labels = options.labels;
    if (options.annotations) metadata.annotations = options.annotations;
    out.push({ apiVersion: "v1", kind: "ConfigMap", metadata, data });
  }
  return out;
}

// Runs a kustomization's generators and transformers on `objects` (kustomize's order: resources,
// then components, then this kustomization's generators, patches and images).
function accumulate(k, objects, used) {
  let result = objects;
  for (const path of k.refs.resources) {
    if (statSync(path).isDirectory()) {
      const sub = build(path, used);
      for (const object of sub) addResource(result, object, rel(path));
    } else {
      used.resources.add(path);
      for (const object of readDocuments(path)) addResource(result, object, rel(path));
    }
  }
  for (const path of k.refs.components) {
    const component = readKustomization(path, "Component");
    used.kustomizations.add(component.file);
    result = accumulate(component, result, used);
  }
  for (const object of generateConfigMaps(k)) addResource(result, object, rel(k.file));
  for (const entry of k.patches ?? []) {
    if (entry.path === undefined || entry.options !== undefined) {
      throw new Error(`${rel(k.file)}: only patches from a file, without options, are implemented by the test renderer`);
    }
    const path = resolve(k.dir, entry.path);
    used.patches.add(path);
    for (const patch of readDocuments(path)) result = applyPatch(result, patch, entry.target, rel(k.file));
  }
  if (k.images !== undefined) result = applyImages(result, k.images);
  return result;
}

// `kustomize build dir`: the objects, in the order kustomize emits them before sorting.
// `used` collects the files consumed, by role, for the check that nothing in k8s/ is orphaned.
export function build(dir, used = { resources: new Set(), patches: new Set(), kustomizations: new Set() }) {
  const k = readKustomization(dir, "Kustomization");
  used.kustomizations.add(k.file);
  return accumulate(k, [], used);
}

// The component's patches, applied alone to `objects` (no overlay): for injecting into any
// Deployment, as an overlay that lists only the component would.
export function applyComponent(dir, objects) {
  const component = readKustomization(dir, "Component");
  const used = { resources: new Set(), patches: new Set(), kustomizations: new Set() };
  return accumulate(component, structuredClone(objects), used);
}
