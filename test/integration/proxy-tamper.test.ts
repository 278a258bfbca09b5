// An upstream that sends bytes which do not match the digest asked for: the mirror stores nothing,
// aborts the client's response short of its length, and fetches again next time. The upstream is a
// small HTTP server on loopback that answers like a registry but lies about one blob.
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";

describe("pull-through cache: an upstream that sends the wrong bytes", () => {
  let upstream: http.Server;
  let mirror: Berth;
  const truth = randomBytes(3 * 1024 * 1024);
  const digest = `sha256:${createHash("sha256").update(truth).digest("hex")}`;
  const lie = Buffer.from(truth);
  lie[lie.length - 1] ^= 0xff;
  let gets = 0;

  beforeAll(async () => {
    upstream = http.createServer((req, res) => {
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
    fs.writeFileSync(config, `proxy:\n  remoteurl: http://127.0.0.1:${port}\n`);
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
