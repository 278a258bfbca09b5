// registry:2's proxy.ttl (issue 21): a cached image that nobody pulls within the TTL is expired by a
// scheduled job (its tag and manifest go), the collector then frees its blobs, and the next pull fetches
// it again; an image pulled within the TTL stays. With the upstream down, a push into the mirror still
// answers 405 UNSUPPORTED (its blob HEAD says 404, not 503), and the log names the upstream's failure.
// The upstream is a small registry on loopback (proxy-fixtures.ts).
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { blobOf, randomBlob, sha256 } from "../helpers/registry.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { berthJson, sleep, waitFor } from "./gc-helpers.js";
import { type FakeUpstream, imageManifest, loggedEntries, startFakeUpstream } from "./proxy-fixtures.js";

const ACCEPT = { accept: "application/vnd.oci.image.manifest.v1+json" };
const TTL_S = 6;

describe("pull-through cache: proxy.ttl", () => {
  let upstream: FakeUpstream;
  let mirror: Berth;
  let config: string;
  const oldLayer = randomBlob(70_000);
  const freshLayer = randomBlob(60_000);
  const oldConfig = blobOf('{"os":"linux","architecture":"amd64","variant":"old"}');
  const freshConfig = blobOf('{"os":"linux","architecture":"amd64","variant":"fresh"}');
  let oldDigest: string;

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    for (const [repo, cfg, layer] of [
      ["team/old", oldConfig, oldLayer],
      ["team/fresh", freshConfig, freshLayer],
    ] as const) {
      upstream.addBlob(repo, cfg.data);
      upstream.addBlob(repo, layer.data);
      const digest = upstream.addManifest(repo, "v1", imageManifest(cfg, [layer]));
      if (repo === "team/old") oldDigest = digest;
    }
    config = path.join(tempDir("berth-proxy-ttl-"), "config.yml");
    fs.writeFileSync(
      config,
      [
        "proxy:",
        `  remoteurl: ${upstream.url}`,
        `  ttl: ${TTL_S}s`,
        "gc:",
        "  enabled: false",
        "  graceperiod: 1s",
        "",
      ].join("\n"),
    );
    mirror = await startBerth({ args: ["--config", config] });
  });
  afterAll(async () => {
    await mirror?.cleanup();
    await upstream?.close();
  });

  async function pull(repo: string, reference = "v1"): Promise<void> {
    const res = await fetch(`${mirror.url}/v2/${repo}/manifests/${reference}`, { headers: ACCEPT });
    expect(res.status, `${repo}:${reference}`).toBe(200);
    const manifest = JSON.parse(await res.text()) as {
      config: { digest: string };
      layers: { digest: string }[];
    };
    for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
      const blob = await fetch(`${mirror.url}/v2/${repo}/blobs/${d}`);
      expect(blob.status).toBe(200);
      expect(sha256(Buffer.from(await blob.arrayBuffer()))).toBe(d);
    }
  }

  async function tags(repo: string): Promise<string[]> {
    const res = await fetch(`${mirror.url}/v2/${repo}/tags/list`);
    if (res.status === 404) return [];
    return ((await res.json()) as { tags: string[] | null }).tags ?? [];
  }

  it("expires what is not pulled within the TTL, keeps what is, and the collector frees it", async () => {
    await pull("team/old");
    await pull(`team/old`, oldDigest);
    await pull("team/fresh");
    expect(upstream.count("GET", "/v2/team/old/manifests/")).toBe(1);
    // Only team/fresh is pulled from now on.
    const started = Date.now();
    await waitFor(
      "team/old to expire",
      async () => {
        const res = await fetch(`${mirror.url}/v2/team/fresh/manifests/v1`, { headers: ACCEPT });
        expect(res.status).toBe(200);
        await res.arrayBuffer();
        await sleep(500);
        return (await tags("team/old")).length === 0;
      },
      (TTL_S + 20) * 1000,
    );
    // Not before the TTL (the pull of the old image was recorded within a second or so).
    expect(Date.now() - started).toBeGreaterThan((TTL_S - 2) * 1000);
    // Keep pulling the fresh image past another TTL: it stays.
    for (const until = Date.now() + TTL_S * 1000; Date.now() < until; ) {
      const res = await fetch(`${mirror.url}/v2/team/fresh/manifests/v1`, { headers: ACCEPT });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
      await sleep(500);
    }
    expect(await tags("team/fresh")).toEqual(["v1"]);
    expect(
      mirror.logs.some((l) => l.includes("proxy: expired cached content not pulled within proxy.ttl")),
    ).toBe(true);

    // The collector frees the expired image's blobs, and only those.
    const report = await berthJson<{ blobs: { digest: string }[] }>([
      "gc",
      "-c",
      config,
      "--data-dir",
      mirror.dataDir,
      "--grace-period",
      "0s",
    ]);
    const freed = new Set(report.blobs.map((b) => b.digest));
    expect(freed.has(oldLayer.digest)).toBe(true);
    expect(freed.has(oldConfig.digest)).toBe(true);
    expect(freed.has(freshLayer.digest)).toBe(false);

    // The next pull fetches it again.
    await pull("team/old");
    expect(upstream.count("GET", "/v2/team/old/manifests/")).toBe(2);
    expect(upstream.count("GET", `/v2/team/old/blobs/${oldLayer.digest}`)).toBe(2);
  }, 120_000);

  it("with the upstream down: a push answers 405, its blob HEAD 404, a pull 503, and the log says why", async () => {
    await upstream.close();
    const digest = sha256("never cached");
    const head = await fetch(`${mirror.url}/v2/team/new/blobs/${digest}`, { method: "HEAD" });
    expect(head.status).toBe(404);
    const post = await fetch(`${mirror.url}/v2/team/new/blobs/uploads/`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(((await post.json()) as { errors: { code: string }[] }).errors[0]?.code).toBe("UNSUPPORTED");
    const put = await fetch(`${mirror.url}/v2/team/new/manifests/v1`, {
      method: "PUT",
      body: imageManifest(oldConfig, []),
      headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
    });
    expect(put.status).toBe(405);
    const get = await fetch(`${mirror.url}/v2/team/new/blobs/${digest}`);
    expect(get.status).toBe(503);
    const warned = (await loggedEntries(
      mirror,
      (e) => e.level === 40 && e.msg === "proxy: the upstream failed a request",
    )) as { kind?: string; reason?: string }[];
    expect(warned.some((e) => e.kind === "unreachable" && /ECONNREFUSED/.test(e.reason ?? ""))).toBe(true);
  });
});
