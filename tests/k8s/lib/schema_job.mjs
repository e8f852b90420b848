// The schema Job as rendered from k8s/schema, and the sidecar configuration it serves.
import { applyComponent, build } from "./kustomize.mjs";
import { componentDir, containerEnv, find } from "./objects.mjs";
import { k8sDir } from "./repo.mjs";

export function schemaJob() {
  const objects = build(`${k8sDir}/schema`);
  const job = find(objects, "Job", "ratelimit-schema");
  const pod = job.spec.template.spec;
  if (pod.containers.length !== 1) throw new Error("the Job has one container");
  const container = pod.containers[0];
  const env = containerEnv(container, objects);
  // The ConfigMap mounted into the container, and where.
  const mounts = (container.volumeMounts ?? []).map((mount) => {
    const volume = pod.volumes.find((v) => v.name === mount.name);
    return { mount, configMap: volume?.configMap ? find(objects, "ConfigMap", volume.configMap.name) : undefined };
  });
  return { objects, job, pod, container, env, mounts };
}

export function sidecarConfig() {
  return find(applyComponent(componentDir, []), "ConfigMap", "ratelimit-sidecar-config").data;
}
