// The pull-through cache against a real upstream: a second Berth in token mode (the same Bearer dance as
// Docker Hub), credentials from the configuration. registry:2's keys make the whole registry a mirror.
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryClient, randomBlob, sha256 } from "../helpers/registry.js";
import { type Berth, freePort, startBerth, tempDir } from "../helpers/server.js";
import { adminClient, startTokenUpstream, upstreamRequests } from "./proxy-fixtures.js";

const ACCEPT = [
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");

describe("pull-through cache of a token-auth Berth (proxy.remoteurl, registry:2 style)", () => {
  let upstream: Berth;
  let proxy: Berth;
  let upstreamPort: number;
  const mirror = new RegistryClient("");
  const big = randomBlob(200 * 1024 * 1024);
  let image: Awaited<ReturnType<RegistryClient["pushImage"]>>;

  beforeAll(async () => {
    upstreamPort = await freePort();
    upstream = await startTokenUpstream(upstreamPort);
    const admin = await adminClient(upstream, "team/app");
    image = await admin.pushImage("team/app", "v1", { layers: [randomBlob(4096), big] });
    const dir = tempDir("berth-proxy-conf-");
    const config = path.join(dir, "config.yml");
    fs.writeFileSync(
      config,
      [
        "proxy:",
        `  remoteurl: ${upstream.url}`,
        "  username: mirror",
        "  password: mirror-pw",
        "  tagttl: 4s",
        "  timeout: 3s",
        "",
      ].join("\n"),
    );
    // Two workers: the one-fetch rule must hold across processes.
    proxy = await startBerth({ args: ["--config", config], workers: 2 });
    (mirror as { base: string }).base = proxy.url;
  }, 120_000);
  afterAll(async () => {
    await proxy?.cleanup();
    await upstream?.cleanup();
  });

  it("serves the manifest by tag and by digest, fetched with a Bearer token made from the credentials", async () => {
    const res = await mirror.fetch("/v2/team/app/manifests/v1", { headers: { accept: ACCEPT } });
    expect(res.status).toBe(200);
    expect(res.headers.get("docker-content-digest")).toBe(image.digest);
    expect(Buffer.from(await res.arrayBuffer()).equals(image.manifest)).toBe(true);
    const byDigest = await mirror.fetch(`/v2/team/app/manifests/${image.digest}`, {
      headers: { accept: ACCEPT },
    });
    expect(byDigest.status).toBe(200);
    expect(await upstreamRequests(upstream, "GET", `/v2/team/app/manifests/${image.digest}`)).toBe(0);
    // The credentials appear nowhere in the mirror's logs.
    expect(proxy.logs.join("\n")).not.toContain("mirror-pw");
  });

  it("20 concurrent pulls of an uncached 200 MB layer: one upstream GET, 20 byte-exact results", async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const res = await mirror.fetch(`/v2/team/app/blobs/${big.digest}`);
        expect(res.status).toBe(200);
        return sha256(Buffer.from(await res.arrayBuffer()));
      }),
    );
    expect(results).toEqual(Array(20).fill(big.digest));
    expect(await upstreamRequests(upstream, "GET", `/v2/team/app/blobs/${big.digest}`)).toBe(1);
    // Now cached: HEAD answers from the store.
    const head = await mirror.fetch(`/v2/team/app/blobs/${big.digest}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String(big.size));
  }, 300_000);

  it("refuses pushes, as registry:2's proxy does", async () => {
    const res = await mirror.fetch("/v2/team/app/blobs/uploads/", { method: "POST" });
    expect(res.status).toBe(405);
    const body = (await res.json()) as { errors: { code: string; message: string }[] };
    expect(body.errors[0]?.code).toBe("UNSUPPORTED");
    expect(body.errors[0]?.message).toMatch(/pull-through cache/);
  });

  it("a blob the upstream does not have is BLOB_UNKNOWN", async () => {
    const res = await mirror.fetch(`/v2/team/app/blobs/${sha256("something else")}`);
    expect(res.status).toBe(404);
    expect(((await res.json()) as { errors: { code: string }[] }).errors[0]?.code).toBe("BLOB_UNKNOWN");
  });

  it("a tag moved upstream is seen after the tag TTL, and the cache serves when the upstream is down", async () => {
    // Pull the small layer and config too, so that the whole image is cached.
    for (const d of [image.config.digest, image.layers[0]!.digest]) {
      const res = await mirror.fetch(`/v2/team/app/blobs/${d}`);
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    // Confirmed by the upstream just now, in both workers (the check time is kept per process).
    for (let i = 0; i < 4; i++) {
      await mirror.fetch("/v2/team/app/manifests/v1", { method: "HEAD", headers: { accept: ACCEPT } });
    }
    const admin = await adminClient(upstream, "team/app");
    const moved = await admin.pushImage("team/app", "v1", { layers: [randomBlob(2048)] });
    // Within the TTL: still the cached one, without asking the upstream.
    let res = await mirror.fetch("/v2/team/app/manifests/v1", {
      method: "HEAD",
      headers: { accept: ACCEPT },
    });
    expect(res.headers.get("docker-content-digest")).toBe(image.digest);
    await new Promise((r) => setTimeout(r, 4_500));
    res = await mirror.fetch("/v2/team/app/manifests/v1", { headers: { accept: ACCEPT } });
    expect(res.headers.get("docker-content-digest")).toBe(moved.digest);
    // Both workers may have their own check time; ask a few times to reach both.
    for (let i = 0; i < 4; i++) {
      res = await mirror.fetch("/v2/team/app/manifests/v1", { headers: { accept: ACCEPT } });
      expect(res.headers.get("docker-content-digest")).toBe(moved.digest);
    }

    await upstream.stop();
    await new Promise((r) => setTimeout(r, 4_500));
    res = await mirror.fetch("/v2/team/app/manifests/v1", { headers: { accept: ACCEPT } });
    expect(res.status).toBe(200);
    expect(res.headers.get("docker-content-digest")).toBe(moved.digest);
    expect(res.headers.get("warning")).toMatch(/^110 /);
    // The older image by digest, and its blobs, still pull from the cache.
    res = await mirror.fetch(`/v2/team/app/manifests/${image.digest}`, { headers: { accept: ACCEPT } });
    expect(res.status).toBe(200);
    for (const d of [image.config.digest, image.layers[0]!.digest, big.digest]) {
      const blob = await mirror.fetch(`/v2/team/app/blobs/${d}`);
      expect(blob.status).toBe(200);
      expect(sha256(Buffer.from(await blob.arrayBuffer()))).toBe(d);
    }
    // A blob of a cached manifest that was never pulled: its size is known, its bytes are not; the
    // answer is the spec's error, not a 200 cut short.
    const unpulled = await mirror.fetch(`/v2/team/app/blobs/${moved.layers[0]!.digest}`);
    expect(unpulled.status).toBe(503);
    expect(((await unpulled.json()) as { errors: { code: string }[] }).errors[0]?.code).toBe("UNAVAILABLE");
    // Something never cached: the upstream is unreachable, said as such.
    res = await mirror.fetch("/v2/team/other/manifests/latest", { headers: { accept: ACCEPT } });
    expect(res.status).toBe(503);
    // Readiness does not depend on the upstream.
    expect((await mirror.fetch("/readyz")).status).toBe(200);
    expect(proxy.logs.some((l) => l.includes("proxy: served a cached manifest"))).toBe(true);
  }, 60_000);
});
