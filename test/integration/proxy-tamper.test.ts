// Upstreams that misbehave: one that rate-limits (429), one slower than proxy.timeout, one that fails a
// blob GET, and one that sends bytes which do not match the digest asked for (the mirror stores nothing,
// aborts the client's response short of its length, and fetches again next time). The upstream is a
// small HTTP server on loopback that answers like a registry.
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";

describe("pull-through cache: an upstream that misbehaves", () => {
  let upstream: http.Server;
  let mirror: Berth;
  const truth = randomBytes(3 * 1024 * 1024);
  const digest = `sha256:${createHash("sha256").update(truth).digest("hex")}`;
  const lie = Buffer.from(truth);
  lie[lie.length - 1] ^= 0xff;
  let gets = 0;
  let manifestCalls = 0;
  let slowCalls = 0;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest, size: truth.length },
      layers: [],
    }),
  );
  const manifestDigest = `sha256:${createHash("sha256").update(manifest).digest("hex")}`;

  beforeAll(async () => {
    upstream = http.createServer((req, res) => {
      if (req.url === "/v2/limited/app/manifests/latest") {
        manifestCalls++;
        if (manifestCalls > 1) {
          res.writeHead(429, { "content-type": "application/json" });
          return res.end('{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}');
        }
        res.writeHead(200, {
          "content-type": "application/vnd.oci.image.manifest.v1+json",
          "content-length": manifest.length,
          "docker-content-digest": manifestDigest,
        });
        return res.end(req.method === "HEAD" ? undefined : manifest);
      }
      if (req.url === "/v2/slow/app/manifests/latest") {
        slowCalls++;
        const answer = () => {
          res.writeHead(200, {
            "content-type": "application/vnd.oci.image.manifest.v1+json",
            "content-length": manifest.length,
            "docker-content-digest": manifestDigest,
          });
          res.end(req.method === "HEAD" ? undefined : manifest);
        };
        // After the first answer, the upstream takes longer than the mirror's timeout (1 s).
        if (slowCalls > 1) setTimeout(answer, 2_500);
        else answer();
        return;
      }
      if (req.url === `/v2/limited/app/blobs/${digest}`) {
        res.writeHead(500, { "content-type": "text/plain" });
        return res.end("broken");
      }
      if (req.url === `/v2/lies/blobs/${digest}`) {
        if (req.method === "GET") gets++;
        res.writeHead(200, { "content-length": lie.length, "docker-content-digest": digest });
        return res.end(req.method === "HEAD" ? undefined : lie);
      }
      res.writeHead(404, { "content-type": "application/json" });
      res.end('{"errors":[{"code":"NOT_FOUND","message":"no"}]}');
    });
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    const port = (upstream.address() as AddressInfo).port;
    const config = path.join(tempDir("berth-proxy-tamper-"), "config.yml");
    fs.writeFileSync(config, `proxy:\n  remoteurl: http://127.0.0.1:${port}\n  tagttl: 0s\n  timeout: 1s\n`);
    mirror = await startBerth({ args: ["--config", config] });
  });
  afterAll(async () => {
    await mirror?.cleanup();
    await new Promise((r) => upstream?.close(r));
  });

  async function pull(): Promise<{ status: number; received: number; failed: boolean }> {
    const res = await fetch(`${mirror.url}/v2/lies/blobs/${digest}`);
    let received = 0;
    let failed = false;
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) received += chunk.length;
    } catch {
      failed = true;
    }
    return { status: res.status, received, failed };
  }

  it("a rate-limited upstream (429): the cached tag is served with a Warning header", async () => {
    const accept = { accept: "application/vnd.oci.image.manifest.v1+json" };
    const first = await fetch(`${mirror.url}/v2/limited/app/manifests/latest`, { headers: accept });
    expect(first.status).toBe(200);
    expect(first.headers.get("warning")).toBeNull();
    const second = await fetch(`${mirror.url}/v2/limited/app/manifests/latest`, { headers: accept });
    expect(second.status).toBe(200);
    expect(second.headers.get("docker-content-digest")).toBe(manifestDigest);
    expect(second.headers.get("warning")).toMatch(/^110 /);
    expect(manifestCalls).toBe(2);
    // The manifest told the mirror the config's size, so no HEAD went upstream for it; the upstream then
    // fails the GET: the client gets the spec's error, not a 200 cut short.
    const blob = await fetch(`${mirror.url}/v2/limited/app/blobs/${digest}`);
    expect(blob.status).toBe(503);
    expect(((await blob.json()) as { errors: { code: string }[] }).errors[0]?.code).toBe("UNAVAILABLE");
    expect(mirror.process.exitCode).toBeNull();
    const metrics = await (await fetch(`${mirror.url}/metrics`)).text();
    expect(metrics).toMatch(/berth_proxy_upstream_errors_total\{upstream="[^"]+",kind="ratelimited"\} 1/);
  });

  it("a slow upstream: past proxy.timeout the cached tag is served with a Warning header", async () => {
    const accept = { accept: "application/vnd.oci.image.manifest.v1+json" };
    expect((await fetch(`${mirror.url}/v2/slow/app/manifests/latest`, { headers: accept })).status).toBe(200);
    const t0 = Date.now();
    const res = await fetch(`${mirror.url}/v2/slow/app/manifests/latest`, { headers: accept });
    expect(res.status).toBe(200);
    expect(res.headers.get("warning")).toMatch(/^110 /);
    expect(Date.now() - t0).toBeLessThan(2_400);
    const metrics = await (await fetch(`${mirror.url}/metrics`)).text();
    expect(metrics).toMatch(/berth_proxy_upstream_errors_total\{upstream="[^"]+",kind="timeout"\} 1/);
  });

  it("never stores the blob, aborts the response short, and asks again next time", async () => {
    for (let attempt = 1; attempt <= 2; attempt++) {
      const r = await pull();
      expect(r.status).toBe(200);
      expect(r.failed || r.received < lie.length).toBe(true);
      expect(r.received).toBeLessThan(lie.length);
      expect(gets).toBe(attempt);
    }
    const hex = digest.slice(7);
    const blobPath = path.join(
      mirror.dataDir,
      "docker/registry/v2/blobs/sha256",
      hex.slice(0, 2),
      hex,
      "data",
    );
    expect(fs.existsSync(blobPath)).toBe(false);
    const metrics = await (await fetch(`${mirror.url}/metrics`)).text();
    expect(metrics).toMatch(
      /berth_proxy_upstream_errors_total\{upstream="127\.0\.0\.1:\d+",kind="digest"\} 2/,
    );
  });
});
