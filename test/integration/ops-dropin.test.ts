// The environment-variable sets of today's registry:2 recipes start Berth with the intended effect.
import { execFileSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { errorCode, RegistryClient, randomBlob } from "../helpers/registry.js";
import { startBerth, tempDir } from "../helpers/server.js";
import { type Served, serveWithEnv } from "./ops-support.js";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => {});
});

async function serve(
  env: Record<string, string>,
  options: Parameters<typeof serveWithEnv>[1] = {},
): Promise<Served> {
  const s = await serveWithEnv(env, options);
  cleanups.push(() => s.stop());
  return s;
}

const basic = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;

describe("registry:2 recipe: htpasswd auth, filesystem root directory, delete enabled", () => {
  const dir = tempDir("berth-dropin-");
  afterAll(() => execFileSync("rm", ["-rf", dir]));
  const htpasswd = path.join(dir, "htpasswd");
  writeFileSync(htpasswd, execFileSync("htpasswd", ["-Bbn", "testuser", "testpassword"]));
  const root = path.join(dir, "registry");

  it("starts from the environment alone and behaves as configured", async () => {
    const s = await serve({
      REGISTRY_AUTH: "htpasswd",
      REGISTRY_AUTH_HTPASSWD_REALM: "Registry Realm",
      REGISTRY_AUTH_HTPASSWD_PATH: htpasswd,
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: root,
      REGISTRY_STORAGE_DELETE_ENABLED: "true",
      REGISTRY_HTTP_SECRET: "asecretforlocaldevelopment",
    });
    // Auth: challenged without credentials, with the configured realm.
    const anonymous = await fetch(`${s.url}/v2/`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toBe('Basic realm="Registry Realm"');
    expect(
      (await fetch(`${s.url}/v2/`, { headers: { authorization: basic("testuser", "wrong") } })).status,
    ).toBe(401);

    const client = new RegistryClient(s.url, { authorization: basic("testuser", "testpassword") });
    expect((await client.fetch("/v2/")).status).toBe(200);
    const layer = randomBlob(5000);
    const { digest } = await client.pushImage("recipes/app", "v1", { layers: [layer] });

    // Storage: Distribution's layout under the configured root directory.
    const hex = layer.digest.slice("sha256:".length);
    expect(existsSync(path.join(root, "docker/registry/v2/blobs/sha256", hex.slice(0, 2), hex, "data"))).toBe(
      true,
    );

    // Delete enabled.
    const del = await client.fetch(`/v2/recipes/app/manifests/${digest}`, { method: "DELETE" });
    expect(del.status).toBe(202);
    expect((await client.fetch(`/v2/recipes/app/manifests/${digest}`)).status).toBe(404);
  });

  it("REGISTRY_STORAGE_DELETE_ENABLED=false refuses deletes", async () => {
    const s = await serve({
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: path.join(dir, "nodelete"),
      REGISTRY_STORAGE_DELETE_ENABLED: "false",
    });
    const client = new RegistryClient(s.url);
    const { digest } = await client.pushImage("recipes/keep", "v1");
    const del = await client.fetch(`/v2/recipes/keep/manifests/${digest}`, { method: "DELETE" });
    expect(del.status).toBe(405);
    expect(await errorCode(del)).toBe("UNSUPPORTED");
  });
});

describe("registry:2 recipe: the CORS headers of joxit/docker-registry-ui", () => {
  const ui = "http://registry-ui.example.com";
  const cors = {
    "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Origin": `[${ui}]`,
    "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Methods": "[HEAD,GET,OPTIONS,DELETE]",
    "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Credentials": "[true]",
    "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Headers": "[Authorization,Accept,Cache-Control]",
    "REGISTRY_HTTP_HEADERS_Access-Control-Expose-Headers": "[Docker-Content-Digest]",
  };

  it("puts the headers on every response, errors and 404s included", async () => {
    const s = await serve({ ...cors, REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: tempDir() });
    for (const p of ["/v2/", "/v2/_catalog", "/v2/nothing/here/tags/list", "/not-a-route", "/healthz"]) {
      const res = await fetch(`${s.url}${p}`, { headers: { origin: ui } });
      expect(res.headers.get("access-control-allow-origin"), p).toBe(ui);
      expect(res.headers.get("access-control-allow-credentials"), p).toBe("true");
      expect(res.headers.get("access-control-expose-headers"), p).toBe("Docker-Content-Digest");
      await res.arrayBuffer();
    }
  });

  it("answers preflights with 204 and the configured headers, without asking for credentials", async () => {
    const dir = tempDir();
    const htpasswd = path.join(dir, "htpasswd");
    writeFileSync(htpasswd, execFileSync("htpasswd", ["-Bbn", "u", "p"]));
    const s = await serve({
      ...cors,
      REGISTRY_AUTH: "htpasswd",
      REGISTRY_AUTH_HTPASSWD_REALM: "basic-realm",
      REGISTRY_AUTH_HTPASSWD_PATH: htpasswd,
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: path.join(dir, "data"),
    });
    for (const p of ["/v2/", "/v2/_catalog", "/v2/some/repo/tags/list", "/v2/some/repo/manifests/latest"]) {
      const res = await fetch(`${s.url}${p}`, {
        method: "OPTIONS",
        headers: {
          origin: ui,
          "access-control-request-method": "GET",
          "access-control-request-headers": "authorization,accept",
        },
      });
      expect(res.status, p).toBe(204);
      expect(res.headers.get("access-control-allow-origin")).toBe(ui);
      expect(res.headers.get("access-control-allow-methods")).toBe("HEAD, GET, OPTIONS, DELETE");
      expect(res.headers.get("access-control-allow-headers")).toBe("Authorization, Accept, Cache-Control");
      expect(res.headers.get("access-control-allow-credentials")).toBe("true");
      expect(res.headers.get("www-authenticate")).toBeNull();
    }
    // The real request still needs credentials, and carries the headers either way.
    const denied = await fetch(`${s.url}/v2/_catalog`, { headers: { origin: ui } });
    expect(denied.status).toBe(401);
    expect(denied.headers.get("access-control-allow-origin")).toBe(ui);
    const allowed = await fetch(`${s.url}/v2/_catalog`, {
      headers: { origin: ui, authorization: basic("u", "p") },
    });
    expect(allowed.status).toBe(200);
  });

  it("answers one origin of a configured list, and none to a stranger", async () => {
    const s = await serve({
      "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Origin": "[http://a.example, http://b.example]",
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: tempDir(),
    });
    const b = await fetch(`${s.url}/v2/`, { headers: { origin: "http://b.example" } });
    expect(b.headers.get("access-control-allow-origin")).toBe("http://b.example");
    expect(b.headers.get("vary")).toContain("Origin");
    const stranger = await fetch(`${s.url}/v2/`, { headers: { origin: "http://evil.example" } });
    expect(stranger.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("other registry:2 settings from the environment", () => {
  it("ignores Kubernetes service-link variables with a warning, and logs unimplemented keys by name", async () => {
    const s = await serve({
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: tempDir(),
      REGISTRY_PORT: "tcp://10.96.0.20:5000",
      REGISTRY_PORT_5000_TCP_ADDR: "10.96.0.20",
      REGISTRY_SERVICE_HOST: "10.96.0.20",
      REGISTRY_PROXY_REMOTEURL: "https://registry-1.docker.io",
      REGISTRY_PROXY_TTL: "168h",
      REGISTRY_PROXY_EXEC_COMMAND: "docker-credential-x",
    });
    expect((await fetch(`${s.url}/v2/`)).status).toBe(200);
    const logs = s.logs.join("\n");
    expect(logs).toContain("REGISTRY_SERVICE_HOST");
    expect(logs).toMatch(/not implemented: proxy\.exec/);
    // proxy.ttl is implemented (issue 21).
    expect(logs).not.toContain("proxy.ttl");
  });

  it("Location headers follow X-Forwarded-* from a trusted proxy, and http.host over everything", async () => {
    const s = await serve({ REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: tempDir() });
    const res = await fetch(`${s.url}/v2/fwd/app/blobs/uploads/`, {
      method: "POST",
      headers: { "x-forwarded-proto": "https", "x-forwarded-host": "registry.example.com" },
    });
    expect(res.status).toBe(202);
    expect(res.headers.get("location")).toMatch(
      /^https:\/\/registry\.example\.com\/v2\/fwd\/app\/blobs\/uploads\//,
    );

    const untrusted = await serve({
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: tempDir(),
      REGISTRY_HTTP_TRUSTEDPROXIES: "[10.0.0.1]",
    });
    const direct = await fetch(`${untrusted.url}/v2/fwd/app/blobs/uploads/`, {
      method: "POST",
      headers: { "x-forwarded-proto": "https", "x-forwarded-host": "registry.example.com" },
    });
    expect(direct.headers.get("location")).toMatch(
      new RegExp(`^http://127\\.0\\.0\\.1:${untrusted.port}/v2/`),
    );

    const hosted = await serve({
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: tempDir(),
      REGISTRY_HTTP_HOST: "https://registry.example.org:8443",
    });
    const h = await fetch(`${hosted.url}/v2/fwd/app/blobs/uploads/`, { method: "POST" });
    expect(h.headers.get("location")).toMatch(
      /^https:\/\/registry\.example\.org:8443\/v2\/fwd\/app\/blobs\/uploads\//,
    );
  });
});

describe("read-only mode", () => {
  it("storage.maintenance.readonly (as registry:2 recipes set it) and --read-only refuse writes and keep pulls", async () => {
    const dataDir = tempDir();
    const first = await startBerth({ dataDir });
    const pushed = await new RegistryClient(first.url).pushImage("ro/app", "v1");
    await first.stop();

    for (const variant of [
      { env: { REGISTRY_STORAGE_MAINTENANCE_READONLY: "{enabled: true}" }, args: [] },
      { env: {}, args: ["--read-only"] },
    ]) {
      const berth = await startBerth({ dataDir, env: variant.env, args: variant.args });
      cleanups.push(() => berth.stop());
      const client = new RegistryClient(berth.url);
      const pull = await client.fetch(`/v2/ro/app/manifests/v1`);
      expect(pull.status).toBe(200);
      expect((await client.fetch(`/v2/ro/app/blobs/${pushed.layers[0]!.digest}`)).status).toBe(200);
      const post = await client.fetch("/v2/ro/app/blobs/uploads/", { method: "POST" });
      expect(post.status).toBe(405);
      expect(await errorCode(post)).toBe("UNSUPPORTED");
      const del = await client.fetch(`/v2/ro/app/manifests/${pushed.digest}`, { method: "DELETE" });
      expect(del.status).toBe(405);
      const put = await client.putManifest("ro/app", "v2", pushed.manifest);
      expect(put.status).toBe(405);
      expect(((await put.json()) as { errors: { message: string }[] }).errors[0]!.message).toMatch(
        /read-only/i,
      );
      expect((await fetch(`${berth.url}/readyz`)).status).toBe(200);
      await berth.stop();
    }
  });
});
