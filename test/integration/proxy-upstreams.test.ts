// Several upstreams under repository prefixes: Distribution 2.8 with htpasswd behind TLS (a CA of the
// test's own, credentials from a file) and a Berth in token mode; containerd's ?ns=; private
// repositories beside the mirrors; pushes into a mirror refused; metrics; credentials masked.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryClient, randomBlob, sha256 } from "../helpers/registry.js";
import { type Berth, CLI, startBerth, tempDir } from "../helpers/server.js";
import { htpasswdText, makePki } from "./auth-fixtures.js";
import { berthJson } from "./gc-helpers.js";
import {
  adminClient,
  type Distribution,
  pushToDistribution,
  startDistribution,
  startTokenUpstream,
  upstreamRequests,
} from "./proxy-fixtures.js";

const ACCEPT = [
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");

describe("pull-through cache with several upstreams (proxy.upstreams)", () => {
  let distribution: Distribution;
  let tokenBerth: Berth;
  let proxy: Berth;
  let config: string;
  const mirror = new RegistryClient("");
  let distImage: Awaited<ReturnType<RegistryClient["pushImage"]>>;
  let tokImage: Awaited<ReturnType<RegistryClient["pushImage"]>>;
  let distHost: string;

  beforeAll(async () => {
    // Distribution: filled over plain HTTP, then served with TLS and htpasswd from the same directory.
    const plain = await startDistribution();
    distImage = await pushToDistribution(plain.url, "library/busy", "1.0", [
      randomBlob(300_000),
      randomBlob(5000),
    ]);
    await plain.stop();
    const pki = makePki();
    const dir = tempDir("berth-proxy-up-");
    const htpasswd = path.join(dir, "htpasswd");
    fs.writeFileSync(htpasswd, htpasswdText({ puller: "dist-secret-pw" }));
    distribution = await startDistribution({
      dataDir: plain.dataDir,
      tls: { cert: pki.serverChain, key: pki.serverKey },
      htpasswd,
    });
    distHost = `127.0.0.1:${distribution.port}`;

    tokenBerth = await startTokenUpstream();
    tokImage = await (await adminClient(tokenBerth, "org/tool")).pushImage("org/tool", "latest");

    const passwordFile = path.join(dir, "dist-password");
    fs.writeFileSync(passwordFile, "dist-secret-pw\n");
    config = path.join(dir, "config.yml");
    fs.writeFileSync(
      config,
      [
        "proxy:",
        "  upstreams:",
        "    - prefix: dist",
        `      remoteurl: ${distribution.url}`,
        "      username: puller",
        `      passwordfile: ${passwordFile}`,
        `      cafile: ${pki.caCert}`,
        "    - prefix: tok",
        `      remoteurl: ${tokenBerth.url}`,
        "      username: mirror",
        "      password: mirror-pw",
        "",
      ].join("\n"),
    );
    proxy = await startBerth({
      args: ["--config", config],
      workers: 1,
      env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" },
    });
    (mirror as { base: string }).base = proxy.url;
  }, 120_000);
  afterAll(async () => {
    await proxy?.cleanup();
    await tokenBerth?.cleanup();
    await distribution?.stop();
  });

  async function pullImage(name: string, tag: string, query = "") {
    const res = await mirror.fetch(`/v2/${name}/manifests/${tag}${query}`, { headers: { accept: ACCEPT } });
    expect(res.status).toBe(200);
    const manifest = JSON.parse(await res.text()) as {
      config: { digest: string };
      layers: { digest: string }[];
    };
    for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
      const blob = await mirror.fetch(`/v2/${name}/blobs/${d}${query}`);
      expect(blob.status).toBe(200);
      expect(sha256(Buffer.from(await blob.arrayBuffer()))).toBe(d);
    }
    return res.headers.get("docker-content-digest");
  }

  it("pulls through Distribution over TLS with a custom CA and Basic credentials from a file", async () => {
    expect(await pullImage("dist/library/busy", "1.0")).toBe(distImage.digest);
  });

  it("pulls through the token-auth Berth", async () => {
    expect(await pullImage("tok/org/tool", "latest")).toBe(tokImage.digest);
    expect(await upstreamRequests(tokenBerth, "GET", "/v2/org/tool/manifests/latest", 200)).toBe(1);
    // The second pull is served from the cache (within the tag TTL): no new upstream GET.
    expect(await pullImage("tok/org/tool", "latest")).toBe(tokImage.digest);
    expect(await upstreamRequests(tokenBerth, "GET", "/v2/org/tool/manifests/latest", 200)).toBe(1);
    expect(
      await upstreamRequests(tokenBerth, "GET", `/v2/org/tool/blobs/${tokImage.layers[0]!.digest}`, 200),
    ).toBe(1);
    // The config blob is the same as the Distribution image's, already stored: linked, never fetched.
    expect(tokImage.config.digest).toBe(distImage.config.digest);
    expect(await upstreamRequests(tokenBerth, "GET", `/v2/org/tool/blobs/${tokImage.config.digest}`)).toBe(0);
  });

  it("maps containerd's ?ns=<upstream host> to the upstream with that host", async () => {
    expect(await pullImage("library/busy", "1.0", `?ns=${encodeURIComponent(distHost)}`)).toBe(
      distImage.digest,
    );
    // Served from the cache filled above: the same repository, dist/library/busy.
    const tags = await mirror.fetch("/v2/dist/library/busy/tags/list");
    expect(((await tags.json()) as { tags: string[] }).tags).toEqual(["1.0"]);
  });

  it("takes pushes outside the prefixes and refuses them inside", async () => {
    await new RegistryClient(proxy.url).pushImage("private/app", "v1");
    const res = await mirror.fetch("/v2/dist/mine/blobs/uploads/", { method: "POST" });
    expect(res.status).toBe(405);
    const body = (await res.json()) as { errors: { code: string; message: string }[] };
    expect(body.errors[0]?.code).toBe("UNSUPPORTED");
    expect(body.errors[0]?.message).toContain("pull-through cache");
    const put = await mirror.fetch("/v2/tok/org/tool/manifests/x", {
      method: "PUT",
      body: "{}",
      headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
    });
    expect(put.status).toBe(405);
  });

  it("marks mirrored repositories in the API", async () => {
    const res = await mirror.fetch("/api/v1/repositories");
    const list = (await res.json()) as { items: { name: string; proxy: { upstream: string } | null }[] };
    const byName = new Map(list.items.map((r) => [r.name, r.proxy]));
    expect(byName.get("dist/library/busy")?.upstream).toBe("dist");
    expect(byName.get("tok/org/tool")?.upstream).toBe("tok");
    expect(byName.get("private/app")).toBeNull();
  });

  it("counts hits, misses and upstream bytes per upstream", async () => {
    const text = await (await mirror.fetch("/metrics")).text();
    expect(text).toMatch(/berth_proxy_misses_total\{upstream="dist",kind="blob"\} [1-9]/);
    expect(text).toMatch(/berth_proxy_hits_total\{upstream="dist",kind="manifest"\} [1-9]/);
    const bytes = /berth_proxy_upstream_bytes_total\{upstream="dist"\} (\d+)/.exec(text);
    const expected = distImage.layers.reduce((n, l) => n + l.size, distImage.config.size);
    expect(Number(bytes?.[1])).toBe(expected);
  });

  it("cached content is ordinary content: usage counts it, the collector frees it, the next pull fetches again", async () => {
    const cli = ["-c", config, "--data-dir", proxy.dataDir];
    const usage = await berthJson<{ repositories: { name: string; bytes: number }[] }>(["usage", ...cli]);
    const cached = usage.repositories.find((r) => r.name === "dist/library/busy");
    const layers = distImage.layers.reduce((n, l) => n + l.size, 0);
    expect(cached?.bytes).toBeGreaterThanOrEqual(layers);
    const del = await mirror.fetch("/api/v1/repositories/dist/library/busy", { method: "DELETE" });
    expect(del.status).toBeLessThan(300);
    const report = await berthJson<{ blobs: { digest: string }[] }>(["gc", ...cli, "--grace-period", "0s"]);
    const freed = new Set(report.blobs.map((b) => b.digest));
    for (const l of distImage.layers) expect(freed.has(l.digest)).toBe(true);
    // The config blob is shared with tok/org/tool: kept.
    expect(freed.has(distImage.config.digest)).toBe(false);
    expect(await pullImage("dist/library/busy", "1.0")).toBe(distImage.digest);
  });

  it("read-only: the cache is served, nothing is fetched", async () => {
    await proxy.stop();
    const readOnly = await startBerth({ dataDir: proxy.dataDir, args: ["--config", config, "--read-only"] });
    try {
      const before = await upstreamRequests(tokenBerth, "GET", "/v2/org/tool/manifests/latest");
      const cached = await fetch(`${readOnly.url}/v2/tok/org/tool/manifests/latest`, {
        headers: { accept: ACCEPT },
      });
      expect(cached.status).toBe(200);
      expect(cached.headers.get("docker-content-digest")).toBe(tokImage.digest);
      const uncached = await fetch(`${readOnly.url}/v2/tok/org/other/manifests/latest`, {
        headers: { accept: ACCEPT },
      });
      expect(uncached.status).toBe(404);
      expect(await upstreamRequests(tokenBerth, "GET", "/v2/org/tool/manifests/latest")).toBe(before);
      expect(await upstreamRequests(tokenBerth, "GET", "/v2/org/other/")).toBe(0);
    } finally {
      await readOnly.stop();
    }
  });

  it("never shows upstream credentials: logs, config check", async () => {
    expect(proxy.logs.join("\n")).not.toContain("dist-secret-pw");
    expect(proxy.logs.join("\n")).not.toContain("mirror-pw");
    const out = execFileSync(process.execPath, [CLI, "config", "check", "--config", config], {
      encoding: "utf8",
    });
    expect(out).toContain("prefix: dist");
    expect(out).not.toContain("mirror-pw");
    expect(out).not.toContain("not implemented");
  });
});
