import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runConfigCheck } from "../../src/cli/config.js";
import { loadConfig } from "../../src/config/load.js";
import { databaseTarget, describeTarget } from "../../src/metadata/target.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "berth-config-db-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function load(yaml: string, env: Record<string, string> = {}) {
  const file = path.join(dir, `c-${Math.random().toString(36).slice(2)}.yml`);
  writeFileSync(file, yaml);
  return loadConfig({ file, env, defaultFiles: [] }).config;
}

describe("database configuration", () => {
  it("is SQLite when nothing names a PostgreSQL server", () => {
    expect(databaseTarget(load("version: 0.1\n").database)).toEqual({ kind: "sqlite" });
  });

  it("takes REGISTRY_DATABASE_URL", () => {
    const config = load("version: 0.1\n", { REGISTRY_DATABASE_URL: "postgres://u:pw@db.example:6543/reg" });
    const target = databaseTarget(config.database);
    expect(target.kind).toBe("postgres");
    if (target.kind !== "postgres") return;
    expect(target.pool.connectionString).toBe("postgres://u:pw@db.example:6543/reg");
    expect(target.pool.max).toBe(10);
    expect(describeTarget(target, "/data")).toBe("postgresql db.example:6543/reg");
  });

  it("takes GitLab's keys and REGISTRY_DATABASE_* variables", () => {
    const config = load(
      [
        "database:",
        "  enabled: true",
        "  host: pg.internal",
        "  port: 5433",
        "  user: registry",
        "  password: from-file",
        "  dbname: registry_production",
        "  sslmode: disable",
        "  connecttimeout: 5s",
        "  pool:",
        "    maxopen: 25",
        "    maxidle: 5",
        "    maxlifetime: 30m",
      ].join("\n"),
      { REGISTRY_DATABASE_PASSWORD: "from-env", REGISTRY_DATABASE_POOL_MAXIDLETIME: "20s" },
    );
    const target = databaseTarget(config.database);
    expect(target).toEqual({
      kind: "postgres",
      pool: {
        host: "pg.internal",
        port: 5433,
        user: "registry",
        password: "from-env",
        database: "registry_production",
        ssl: false,
        connectionTimeoutMillis: 5000,
        max: 25,
        maxLifetimeSeconds: 1800,
        idleTimeoutMillis: 20_000,
        application_name: "berth",
      },
    });
  });

  it("enabled: false keeps SQLite even with a URL", () => {
    const config = load("database:\n  enabled: false\n  url: postgres://h/db\n");
    expect(databaseTarget(config.database).kind).toBe("sqlite");
  });

  it("refuses a URL that is not PostgreSQL's", () => {
    expect(() => load("database:\n  url: mysql://h/db\n")).toThrow(/PostgreSQL URL/);
  });

  it("`berth config check` masks the password and the URL's password", () => {
    const file = path.join(dir, "check.yml");
    writeFileSync(file, "database:\n  url: postgres://u:url-secret@h/db\n  password: key-secret\n");
    let out = "";
    const code = runConfigCheck(
      { config: file },
      {
        stdout: (t) => {
          out += t;
        },
        stderr: () => {},
        env: {},
        defaultFiles: [],
      },
    );
    expect(code).toBe(0);
    expect(out).toContain("database:");
    expect(out).not.toContain("url-secret");
    expect(out).not.toContain("key-secret");
  });
});
