// docs/configuration.md lists every key, and the configurations shipped in deploy/ are valid.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import YAML from "yaml";
import type { z } from "zod";
import { expected } from "../../src/config/introspect.js";
import { loadConfig } from "../../src/config/load.js";
import { configSchema } from "../../src/config/schema.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const read = (p: string) => readFileSync(path.join(ROOT, p), "utf8");

function keys(schema: z.ZodType, prefix: string[] = []): string[] {
  const e = expected(schema);
  if (e.kind === "object") return Object.entries(e.fields).flatMap(([k, v]) => keys(v, [...prefix, k]));
  return [prefix.join(".")];
}

describe("docs/configuration.md", () => {
  it("names every configuration key", () => {
    const doc = read("docs/configuration.md");
    const missing = keys(configSchema).filter((k) => !doc.includes(`\`${k}\``));
    expect(missing).toEqual([]);
  });
});

describe("configurations shipped in deploy/", () => {
  const load = (text: string, env: Record<string, string> = {}) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "berth-deploy-config-"));
    const file = path.join(dir, "config.yml");
    writeFileSync(file, text);
    try {
      return loadConfig({ file, env, defaultFiles: [] });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it("the image's /etc/berth/config.yml", () => {
    const { config, warnings } = load(read("deploy/config.yml"));
    expect(warnings).toEqual([]);
    expect(config.storage.filesystem.rootdirectory).toBe("/var/lib/registry");
    expect(config.http.addr).toBe(":5000");
  });

  it("the Kubernetes ConfigMap's config.yml, with probes on /healthz and /readyz", () => {
    const cm = YAML.parse(read("deploy/k8s/configmap.yaml")) as { data: Record<string, string> };
    const { config, warnings } = load(cm.data["config.yml"]!);
    expect(warnings).toEqual([]);
    expect(config.metrics.addr).toBe(":9090");
    const deployment = YAML.parse(read("deploy/k8s/deployment.yaml")) as {
      spec: { template: { spec: { containers: Record<string, { httpGet: { path: string } }>[] } } };
    };
    const container = deployment.spec.template.spec.containers[0]!;
    expect(container.livenessProbe?.httpGet.path).toBe("/healthz");
    expect(container.readinessProbe?.httpGet.path).toBe("/readyz");
  });

  it("the compose file's environment", () => {
    const compose = YAML.parse(read("deploy/compose.yaml")) as {
      services: Record<string, { environment?: Record<string, string> }>;
    };
    const env = compose.services.registry!.environment!;
    const { config, warnings } = loadConfig({ env, defaultFiles: [] });
    expect(warnings).toEqual([]);
    expect(config.auth.htpasswd?.path).toBe("/auth/htpasswd");
    expect(config.http.headers["Access-Control-Allow-Origin"]).toEqual(["http://localhost:8080"]);
    expect(config.http.trustedproxies).toContain("172.16.0.0/12");
  });
});
