import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, type LoadOptions, loadConfig } from "../../src/config/load.js";
import { maskSecrets } from "../../src/config/provenance.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "berth-config-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function file(text: string): string {
  const p = path.join(dir, `config-${n++}.yml`);
  writeFileSync(p, text);
  return p;
}

function load(options: LoadOptions = {}) {
  return loadConfig({ env: {}, defaultFiles: [], ...options });
}

function problems(options: LoadOptions): string[] {
  try {
    load(options);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("expected the configuration to be refused");
}

describe("defaults", () => {
  it("starts from Distribution's defaults where it has them", () => {
    const { config, warnings, file: used, sources } = load();
    expect(config.http.addr).toBe("0.0.0.0:5000");
    expect(config.storage.delete.enabled).toBe(false);
    expect(config.storage.maintenance.readonly.enabled).toBe(false);
    expect(config.metrics).toEqual({ enabled: true, path: "/metrics", users: [] });
    expect(warnings).toEqual([]);
    expect(used).toBeUndefined();
    expect(sources["http.addr"]).toEqual({ kind: "default" });
  });
});

describe("registry:2 recipe environments", () => {
  it("htpasswd auth, a root directory, delete and a UI's CORS headers", () => {
    const { config, sources, warnings } = load({
      env: {
        REGISTRY_AUTH: "htpasswd",
        REGISTRY_AUTH_HTPASSWD_REALM: "Registry Realm",
        REGISTRY_AUTH_HTPASSWD_PATH: "/auth/htpasswd",
        REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: "/data",
        REGISTRY_STORAGE_DELETE_ENABLED: "true",
        REGISTRY_HTTP_SECRET: "asecretforlocaldevelopment",
        "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Origin": "[http://registry.example.com]",
        "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Methods": "[HEAD,GET,OPTIONS,DELETE]",
        "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Credentials": "[true]",
        "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Headers": "[Authorization,Accept,Cache-Control]",
        "REGISTRY_HTTP_HEADERS_Access-Control-Expose-Headers": "[Docker-Content-Digest]",
        PATH: "/usr/bin",
      },
    });
    expect(config.auth.htpasswd).toEqual({ realm: "Registry Realm", path: "/auth/htpasswd" });
    expect(config.storage.filesystem.rootdirectory).toBe("/data");
    expect(config.storage.delete.enabled).toBe(true);
    expect(config.http.secret).toBe("asecretforlocaldevelopment");
    expect(config.http.headers).toEqual({
      "Access-Control-Allow-Origin": ["http://registry.example.com"],
      "Access-Control-Allow-Methods": ["HEAD", "GET", "OPTIONS", "DELETE"],
      "Access-Control-Allow-Credentials": ["true"],
      "Access-Control-Allow-Headers": ["Authorization", "Accept", "Cache-Control"],
      "Access-Control-Expose-Headers": ["Docker-Content-Digest"],
    });
    expect(sources["auth.htpasswd.path"]).toEqual({ kind: "env", name: "REGISTRY_AUTH_HTPASSWD_PATH" });
    expect(sources["http.headers.Access-Control-Allow-Origin"]).toEqual({
      kind: "env",
      name: "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Origin",
    });
    expect(warnings).toEqual([]);
  });

  it("REGISTRY_STORAGE=filesystem names the driver and keeps delete and maintenance", () => {
    const f = file(
      "storage:\n  filesystem:\n    rootdirectory: /srv/registry\n  delete:\n    enabled: true\n",
    );
    const { config } = load({
      file: f,
      env: { REGISTRY_STORAGE: "filesystem", REGISTRY_STORAGE_MAINTENANCE_READONLY: "{enabled: true}" },
    });
    expect(config.storage.filesystem.rootdirectory).toBe("/srv/registry");
    expect(config.storage.delete.enabled).toBe(true);
    expect(config.storage.maintenance.readonly.enabled).toBe(true);
  });

  it("REGISTRY_STORAGE=s3 keeps the file's data directory (the database stays in the image's volume)", () => {
    // The image's configuration, as deploy/config.yml: the data directory is the volume.
    const f = file(
      "storage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n    distributionlinks: true\n",
    );
    const { config } = load({
      file: f,
      env: {
        REGISTRY_STORAGE: "s3",
        REGISTRY_STORAGE_S3_REGION: "us-east-1",
        REGISTRY_STORAGE_S3_BUCKET: "b",
      },
    });
    expect(config.storage.s3?.bucket).toBe("b");
    expect(config.storage.filesystem.rootdirectory).toBe("/var/lib/registry");
    // Only the directory: the filesystem driver's own keys go with the driver.
    expect(config.storage.filesystem.distributionlinks).toBeUndefined();
  });

  it("REGISTRY_AUTH=htpasswd replaces the file's authentication method (exactly one, as registry:2)", () => {
    const f = file(
      "auth:\n  token:\n    realm: https://auth.example.com/token\n    service: reg\n    issuer: me\n    rootcertbundle: /certs/bundle.pem\n",
    );
    const { config } = load({
      file: f,
      env: { REGISTRY_AUTH: "htpasswd", REGISTRY_AUTH_HTPASSWD_PATH: "/auth/htpasswd" },
    });
    expect(config.auth.token).toBeUndefined();
    expect(config.auth.htpasswd?.path).toBe("/auth/htpasswd");
  });

  it("a header from the environment replaces the file's header of the same name in any case", () => {
    const f = file(
      "http:\n  headers:\n    X-Content-Type-Options: [nosniff]\n    Access-Control-Allow-Origin: ['*']\n",
    );
    const { config, sources } = load({
      file: f,
      env: { "REGISTRY_HTTP_HEADERS_ACCESS-CONTROL-ALLOW-ORIGIN": "['https://ui.example.com']" },
    });
    expect(config.http.headers).toEqual({
      "X-Content-Type-Options": ["nosniff"],
      "Access-Control-Allow-Origin": ["https://ui.example.com"],
    });
    expect(sources["http.headers.X-Content-Type-Options"]).toEqual({ kind: "file", file: f });
  });

  it("reads values as YAML 1.1, like registry:2's Go decoder", () => {
    const { config } = load({
      env: {
        REGISTRY_STORAGE_DELETE_ENABLED: "yes",
        REGISTRY_HTTP_RELATIVEURLS: "on",
        REGISTRY_HTTP_SECRET: "0123",
        REGISTRY_HTTP_ADDR: ":5000",
        REGISTRY_LOG_LEVEL: "WARNING",
        REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE: "12h",
      },
    });
    expect(config.storage.delete.enabled).toBe(true);
    expect(config.http.relativeurls).toBe(true);
    expect(config.http.secret).toBe("0123");
    expect(config.http.addr).toBe(":5000");
    expect(config.log.level).toBe("warn");
    expect(config.storage.maintenance.uploadpurging.age).toBe(12 * 3_600_000);
  });

  it("an empty variable unsets the key", () => {
    const f = file("http:\n  host: https://r.example.com\n");
    const { config, sources } = load({ file: f, env: { REGISTRY_HTTP_HOST: "" } });
    expect(config.http.host).toBeUndefined();
    expect(sources["http.host"]).toBeUndefined();
  });

  it("warns about, and otherwise ignores, REGISTRY_* variables that are not configuration (Kubernetes service links)", () => {
    const { warnings } = load({
      env: {
        REGISTRY_PORT: "tcp://10.0.0.1:5000",
        REGISTRY_SERVICE_HOST: "10.0.0.1",
        REGISTRY_PORT_5000_TCP_ADDR: "x",
      },
    });
    expect(warnings).toHaveLength(3);
    expect(warnings[0]).toContain("REGISTRY_PORT");
  });

  it("refuses a misspelt key under a known section, naming the variable and the keys allowed", () => {
    const [p] = problems({ env: { REGISTRY_STORAGE_DELETE_ENABLE: "true" } });
    expect(p).toContain("REGISTRY_STORAGE_DELETE_ENABLE");
    expect(p).toContain('no key "enable"');
    expect(p).toContain("enabled");
  });

  it("refuses a bad value, naming the key, the variable and what it expects", () => {
    const [p] = problems({ env: { REGISTRY_STORAGE_DELETE_ENABLED: "maybe" } });
    expect(p).toBe(
      'storage.delete.enabled (env REGISTRY_STORAGE_DELETE_ENABLED): expected a boolean, got "maybe"',
    );
  });

  it("refuses a value that is not YAML", () => {
    const [p] = problems({ env: { "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Origin": "[*]" } });
    expect(p).toContain("REGISTRY_HTTP_HEADERS_Access-Control-Allow-Origin");
    expect(p).toContain("'[\"*\"]'");
  });

  it("takes REGISTRY_CONFIGURATION_PATH as the file, as registry:2 does", () => {
    const f = file("log:\n  level: debug\n");
    const { config, file: used } = load({ env: { REGISTRY_CONFIGURATION_PATH: f } });
    expect(used).toBe(f);
    expect(config.log.level).toBe("debug");
  });
});

describe("the file", () => {
  it("a registry:2 config.yml", () => {
    const f = file(`version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`);
    const { config, warnings, sources } = load({ file: f });
    expect(config.version).toBe("0.1");
    expect(config.storage.filesystem.rootdirectory).toBe("/var/lib/registry");
    expect(config.http.headers).toEqual({ "X-Content-Type-Options": ["nosniff"] });
    expect(sources["storage.filesystem.rootdirectory"]).toEqual({ kind: "file", file: f });
    expect(warnings.some((w) => w.includes("storage.cache"))).toBe(true);
    expect(warnings.some((w) => w.includes("health"))).toBe(true);
  });

  it("precedence: file < environment < flags, each remembered", () => {
    const f = file("http:\n  addr: 0.0.0.0:6000\n  secret: fromfile\nlog:\n  level: error\n");
    const { config, sources } = load({
      file: f,
      env: { REGISTRY_HTTP_ADDR: "0.0.0.0:7000", REGISTRY_LOG_LEVEL: "debug" },
      flags: { http: { addr: "127.0.0.1:8000" } },
      flagNames: { "http.addr": "--addr" },
    });
    expect(config.http.addr).toBe("127.0.0.1:8000");
    expect(config.log.level).toBe("debug");
    expect(config.http.secret).toBe("fromfile");
    expect(sources["http.addr"]).toEqual({ kind: "flag", name: "--addr" });
    expect(sources["log.level"]).toEqual({ kind: "env", name: "REGISTRY_LOG_LEVEL" });
    expect(sources["http.secret"]).toEqual({ kind: "file", file: f });
  });

  it("flags left undefined do not override", () => {
    const f = file("http:\n  addr: 0.0.0.0:6000\n");
    const { config } = load({ file: f, flags: { http: { addr: undefined } } });
    expect(config.http.addr).toBe("0.0.0.0:6000");
  });

  it("a scalar where a list is expected is a list of one; numbers where strings are expected keep their spelling", () => {
    const f = file(
      "version: 0.10\nhttp:\n  secret: 0123\n  headers:\n    Access-Control-Allow-Origin: '*'\n",
    );
    const { config } = load({ file: f });
    expect(config.version).toBe("0.10");
    expect(config.http.secret).toBe("0123");
    expect(config.http.headers["Access-Control-Allow-Origin"]).toEqual(["*"]);
  });

  it("an empty file is the defaults", () => {
    const { config } = load({ file: file("") });
    expect(config.http.addr).toBe("0.0.0.0:5000");
  });

  it("deprecated loglevel is taken as log.level with a warning", () => {
    const { config, warnings } = load({ file: file("loglevel: debug\n") });
    expect(config.log.level).toBe("debug");
    expect(warnings[0]).toContain("loglevel is deprecated");
  });

  it("refuses an unknown key, naming it and what is accepted there", () => {
    const f = file("storage:\n  delete:\n    enabled: true\n  filesytem:\n    rootdirectory: /x\n");
    const [p, more] = problems({ file: f });
    expect(more).toBeUndefined();
    expect(p).toContain("storage.filesytem");
    expect(p).toContain("unknown key");
    expect(p).toContain("filesystem");
  });

  it("refuses an unknown top-level key", () => {
    const [p] = problems({ file: file("htpp:\n  addr: :5000\n") });
    expect(p).toMatch(/^htpp \(file .*\): unknown key; the top level accepts: version, log, storage, http/);
  });

  it("refuses a bad type, naming the key and the file", () => {
    const f = file("storage:\n  delete:\n    enabled: sometimes\nhttp:\n  workers: many\n");
    const list = problems({ file: f });
    expect(list).toContain(`storage.delete.enabled (file ${f}): expected a boolean, got "sometimes"`);
    expect(list).toContain(`http.workers (file ${f}): expected a number, got "many"`);
  });

  it("refuses a file that cannot be read", () => {
    expect(problems({ file: path.join(dir, "missing.yml") })).toEqual([
      `cannot read configuration file ${path.join(dir, "missing.yml")}: no such file`,
    ]);
    expect(problems({ file: dir })[0]).toContain("it is a directory");
    if (process.getuid?.() !== 0) {
      const f = file("log:\n  level: debug\n");
      chmodSync(f, 0o000);
      expect(problems({ file: f })[0]).toContain("permission denied");
    }
  });

  it("refuses YAML that does not parse, with the line", () => {
    const [p] = problems({ file: file("http:\n  addr: :5000\n   bad: indentation\n") });
    expect(p).toMatch(/invalid YAML: .*line \d+, column \d+/);
  });

  it("refuses a top level that is not a mapping", () => {
    expect(problems({ file: file("- a\n- b\n") })[0]).toContain("top level must be a mapping");
  });

  it("warns by name about Distribution settings Berth does not implement", () => {
    const f = file(
      "validation:\n  manifests:\n    urls:\n      allow: ['^https?://']\nproxy:\n  remoteurl: https://registry-1.docker.io\n  ttl: 168h\nredis:\n  addr: redis:6379\nnotifications:\n  endpoints: []\nhttp:\n  http2:\n    disabled: true\n",
    );
    const { warnings } = load({ file: f });
    const text = warnings.join("\n");
    for (const key of ["validation", "redis", "http.http2"]) expect(text).toContain(key);
    // proxy.ttl expires the cache's content (issue 21): no warning names it.
    expect(text).not.toContain("proxy.ttl");
    // Notifications are implemented (issue 14): no warning names them.
    expect(text).not.toContain("notifications");
  });

  it("refuses Distribution settings whose absence would be unsafe or lose data", () => {
    expect(problems({ file: file("storage:\n  gcs:\n    bucket: b\n") })[0]).toContain("storage.gcs");
    expect(problems({ file: file("auth:\n  silly:\n    realm: x\n    service: y\n") })[0]).toContain(
      "auth.silly",
    );
    expect(
      problems({ env: { REGISTRY_STORAGE: "azure", REGISTRY_STORAGE_AZURE_ACCOUNTNAME: "b" } })[0],
    ).toContain("storage.azure");
  });

  it("takes storage.s3 as registry:2 writes it, from the environment, and masks its secret", () => {
    const { config, warnings } = load({
      env: {
        REGISTRY_STORAGE: "s3",
        REGISTRY_STORAGE_S3_REGION: "us-east-1",
        REGISTRY_STORAGE_S3_REGIONENDPOINT: "http://127.0.0.1:7480",
        REGISTRY_STORAGE_S3_BUCKET: "registry",
        REGISTRY_STORAGE_S3_ACCESSKEY: "AKIDEXAMPLE",
        REGISTRY_STORAGE_S3_SECRETKEY: "wJalrXUtnFEMI",
        REGISTRY_STORAGE_S3_FORCEPATHSTYLE: "true",
        REGISTRY_STORAGE_S3_SECURE: "false",
        REGISTRY_STORAGE_S3_CHUNKSIZE: "5242880",
        REGISTRY_STORAGE_S3_ROOTDIRECTORY: "/registry",
        REGISTRY_STORAGE_S3_V4AUTH: "true",
      },
    });
    expect(config.storage.s3).toMatchObject({
      region: "us-east-1",
      bucket: "registry",
      forcepathstyle: true,
      secure: false,
      chunksize: 5242880,
      rootdirectory: "/registry",
      multipartcopythresholdsize: 5 * 1024 * 1024 * 1024,
    });
    expect(warnings.join("\n")).toContain("storage.s3.v4auth");
    const masked = JSON.stringify(maskSecrets(config));
    expect(masked).not.toContain("wJalrXUtnFEMI");
    expect(
      problems({ env: { REGISTRY_STORAGE: "s3", REGISTRY_STORAGE_S3_REGION: "us-east-1" } })[0],
    ).toContain("storage.s3.bucket");
    expect(problems({ file: file("http:\n  tls:\n    letsencrypt:\n      email: a@b.c\n") })[0]).toContain(
      "http.tls.letsencrypt",
    );
  });

  it("checks Berth's own values beyond their types", () => {
    expect(problems({ env: { REGISTRY_HTTP_HOST: "registry.example.com" } })[0]).toContain(
      "http.host (env REGISTRY_HTTP_HOST): expected an absolute URL",
    );
    expect(problems({ env: { REGISTRY_HTTP_TRUSTEDPROXIES: "10.0.0.0/8,127.0.0.1" } })[0]).toContain(
      "http.trustedproxies[0]",
    );
    expect(problems({ env: { REGISTRY_METRICS_ADDR: "9090" } })[0]).toContain("metrics.addr");
    const { config } = load({ env: { REGISTRY_HTTP_TRUSTEDPROXIES: "[10.0.0.0/8, '::1', 192.168.1.10]" } });
    expect(config.http.trustedproxies).toEqual(["10.0.0.0/8", "::1", "192.168.1.10"]);
  });

  it("Distribution's http.debug prometheus settings are accepted", () => {
    const { warnings } = load({
      file: file("http:\n  debug:\n    addr: :5001\n    prometheus:\n      enabled: true\n"),
    });
    expect(warnings).toEqual([]);
    const other = load({ file: file("http:\n  debug:\n    addr: :5001\n") });
    expect(other.warnings.join("\n")).toContain("http.debug.addr");
  });
});
