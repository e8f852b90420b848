// Finding things in rendered manifests: objects by kind and name, the sidecar container, and
// the environment a container gets.
import { join } from "node:path";
import { k8sDir } from "./repo.mjs";

export const componentDir = join(k8sDir, "components", "ratelimit-sidecar");
export const sidecarName = "ratelimit-sidecar";
export const injectLabel = ["ratelimit-sidecar/inject", "true"];

export function find(objects, kind, name) {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (found.length !== 1) {
    throw new Error(`expected one ${kind}${name ? ` ${name}` : ""}, found ${found.length}`);
  }
  return found[0];
}

export function sidecarOf(deployment) {
  const spec = deployment.spec.template.spec;
  const found = (spec.initContainers ?? []).filter((c) => c.name === sidecarName);
  if (found.length !== 1) {
    throw new Error(`${deployment.metadata.name}: expected one init container ${sidecarName}, found ${found.length}`);
  }
  return found[0];
}

// The variables `container` gets: envFrom ConfigMaps first, then env (which wins), as the
// kubelet does. Values from a Secret or the downward API are `{ from: ... }`. Every ConfigMap
// it names must be among `objects`.
export function containerEnv(container, objects) {
  const env = new Map();
  for (const source of container.envFrom ?? []) {
    if (source.configMapRef === undefined) throw new Error(`${container.name}: only configMapRef envFrom is expected`);
    const cm = find(objects, "ConfigMap", source.configMapRef.name);
    for (const [key, value] of Object.entries(cm.data ?? {})) env.set(`${source.prefix ?? ""}${key}`, value);
  }
  for (const variable of container.env ?? []) {
    env.set(variable.name, variable.valueFrom !== undefined ? { from: variable.valueFrom } : (variable.value ?? ""));
  }
  return env;
}

export function portNumber(container, nameOrNumber) {
  if (typeof nameOrNumber === "number") return nameOrNumber;
  const port = (container.ports ?? []).find((p) => p.name === nameOrNumber);
  if (port === undefined) throw new Error(`${container.name} has no port named ${nameOrNumber}`);
  return port.containerPort;
}
