// The component injects a native sidecar: checked on the example overlay and on other
// Deployments it is applied to (a minimal one, one with init containers, volumes and a security
// context of its own, and one without the label).
import assert from "node:assert/strict";
import { posix } from "node:path";
import { describe, test } from "node:test";
import { applyComponent, build } from "./lib/kustomize.mjs";
import { strategicMerge } from "./lib/merge.mjs";
import { componentDir, containerEnv, find, injectLabel, portNumber, sidecarOf } from "./lib/objects.mjs";
import { restrictedViolations } from "./lib/pod_security.mjs";
import { k8sDir, readOne } from "./lib/repo.mjs";
import { validateObject } from "./lib/schema.mjs";
import { acceptedVariables } from "./lib/sidecar.mjs";

const exampleObjects = build(`${k8sDir}/example`);
const example = find(exampleObjects, "Deployment", "example-api");
const defaults = acceptedVariables();

function deployment(name, { labels = { [injectLabel[0]]: injectLabel[1] }, podSpec = {} } = {}) {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, labels },
    spec: {
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name: "web", image: "registry.example.com/web:2" }], ...podSpec },
      },
    },
  };
}

// The checks every injected Deployment must pass; `objects` holds the ConfigMaps it refers to.
function assertInjected(d, objects) {
  const pod = d.spec.template.spec;
  const sidecar = sidecarOf(d);
  const env = containerEnv(sidecar, objects);
  const value = (name) => (env.has(name) ? env.get(name) : defaults.get(name));

  assert.equal(sidecar.restartPolicy, "Always", "a native sidecar is an init container with restartPolicy Always");
  assert.ok(!(pod.containers ?? []).some((c) => c.name === sidecar.name), "the sidecar is not also a plain container");
  assert.equal(sidecar.command, undefined, "the image's entrypoint runs the sidecar");
  assert.equal(sidecar.args, undefined, "the sidecar takes no arguments");

  // The socket: its directory is the emptyDir the sidecar mounts.
  const socketDir = posix.dirname(value("RATE_LIMIT_SOCKET"));
  assert.equal(socketDir, "/var/run/ratelimit");
  const mount = (sidecar.volumeMounts ?? []).find((m) => m.mountPath === socketDir);
  assert.ok(mount, `the sidecar mounts ${socketDir}`);
  assert.notEqual(mount.readOnly, true);
  const volume = (pod.volumes ?? []).find((v) => v.name === mount.name);
  assert.ok(volume?.emptyDir, `volume ${mount.name} is an emptyDir`);
  assert.ok(pod.securityContext?.fsGroup > 0, "a fsGroup gives the app the socket's group");

  // The admin server, its port and the probes on it.
  const adminAddr = value("RATE_LIMIT_ADMIN_ADDR");
  assert.match(adminAddr, /^0\.0\.0\.0:\d+$/, "the admin server listens on the pod's address");
  const adminPort = Number(adminAddr.split(":")[1]);
  const admin = (sidecar.ports ?? []).find((p) => p.name === "admin");
  assert.deepEqual([admin?.containerPort, admin?.protocol ?? "TCP"], [9464, "TCP"]);
  assert.equal(adminPort, admin.containerPort);
  for (const [probe, path] of [["startupProbe", "/readyz"], ["readinessProbe", "/readyz"], ["livenessProbe", "/healthz"]]) {
    const p = sidecar[probe];
    assert.ok(p?.httpGet, `${probe} is an HTTP probe`);
    assert.equal(p.httpGet.path, path, `${probe} path`);
    assert.equal(portNumber(sidecar, p.httpGet.port), adminPort, `${probe} port`);
  }

  // Requests and limits, requests within limits.
  const quantity = (q) => {
    const m = /^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi)?$/.exec(String(q));
    assert.ok(m, `a quantity: ${q}`);
    const scale = { m: 1e-3, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30 };
    return Number(m[1]) * (m[2] === undefined ? 1 : scale[m[2]]);
  };
  for (const resource of ["cpu", "memory"]) {
    const request = sidecar.resources?.requests?.[resource];
    const limit = sidecar.resources?.limits?.[resource];
    assert.ok(request !== undefined && limit !== undefined, `${resource} request and limit`);
    assert.ok(quantity(request) <= quantity(limit), `${resource} request within its limit`);
  }

  // Restricted on its own, whatever the pod around it says.
  const sc = sidecar.securityContext;
  assert.deepEqual(restrictedViolations({ containers: [sidecar] }), []);
  assert.equal(sc.runAsNonRoot, true);
  assert.equal(sc.runAsUser, 10001);
  assert.equal(sc.runAsGroup, 10001);
  assert.equal(sc.readOnlyRootFilesystem, true);
  assert.equal(sc.allowPrivilegeEscalation, false);
  assert.deepEqual(sc.capabilities.drop, ["ALL"]);
  assert.equal(sc.seccompProfile.type, "RuntimeDefault");

  // Configuration from the ConfigMap, the password from a Secret and never in the ConfigMap.
  assert.ok((sidecar.envFrom ?? []).some((s) => s.configMapRef?.name === "ratelimit-sidecar-config"));
  assert.deepEqual(env.get("PGPASSWORD"), { from: { secretKeyRef: { name: "ratelimit-sidecar-db", key: "password" } } });
  const url = value("DATABASE_URL");
  assert.ok(url === "" || new URL(url).password === "", "DATABASE_URL carries no password");

  // Shutdown: the kubelet's grace period covers the sidecar's.
  const grace = d.spec.template.spec.terminationGracePeriodSeconds ?? 30;
  assert.ok(grace * 1000 > Number(value("RATE_LIMIT_SHUTDOWN_GRACE_MS")) + 5000,
    `terminationGracePeriodSeconds ${grace} leaves 5 s beyond RATE_LIMIT_SHUTDOWN_GRACE_MS`);

  // Scraping: annotations on the pod, a label for the PodMonitor.
  const annotations = d.spec.template.metadata.annotations ?? {};
  assert.equal(annotations["prometheus.io/scrape"], "true");
  assert.equal(annotations["prometheus.io/port"], String(adminPort));
  assert.equal(annotations["prometheus.io/path"], "/metrics");
  assert.equal(d.spec.template.metadata.labels["ratelimit-sidecar/injected"], "true");
}

describe("the example overlay", () => {
  test("the Deployment has the sidecar injected", async () => {
    await validateObject(example);
    assertInjected(example, exampleObjects);
  });

  test("the whole pod meets Pod Security restricted", () => {
    assert.deepEqual(restrictedViolations(example.spec.template.spec), []);
  });

  test("the app container mounts the socket volume and is told the socket's path", () => {
    const pod = example.spec.template.spec;
    const sidecar = sidecarOf(example);
    const socket = containerEnv(sidecar, exampleObjects).get("RATE_LIMIT_SOCKET");
    const api = pod.containers.find((c) => c.name === "api");
    const sidecarMount = sidecar.volumeMounts.find((m) => m.mountPath === posix.dirname(socket));
    assert.ok(api.volumeMounts.some((m) => m.name === sidecarMount.name && m.mountPath === sidecarMount.mountPath));
    assert.equal(containerEnv(api, exampleObjects).get("RATE_LIMIT_SOCKET"), socket);
    assert.notEqual(api.securityContext.runAsUser, sidecar.securityContext.runAsUser,
      "the example shows an app with a uid of its own");
  });

  test("rolling updates bring a new pod up before an old one goes", () => {
    assert.equal(example.spec.strategy.rollingUpdate.maxUnavailable, 0);
    assert.ok(example.spec.strategy.rollingUpdate.maxSurge >= 1);
  });

  test("the fallback's replica count is the Deployment's", () => {
    const env = containerEnv(sidecarOf(example), exampleObjects);
    assert.equal(Number(env.get("RATE_LIMIT_EXPECTED_REPLICAS")), example.spec.replicas);
  });

  test("the sidecar image is the one the overlay names, tagged", () => {
    assert.match(sidecarOf(example).image, /^registry\.example\.com\/ratelimit-sidecar:\d+\.\d+\.\d+$/);
  });

  test("the PodMonitor scrapes the admin port of the injected pods", () => {
    const podMonitor = readOne(`${k8sDir}/monitoring/podmonitor.yaml`);
    const labels = example.spec.template.metadata.labels;
    for (const [key, value] of Object.entries(podMonitor.spec.selector.matchLabels)) {
      assert.equal(labels[key], value, `pod label ${key}`);
    }
    assert.equal(podMonitor.spec.selector.matchExpressions, undefined);
    const [endpoint] = podMonitor.spec.podMetricsEndpoints;
    assert.equal(endpoint.path, "/metrics");
    assert.equal(portNumber(sidecarOf(example), endpoint.port), 9464);
  });
});

describe("the component on other Deployments", () => {
  const config = find(applyComponent(componentDir, []), "ConfigMap", "ratelimit-sidecar-config");

  test("a minimal Deployment gets the sidecar, and its app container is left alone", async () => {
    const original = deployment("minimal");
    const objects = applyComponent(componentDir, [original]);
    const d = find(objects, "Deployment", "minimal");
    await validateObject(d);
    assertInjected(d, objects);
    assert.deepEqual(d.spec.template.spec.containers, original.spec.template.spec.containers,
      "the component cannot know the app container's name: the overlay adds its mount");
    assert.deepEqual(d.spec.selector, original.spec.selector, "the selector is immutable and untouched");
    assert.deepEqual(find(objects, "ConfigMap", "ratelimit-sidecar-config"), config);
  });

  test("init containers, volumes and security settings of the Deployment are kept", async () => {
    const original = deployment("busy", {
      podSpec: {
        securityContext: { runAsNonRoot: true, runAsUser: 2000, supplementalGroups: [3000] },
        initContainers: [{ name: "migrate", image: "registry.example.com/migrate:1" }],
        volumes: [{ name: "cache", emptyDir: {} }],
        terminationGracePeriodSeconds: 60,
      },
    });
    const d = find(applyComponent(componentDir, [original]), "Deployment", "busy");
    await validateObject(d);
    const pod = d.spec.template.spec;
    assert.deepEqual(pod.initContainers.map((c) => c.name), ["migrate", "ratelimit-sidecar"]);
    assert.deepEqual(pod.volumes.map((v) => v.name), ["cache", "ratelimit-socket"]);
    assert.deepEqual(pod.securityContext, { runAsNonRoot: true, runAsUser: 2000, supplementalGroups: [3000], fsGroup: 10001 });
    assert.equal(pod.terminationGracePeriodSeconds, 60);
  });

  test("a Deployment without the label is not touched", () => {
    const original = deployment("plain", { labels: { app: "plain" } });
    assert.deepEqual(find(applyComponent(componentDir, [original]), "Deployment", "plain"), original);
  });

  test("applying it to the example app Deployment alone injects the same sidecar", () => {
    const app = readOne(`${k8sDir}/example/deployment.yaml`);
    const d = find(applyComponent(componentDir, [app]), "Deployment", "example-api");
    const { image, ...rest } = sidecarOf(d);
    const { image: exampleImage, ...exampleRest } = sidecarOf(example);
    assert.deepEqual(rest, exampleRest);
    assert.equal(image.split(":")[1], exampleImage.split(":")[1], "the overlay changes the registry, not the version");
  });
});

describe("the checks themselves can fail", () => {
  test("a privileged, root, escalating container violates restricted", () => {
    const violations = restrictedViolations({
      containers: [{ name: "bad", image: "x", securityContext: { privileged: true, runAsUser: 0 } }],
      volumes: [{ name: "host", hostPath: { path: "/" } }],
    });
    for (const expected of ["privileged", "runAsUser 0", "allowPrivilegeEscalation", "runAsNonRoot", "seccompProfile", "drop ALL", "hostPath"]) {
      assert.ok(violations.some((v) => v.includes(expected)), `${expected} in ${violations.join("; ")}`);
    }
  });

  test("an init container without restartPolicy is not a native sidecar", () => {
    const d = structuredClone(example);
    delete sidecarOf(d).restartPolicy;
    assert.throws(() => assertInjected(d, exampleObjects), /restartPolicy Always/);
  });

  test("a probe on another port is caught", () => {
    const d = structuredClone(example);
    sidecarOf(d).livenessProbe.httpGet.port = 8080;
    assert.throws(() => assertInjected(d, exampleObjects), /livenessProbe port/);
  });

  test("strategic merge: maps merge, named lists merge by name, other lists and values are replaced", () => {
    const merged = strategicMerge(
      { a: { x: 1, y: 2 }, list: [{ name: "p", v: 1 }, { name: "q", v: 2 }], args: ["-a"], gone: 1 },
      { a: { y: 3 }, list: [{ name: "q", w: 3 }, { name: "r" }], args: ["-b"], gone: null },
    );
    assert.deepEqual(merged, {
      a: { x: 1, y: 3 },
      list: [{ name: "p", v: 1 }, { name: "q", v: 2, w: 3 }, { name: "r" }],
      args: ["-b"],
    });
    assert.throws(() => strategicMerge({}, { $patch: "delete" }), /not supported/);
  });
});
