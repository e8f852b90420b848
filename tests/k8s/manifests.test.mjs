// Every YAML document in k8s/ is valid against the Kubernetes API schemas, or is a
// kustomization whose references exist, or a patch a kustomization applies; nothing is orphaned.
// Each overlay renders to valid objects, the same as `kubectl kustomize` where kubectl exists.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { describe, test } from "node:test";
import { YAML } from "./lib/deps.mjs";
import { build, readKustomization } from "./lib/kustomize.mjs";
import { k8sDir, listFiles, readDocuments, rel, yamlFiles } from "./lib/repo.mjs";
import { checkPatchFields, validateObject } from "./lib/schema.mjs";

const kustomizationDirs = yamlFiles()
  .filter((path) => basename(path) === "kustomization.yaml")
  .map((path) => dirname(path));
const kustomizations = kustomizationDirs.map((dir) => readKustomization(dir));
const overlays = kustomizations.filter((k) => k.kind === "Kustomization");
const patchFiles = new Set(kustomizations.flatMap((k) => k.refs.patches));

describe("every YAML document in k8s/", () => {
  test("k8s/ has the overlays and the component", () => {
    assert.deepEqual(
      kustomizationDirs.map(rel).sort(),
      ["k8s/components/ratelimit-sidecar", "k8s/example", "k8s/monitoring", "k8s/schema"],
    );
  });

  for (const path of yamlFiles()) {
    test(`${rel(path)} is valid`, async () => {
      const docs = readDocuments(path);
      assert.ok(docs.length > 0, "an empty file");
      if (basename(path) === "kustomization.yaml") {
        readKustomization(dirname(path)); // Throws on unknown fields or missing references.
      } else if (patchFiles.has(path)) {
        for (const patch of docs) checkPatchFields(patch);
      } else {
        for (const doc of docs) await validateObject(doc);
      }
    });
  }

  test("every file in k8s/ is used by a kustomization (or is the README)", () => {
    const used = new Set([join(k8sDir, "README.md")]);
    for (const k of kustomizations) {
      used.add(k.file);
      for (const list of Object.values(k.refs)) for (const path of list) used.add(path);
    }
    const orphans = listFiles(k8sDir).filter((path) => !used.has(path)).map(rel);
    assert.deepEqual(orphans, []);
  });

  test("the component is a Component and is used by an overlay, resources are not components", () => {
    for (const k of kustomizations) {
      for (const dir of k.refs.components) assert.equal(readKustomization(dir).kind, "Component");
      for (const path of k.refs.resources) {
        if (existsSync(join(path, "kustomization.yaml"))) {
          assert.equal(readKustomization(path).kind, "Kustomization", `${rel(path)} as a resource`);
        }
      }
    }
    assert.ok(overlays.some((k) => k.refs.components.some((d) => d.endsWith("components/ratelimit-sidecar"))));
  });
});

describe("the validation itself can fail", () => {
  const deployment = () => ({
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "x" },
    spec: {
      selector: { matchLabels: { app: "x" } },
      template: {
        metadata: { labels: { app: "x" } },
        spec: { containers: [{ name: "x", image: "x:1" }] },
      },
    },
  });

  test("a valid Deployment passes", async () => {
    await validateObject(deployment());
  });

  test("a misspelled field is refused", async () => {
    const d = deployment();
    d.spec.template.spec.containers[0].readinesProbe = { httpGet: { path: "/", port: 80 } };
    await assert.rejects(validateObject(d), /unknown fields: \.spec\.template\.spec\.containers\[0\]\.readinesProbe/);
  });

  test("a value of the wrong type is refused", async () => {
    const d = deployment();
    d.spec.replicas = "three";
    await assert.rejects(validateObject(d), /replicas/);
  });

  test("a missing required field is refused", async () => {
    const d = deployment();
    delete d.spec.template.spec.containers[0].name;
    await assert.rejects(validateObject(d), /name/);
  });

  test("an unknown apiVersion is refused", async () => {
    await assert.rejects(validateObject({ apiVersion: "example.com/v1", kind: "Thing", metadata: { name: "x" } }), /no schema/);
  });

  test("a PodMonitor without endpoints is refused", async () => {
    const pm = { apiVersion: "monitoring.coreos.com/v1", kind: "PodMonitor", metadata: { name: "x" }, spec: { selector: {} } };
    await assert.rejects(validateObject(pm), /podMetricsEndpoints/);
  });
});

describe("rendered overlays", () => {
  for (const k of overlays) {
    test(`${rel(k.dir)} renders to valid objects`, async () => {
      const objects = build(k.dir);
      assert.ok(objects.length > 0);
      for (const object of objects) await validateObject(object);
    });
  }

  const kubectl = (() => {
    try {
      execFileSync("kubectl", ["version", "--client"], { stdio: "ignore", timeout: 10_000 });
      return true;
    } catch {
      return false;
    }
  })();
  for (const k of overlays) {
    test(`${rel(k.dir)} renders as kubectl kustomize does`, { skip: kubectl ? false : "kubectl is not installed" }, () => {
      const output = execFileSync("kubectl", ["kustomize", k.dir], { encoding: "utf8", timeout: 30_000 });
      const theirs = YAML.parseAllDocuments(output).map((doc) => doc.toJS());
      const key = (o) => `${o.apiVersion} ${o.kind} ${o.metadata.name}`;
      const sort = (list) => [...list].sort((a, b) => key(a).localeCompare(key(b)));
      assert.deepEqual(sort(build(k.dir)), sort(theirs));
    });
  }
});
