// The part of Kubernetes' strategic merge patch that this project's patches use: maps merge
// key by key, a null deletes, lists of objects that all have a `name` merge by name (existing
// items keep their place, new ones are appended), any other list or value is replaced.
//
// Kubernetes merges volumeMounts by mountPath and ports by containerPort rather than by name;
// in this project's patches name and mountPath (or containerPort) always go together, so merging
// by name gives the same result. Patch directives ($patch, $retainKeys, ...) are refused, not
// half-implemented.

export function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function namedList(list) {
  return list.every((item) => isPlainObject(item) && typeof item.name === "string");
}

export function strategicMerge(base, patch) {
  if (Array.isArray(patch)) {
    if (Array.isArray(base) && namedList(base) && namedList(patch)) {
      const result = base.map((item) => structuredClone(item));
      for (const item of patch) {
        const at = result.findIndex((existing) => existing.name === item.name);
        if (at === -1) result.push(strategicMerge(undefined, item));
        else result[at] = strategicMerge(result[at], item);
      }
      return result;
    }
    return patch.map((item) => strategicMerge(undefined, item));
  }
  if (!isPlainObject(patch)) return structuredClone(patch);
  const result = isPlainObject(base) ? structuredClone(base) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith("$")) throw new Error(`patch directive ${key} is not supported here`);
    if (value === null) delete result[key];
    else result[key] = strategicMerge(result[key], value);
  }
  return result;
}
