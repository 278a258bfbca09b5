import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Command } from "commander";
import { afterAll, describe, expect, it } from "vitest";
import { registerConfigCommand } from "../../src/cli/commands.js";
import { formatDuration, runConfigCheck } from "../../src/cli/config.js";
import { MASK, maskSecrets, maskUrlPassword } from "../../src/config/provenance.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "berth-config-check-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(opts: Parameters<typeof runConfigCheck>[0], env: NodeJS.ProcessEnv = {}) {
  let out = "";
  let err = "";
  const code = runConfigCheck(opts, {
    stdout: (t) => {
      out += t;
    },
    stderr: (t) => {
      err += t;
    },
    env,
    defaultFiles: [],
  });
  return { code, out, err };
}

describe("berth config check", () => {
  const file = path.join(dir, "config.yml");
  writeFileSync(
    file,
    "version: 0.1\nhttp:\n  secret: s3cr3t-value\n  addr: :5000\nredis:\n  addr: redis:6379\n  password: hunter2\nauth:\n  htpasswd:\n    realm: Registry\n    path: /auth/htpasswd\n",
  );

  it("prints every value with its source and masks secrets", () => {
    const { code, out, err } = run({ config: file }, { REGISTRY_STORAGE_DELETE_ENABLED: "false" });
    expect(code).toBe(0);
    expect(out).toContain(`# file: ${file}`);
    expect(out).toContain(`addr: :5000 # file ${file}`);
    expect(out).toContain("enabled: false # env REGISTRY_STORAGE_DELETE_ENABLED");
    expect(out).toContain("draintimeout: 30s # default");
    expect(out).toContain(`secret: "${MASK}" # file ${file}`);
    expect(out).not.toContain("s3cr3t-value");
    expect(out).not.toContain("hunter2");
    expect(err).toContain("warning: not implemented: redis");
  });

  it("--json gives the configuration, the sources and the warnings", () => {
    const { code, out } = run({ config: file, json: true });
    expect(code).toBe(0);
    const parsed = JSON.parse(out);
    expect(parsed.valid).toBe(true);
    expect(parsed.file).toBe(file);
    expect(parsed.config.http.secret).toBe(MASK);
    expect(parsed.config.auth.htpasswd.path).toBe("/auth/htpasswd");
    expect(parsed.sources["http.addr"]).toBe(`file ${file}`);
    expect(parsed.sources["log.level"]).toBe("default");
    expect(parsed.warnings.length).toBeGreaterThan(0);
  });

  it("exits 1 and names the problem when the configuration is invalid", () => {
    const bad = path.join(dir, "bad.yml");
    writeFileSync(bad, "storage:\n  delete:\n    enabled: perhaps\nhttp:\n  adr: :5000\n");
    const { code, out, err } = run({ config: bad });
    expect(code).toBe(1);
    expect(out).toBe("");
    expect(err).toContain("berth: invalid configuration:");
    expect(err).toContain("http.adr");
    expect(err).toContain("unknown key");
    const missing = run({ config: path.join(dir, "nope.yml") });
    expect(missing.code).toBe(1);
    expect(missing.err).toContain("cannot read configuration file");
  });

  it("is registered as `config check` on a commander program", async () => {
    const program = new Command().exitOverride();
    registerConfigCommand(program);
    const check = program.commands
      .find((c) => c.name() === "config")
      ?.commands.find((c) => c.name() === "check");
    expect(check?.options.map((o) => o.long)).toEqual(["--config", "--json", "--quiet", "--offline"]);
  });
});

describe("masking", () => {
  it("masks secret-looking keys at any depth, and passwords in URLs", () => {
    const masked = maskSecrets({
      http: { secret: "x", host: "https://r.example.com" },
      auth: { token: { realm: "https://auth/token", service: "svc" }, htpasswd: { path: "/auth/htpasswd" } },
      proxy: { remoteurl: "https://registry-1.docker.io", username: "u", password: "p" },
      notifications: { endpoints: [{ headers: { Authorization: ["Bearer abc"] } }] },
      database: { url: "postgres://berth:pw@db:5432/berth" },
      s3: { accesskey: "AKIA", secretkey: "zzz" },
    }) as Record<string, Record<string, unknown>>;
    expect(masked.http).toEqual({ secret: MASK, host: "https://r.example.com" });
    expect(masked.auth).toEqual({
      token: { realm: "https://auth/token", service: "svc" },
      htpasswd: { path: "/auth/htpasswd" },
    });
    expect(masked.proxy?.password).toBe(MASK);
    expect(masked.proxy?.username).toBe("u");
    expect(JSON.stringify(masked.notifications)).toContain(MASK);
    expect(masked.database?.url).toBe(`postgres://berth:${MASK}@db:5432/berth`);
    expect(masked.s3).toEqual({ accesskey: MASK, secretkey: MASK });
    expect(maskUrlPassword("https://example.com/a:b@c")).toBe("https://example.com/a:b@c");
  });
});

describe("durations", () => {
  it("are shown the way they are written", () => {
    expect(formatDuration(0)).toBe("0s");
    expect(formatDuration(168 * 3_600_000)).toBe("168h");
    expect(formatDuration(90_000)).toBe("1m30s");
    expect(formatDuration(250)).toBe("250ms");
    expect(formatDuration(3_723_500)).toBe("1h2m3s500ms");
  });
});
