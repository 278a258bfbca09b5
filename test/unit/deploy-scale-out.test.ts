// The scale-out deployment examples (deploy/compose-postgres.yaml, deploy/k8s-replicas/) as files:
// no cluster runs here, so check that they parse, that Berth accepts their configuration, and that
// they have what several replicas need (PostgreSQL, shared blobs, more than one replica).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import YAML from "yaml";
import { loadConfig } from "../../src/config/load.js";
import { databaseTarget } from "../../src/metadata/target.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const read = (p: string) => readFileSync(path.join(ROOT, p), "utf8");

interface ComposeService {
  image?: string;
  deploy?: { replicas?: number };
  depends_on?: Record<string, { condition?: string }> | string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
}

describe("deploy/compose-postgres.yaml", () => {
  const compose = YAML.parse(read("deploy/compose-postgres.yaml")) as {
    services: Record<string, ComposeService>;
    volumes: Record<string, unknown>;
  };
  const registry = compose.services.registry!;

  it("runs PostgreSQL 15 with a health check the replicas wait for", () => {
    expect(compose.services.postgres?.image).toMatch(/^postgres:15/);
    expect((registry.depends_on as Record<string, { condition?: string }>).postgres?.condition).toBe(
      "service_healthy",
    );
  });

  it("runs several replicas on one database and one blob volume, behind one port", () => {
    expect(registry.deploy?.replicas).toBeGreaterThanOrEqual(2);
    expect(registry.ports).toBeUndefined();
    expect(compose.services.balancer?.ports).toEqual(["5000:5000"]);
    expect(registry.volumes).toContain("registry-data:/var/lib/registry");
    expect(Object.keys(compose.volumes)).toEqual(expect.arrayContaining(["registry-data", "postgres-data"]));
  });

  it("gives Berth a configuration it accepts, on PostgreSQL", () => {
    // Compose substitutes ${POSTGRES_PASSWORD}; do the same.
    const env = Object.fromEntries(
      Object.entries(registry.environment!).map(([k, v]) => [
        k,
        String(v).replace(/\$\{POSTGRES_PASSWORD[^}]*\}/g, "secret"),
      ]),
    );
    const { config, warnings } = loadConfig({ env, defaultFiles: [] });
    expect(warnings).toEqual([]);
    const target = databaseTarget(config.database);
    expect(target.kind).toBe("postgres");
    if (target.kind === "postgres") {
      expect(new URL(target.pool.connectionString!).hostname).toBe("postgres");
      expect(target.pool.max).toBe(10);
    }
    expect(config.storage.filesystem.rootdirectory).toBe("/var/lib/registry");
  });
});

describe("deploy/k8s-replicas", () => {
  const dir = "deploy/k8s-replicas";
  const kustomization = YAML.parse(read(`${dir}/kustomization.yaml`)) as { resources: string[] };
  // biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects
  const docs = kustomization.resources.map((r) => YAML.parse(read(`${dir}/${r}`)) as any);
  const byKind = (kind: string) => docs.find((d) => d.kind === kind);

  it("lists only files that exist", () => {
    for (const r of kustomization.resources) expect(existsSync(path.join(ROOT, dir, r)), r).toBe(true);
    expect(docs.map((d) => d.kind).sort()).toEqual(
      ["ConfigMap", "Deployment", "PersistentVolumeClaim", "PodDisruptionBudget", "Service"].sort(),
    );
  });

  it("runs several replicas with rolling updates on a ReadWriteMany blob volume", () => {
    const deployment = byKind("Deployment");
    expect(deployment.spec.replicas).toBeGreaterThanOrEqual(2);
    expect(deployment.spec.strategy.type).toBe("RollingUpdate");
    expect(byKind("PersistentVolumeClaim").spec.accessModes).toEqual(["ReadWriteMany"]);
    expect(byKind("PodDisruptionBudget").spec.minAvailable).toBeLessThan(deployment.spec.replicas);
    const claim = deployment.spec.template.spec.volumes.find((v: { name: string }) => v.name === "blobs");
    expect(claim.persistentVolumeClaim.claimName).toBe(byKind("PersistentVolumeClaim").metadata.name);
  });

  it("takes the database password from a Secret and probes /readyz", () => {
    const container = byKind("Deployment").spec.template.spec.containers[0];
    const password = container.env.find((e: { name: string }) => e.name === "REGISTRY_DATABASE_PASSWORD");
    expect(password.valueFrom.secretKeyRef).toEqual({ name: "berth-database", key: "password" });
    expect(container.readinessProbe.httpGet.path).toBe("/readyz");
    const service = byKind("Service");
    expect(service.spec.selector).toEqual(byKind("Deployment").spec.selector.matchLabels);
  });

  it("has a config.yml that Berth accepts, on PostgreSQL with GitLab's keys", () => {
    const text = byKind("ConfigMap").data["config.yml"] as string;
    const tmp = mkdtempSync(path.join(os.tmpdir(), "berth-k8s-replicas-"));
    try {
      const file = path.join(tmp, "config.yml");
      writeFileSync(file, text);
      const { config, warnings } = loadConfig({
        file,
        env: { REGISTRY_DATABASE_PASSWORD: "from-secret" },
        defaultFiles: [],
      });
      expect(warnings).toEqual([]);
      const target = databaseTarget(config.database);
      expect(target.kind).toBe("postgres");
      if (target.kind === "postgres") {
        expect(target.pool).toMatchObject({
          host: "berth-postgres-rw",
          user: "berth",
          database: "berth",
          password: "from-secret",
          max: 10,
        });
        expect(target.pool.ssl).toEqual({ rejectUnauthorized: false });
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
