// The scale-out deployment examples (deploy/compose-postgres.yaml, deploy/compose-replicas.yaml,
// deploy/k8s-replicas/) as files: no cluster runs here, so check that they parse, that Berth accepts
// their configuration, that nginx accepts the balancer's, and that they have what several replicas need
// (PostgreSQL, shared blobs, more than one replica, secrets by reference).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
      ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"].sort(),
    );
  });

  it("runs three replicas with rolling updates, each with a scratch directory of its own", () => {
    const deployment = byKind("Deployment");
    expect(deployment.spec.replicas).toBe(3);
    expect(deployment.spec.strategy.type).toBe("RollingUpdate");
    expect(byKind("PodDisruptionBudget").spec.minAvailable).toBeLessThan(deployment.spec.replicas);
    const scratch = deployment.spec.template.spec.volumes.find((v: { name: string }) => v.name === "scratch");
    expect(scratch.emptyDir).toBeDefined();
    const mount = deployment.spec.template.spec.containers[0].volumeMounts.find(
      (m: { name: string }) => m.name === "scratch",
    );
    expect(mount.mountPath).toBe("/var/lib/registry");
  });

  it("takes the S3 keys from a Secret, by reference", () => {
    const container = byKind("Deployment").spec.template.spec.containers[0];
    const ref = (name: string) =>
      container.env.find((e: { name: string }) => e.name === name)?.valueFrom?.secretKeyRef;
    expect(ref("REGISTRY_STORAGE_S3_ACCESSKEY")).toEqual({ name: "berth-s3", key: "accesskey" });
    expect(ref("REGISTRY_STORAGE_S3_SECRETKEY")).toEqual({ name: "berth-s3", key: "secretkey" });
    expect(container.env.every((e: { value?: string }) => e.value === undefined)).toBe(true);
    expect(byKind("ConfigMap").data["config.yml"]).not.toMatch(/accesskey:|secretkey:|password:/);
  });

  it("takes the database password from a Secret and probes /readyz", () => {
    const container = byKind("Deployment").spec.template.spec.containers[0];
    const password = container.env.find((e: { name: string }) => e.name === "REGISTRY_DATABASE_PASSWORD");
    expect(password.valueFrom.secretKeyRef).toEqual({ name: "berth-database", key: "password" });
    expect(container.readinessProbe.httpGet.path).toBe("/readyz");
    const service = byKind("Service");
    expect(service.spec.selector).toEqual(byKind("Deployment").spec.selector.matchLabels);
  });

  it("has a config.yml that Berth accepts, on PostgreSQL with GitLab's keys and S3", () => {
    const text = byKind("ConfigMap").data["config.yml"] as string;
    const tmp = mkdtempSync(path.join(os.tmpdir(), "berth-k8s-replicas-"));
    try {
      const file = path.join(tmp, "config.yml");
      writeFileSync(file, text);
      const { config, warnings } = loadConfig({
        file,
        env: {
          REGISTRY_DATABASE_PASSWORD: "from-secret",
          REGISTRY_STORAGE_S3_ACCESSKEY: "key-from-secret",
          REGISTRY_STORAGE_S3_SECRETKEY: "secret-from-secret",
        },
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
      expect(config.storage.s3).toMatchObject({
        bucket: "berth-registry",
        region: "eu-west-1",
        accesskey: "key-from-secret",
        secretkey: "secret-from-secret",
      });
      expect(config.storage.filesystem.rootdirectory).toBe("/var/lib/registry");
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe("deploy/compose-replicas.yaml", () => {
  const compose = YAML.parse(read("deploy/compose-replicas.yaml"), { merge: true }) as {
    services: Record<string, ComposeService & { tmpfs?: string[] }>;
    volumes: Record<string, unknown>;
  };
  const replicas = ["registry-1", "registry-2", "registry-3"].map((name) => compose.services[name]!);
  const substitute = (env: Record<string, string>) =>
    Object.fromEntries(
      Object.entries(env).map(([k, v]) => [
        k,
        String(v)
          .replace(/\$\{POSTGRES_PASSWORD[^}]*\}/g, "pg-secret")
          .replace(/\$\{MINIO_ROOT_PASSWORD[^}]*\}/g, "s3-secret"),
      ]),
    );

  it("runs three identical replicas, with no port of their own, behind nginx on one port", () => {
    for (const r of replicas) {
      expect(r.environment).toEqual(replicas[0]!.environment);
      expect(r.ports).toBeUndefined();
      expect((r.depends_on as Record<string, { condition?: string }>).postgres?.condition).toBe(
        "service_healthy",
      );
      expect(r.tmpfs).toEqual(["/var/lib/registry"]);
    }
    expect(compose.services.postgres?.image).toMatch(/^postgres:15/);
    expect(compose.services.minio?.image).toMatch(/^minio\//);
    expect(compose.services.balancer?.image).toMatch(/^nginx/);
    expect(compose.services.balancer?.ports).toEqual(["5000:5000"]);
    expect(compose.services.balancer?.volumes).toContain(
      "./compose/nginx-replicas.conf:/etc/nginx/conf.d/default.conf:ro",
    );
  });

  it("gives Berth a configuration it accepts, on PostgreSQL and the bucket, secrets from the environment", () => {
    const { config, warnings } = loadConfig({ env: substitute(replicas[0]!.environment!), defaultFiles: [] });
    expect(warnings).toEqual([]);
    const target = databaseTarget(config.database);
    expect(target.kind).toBe("postgres");
    if (target.kind === "postgres") expect(new URL(target.pool.connectionString!).hostname).toBe("postgres");
    expect(config.storage.s3).toMatchObject({
      bucket: "registry",
      regionendpoint: "http://minio:9000",
      forcepathstyle: true,
      secretkey: "s3-secret",
    });
    expect(config.http.workers).toBe(1);
    // No literal secret in the file: each comes from the operator's environment.
    expect(read("deploy/compose-replicas.yaml")).not.toMatch(/PASSWORD: (?!\$\{)/);
  });

  it("balances over the three replicas with an nginx configuration that nginx accepts", () => {
    const conf = read("deploy/compose/nginx-replicas.conf");
    const upstream = conf.match(/upstream berth \{([^}]*)\}/)![1]!;
    expect([...upstream.matchAll(/server (registry-\d):5000/g)].map((m) => m[1])).toEqual([
      "registry-1",
      "registry-2",
      "registry-3",
    ]);
    const directives = conf.replace(/#.*$/gm, "");
    expect(directives).not.toMatch(/ip_hash|sticky|hash /);
    for (const line of ["client_max_body_size 0;", "proxy_request_buffering off;", "proxy_buffering off;"])
      expect(conf).toContain(line);
    // nginx -t on it, inside a minimal main configuration; the compose host names resolve to loopback.
    const tmp = mkdtempSync(path.join(os.tmpdir(), "berth-nginx-t-"));
    try {
      mkdirSync(path.join(tmp, "logs"));
      writeFileSync(path.join(tmp, "default.conf"), conf.replace(/registry-(\d):5000/g, "127.0.0.$1:5000"));
      writeFileSync(
        path.join(tmp, "nginx.conf"),
        `pid ${tmp}/nginx.pid;\nerror_log ${tmp}/logs/error.log;\nevents {}\nhttp {\n  include ${tmp}/default.conf;\n}\n`,
      );
      execFileSync(
        "nginx",
        ["-t", "-q", "-p", tmp, "-c", path.join(tmp, "nginx.conf"), "-e", `${tmp}/logs/error.log`],
        {
          stdio: "pipe",
        },
      );
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
