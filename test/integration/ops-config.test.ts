// Malformed configuration stops `berth serve` with a message naming the key and a non-zero exit;
// `berth config check` shows the effective configuration and its sources.
import { chmodSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { tempDir } from "../helpers/server.js";
import { runBerth } from "./ops-support.js";

const dir = tempDir("berth-ops-config-");
function file(name: string, text: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
}

async function serveFails(args: string[], env: Record<string, string> = {}) {
  const result = await runBerth(["serve", "--addr", "127.0.0.1:0", "--workers", "1", ...args], env);
  expect(result.code).toBe(1);
  return result.stderr;
}

describe("berth serve refuses a bad configuration", () => {
  it("an unknown key in the file", async () => {
    const f = file(
      "unknown.yml",
      "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /tmp/x\nhttp:\n  adress: :5000\n",
    );
    const err = await serveFails(["--config", f]);
    expect(err).toContain(`http.adress (file ${f}): unknown key; http accepts: addr,`);
  });

  it("a bad type in the file", async () => {
    const f = file("type.yml", "storage:\n  delete:\n    enabled: sometimes\n");
    const err = await serveFails(["--config", f]);
    expect(err).toContain(`storage.delete.enabled (file ${f}): expected a boolean, got "sometimes"`);
  });

  it("a bad type in the environment, naming the variable", async () => {
    const err = await serveFails([], { REGISTRY_HTTP_DRAINTIMEOUT: "soon" });
    expect(err).toContain("http.draintimeout (env REGISTRY_HTTP_DRAINTIMEOUT)");
    expect(err).toContain("expected a duration");
  });

  it("a misspelt variable under a known section", async () => {
    const err = await serveFails([], { REGISTRY_STORAGE_FILESYSTEM_ROOTDIR: "/tmp/x" });
    expect(err).toContain('REGISTRY_STORAGE_FILESYSTEM_ROOTDIR: storage.filesystem has no key "rootdir"');
  });

  it("a file that does not exist, or cannot be read", async () => {
    const missing = path.join(dir, "missing.yml");
    expect(await serveFails(["--config", missing])).toContain(
      `cannot read configuration file ${missing}: no such file`,
    );
    expect(await serveFails(["--config", dir])).toContain("it is a directory");
    if (process.getuid?.() !== 0) {
      const locked = file("locked.yml", "log:\n  level: info\n");
      chmodSync(locked, 0);
      expect(await serveFails(["--config", locked])).toContain("permission denied");
    }
  });

  it("YAML that does not parse", async () => {
    const f = file("broken.yml", "http:\n  addr: [unclosed\n");
    expect(await serveFails(["--config", f])).toMatch(/invalid YAML: .*line \d+/);
  });

  it("CORS that would let any web site use the visitors' credentials", async () => {
    const f = file(
      "cors.yml",
      'http:\n  headers:\n    Access-Control-Allow-Origin: ["*"]\n    Access-Control-Allow-Credentials: ["true"]\n',
    );
    const err = await serveFails(["--config", f]);
    expect(err).toContain(`http.headers.Access-Control-Allow-Origin (file ${f})`);
    expect(err).toContain("any web site");
    expect(err).toContain("List the origins");
    const env = await serveFails([], {
      "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Origin": '["*"]',
      "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Credentials": "[true]",
    });
    expect(env).toContain("Access-Control-Allow-Credentials: true");
  });

  it("a storage driver Berth does not have", async () => {
    const err = await serveFails([], {
      REGISTRY_STORAGE: "azure",
      REGISTRY_STORAGE_AZURE_ACCOUNTNAME: "acct",
      REGISTRY_STORAGE_AZURE_CONTAINER: "images",
    });
    expect(err).toContain("storage.azure");
    expect(err).toContain("not implemented");
  });
});

describe("berth config check", () => {
  it("prints values, sources and masked secrets; exits 0", async () => {
    const f = file(
      "good.yml",
      "http:\n  addr: :5000\n  secret: do-not-print-me\nstorage:\n  delete:\n    enabled: true\n",
    );
    const result = await runBerth(["config", "check", "--config", f], { REGISTRY_LOG_LEVEL: "debug" });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`addr: :5000 # file ${f}`);
    expect(result.stdout).toContain("level: debug # env REGISTRY_LOG_LEVEL");
    expect(result.stdout).toContain('secret: "********"');
    expect(result.stdout).not.toContain("do-not-print-me");
  });

  // Issue 22: an S3 configuration checked where the bucket cannot be reached (before deploying).
  it("with storage.s3, probes the bucket, and with --offline does not", async () => {
    const f = file(
      "s3.yml",
      [
        "storage:",
        "  s3:",
        "    region: us-east-1",
        "    regionendpoint: http://127.0.0.1:9",
        "    bucket: nowhere",
        "    accesskey: a",
        "    secretkey: b",
        "    forcepathstyle: true",
        "",
      ].join("\n"),
    );
    const probed = await runBerth(["config", "check", "--quiet", "--config", f]);
    expect(probed.code).toBe(1);
    expect(probed.stderr).toContain("storage.s3: bucket nowhere is not reachable");
    const offline = await runBerth(["config", "check", "--quiet", "--offline", "--config", f]);
    expect(offline.stderr).not.toContain("not reachable");
    expect(offline.code).toBe(0);
  });

  it("exits 1 with the problems on an invalid configuration", async () => {
    const f = file("bad.yml", "log:\n  level: loud\n");
    const result = await runBerth(["config", "check", "--config", f]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`log.level (file ${f})`);
    expect(result.stderr).toContain("trace");
  });
});
