// A blob fetch that takes longer than the fetch lease (30 s) is still fetched once: the lease is renewed
// while the bytes come in, so that the other worker waits for the commit instead of fetching again.
// The upstream is a loopback server that sends the blob slowly (about 40 s).
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sha256 } from "../helpers/registry.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { type FakeUpstream, startFakeUpstream } from "./proxy-fixtures.js";

/** GET on a connection of its own (so that the supervisor hands it to the next worker). */
function getOwnConnection(url: string): Promise<{ status: number; digest: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, digest: sha256(Buffer.concat(chunks)) }));
        res.on("error", reject);
      })
      .on("error", reject);
  });
}

describe("pull-through cache: a slow blob fetch keeps its lease", () => {
  let upstream: FakeUpstream;
  let mirror: Berth;
  const data = randomBytes(4 * 1024 * 1024);
  const digest = sha256(data);

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    upstream.override = (req, res) => {
      if (req.url !== `/v2/slow/blobs/${digest}`) return false;
      res.writeHead(200, { "content-length": data.length, "docker-content-digest": digest });
      if (req.method === "HEAD") {
        res.end();
        return true;
      }
      // 80 pieces, one every 500 ms: 40 s in all.
      const piece = data.length / 80;
      let sent = 0;
      const timer = setInterval(() => {
        res.write(data.subarray(sent, sent + piece));
        sent += piece;
        if (sent >= data.length) {
          clearInterval(timer);
          res.end();
        }
      }, 500);
      res.on("close", () => clearInterval(timer));
      return true;
    };
    const config = path.join(tempDir("berth-proxy-lease-"), "config.yml");
    fs.writeFileSync(config, `proxy:\n  remoteurl: ${upstream.url}\n  timeout: 5s\n`);
    mirror = await startBerth({ args: ["--config", config], workers: 2 });
  });
  afterAll(async () => {
    await mirror?.cleanup();
    await upstream?.close();
  });

  it("one upstream GET for a 40 s download, with clients on both workers", async () => {
    const url = `${mirror.url}/v2/slow/blobs/${digest}`;
    const first = getOwnConnection(url);
    await new Promise((r) => setTimeout(r, 1000));
    // Connections alternate between the two workers: these reach both.
    const others = [getOwnConnection(url), getOwnConnection(url), getOwnConnection(url)];
    const results = await Promise.all([first, ...others]);
    for (const r of results) expect(r).toEqual({ status: 200, digest });
    expect(upstream.count("GET", `/v2/slow/blobs/${digest}`)).toBe(1);
  }, 120_000);
});
