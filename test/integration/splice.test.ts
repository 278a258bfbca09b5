import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { blobBody, sendfileBytes, spliceable } from "../../src/http/sendfile.js";
import { httpGetBody, isSocketBody, type SocketBody } from "../../src/storage/socket-body.js";

// The zero-copy path for blobs on S3 over plain HTTP (src/storage/socket-body.ts, native/sendfile's
// splice): a stand-in object store (any HTTP server answers the same GET), and a registry-side server that
// hands the store's socket to blobBody as the blob route does.
const blob = randomBytes(9 * 1024 * 1024 + 123);
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
/** The stand-in store's idle limit once a body flows. */
const IDLE_MS = 1_000;

let store: http.Server;
let storeUrl: string;
let front: http.Server;
let frontUrl: string;
/** What the front server saw of its last response: bytes sent by splice, and whether it spliced at all. */
let last: { spliced: number; socketBody: boolean; error?: string } = { spliced: 0, socketBody: false };

function listen(server: http.Server): Promise<string> {
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`),
    ),
  );
}

beforeAll(async () => {
  store = http.createServer((req, res) => {
    if (req.url?.startsWith("/missing")) return res.writeHead(404).end("<Error/>");
    if (req.url?.startsWith("/broken")) return res.writeHead(500).end("<Error/>");
    if (req.url?.startsWith("/stall")) {
      // Promises the whole blob, sends half, then sends nothing more and keeps the connection open.
      res.writeHead(200, { "Content-Length": blob.length });
      res.write(blob.subarray(0, blob.length >> 1));
      res.on("close", () => {});
      return;
    }
    if (req.url?.startsWith("/short")) {
      // Promises the whole blob, sends half, hangs up.
      res.writeHead(200, { "Content-Length": blob.length });
      res.write(blob.subarray(0, blob.length >> 1), () => res.socket?.destroy());
      return;
    }
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
    if (m) {
      const [start, end] = [Number(m[1]), Number(m[2])];
      res.writeHead(206, { "Content-Length": end - start + 1 });
      return res.end(blob.subarray(start, end + 1));
    }
    res.writeHead(200, { "Content-Length": blob.length });
    res.end(blob);
  });
  storeUrl = await listen(store);
  front = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    const start = Number(url.searchParams.get("start") ?? 0);
    const end = Number(url.searchParams.get("end") ?? blob.length - 1);
    const range = url.searchParams.has("start") ? { start, end } : undefined;
    const length = end - start + 1;
    const got = await httpGetBody(new URL(`${storeUrl}${url.pathname}`), range, length, 5_000, IDLE_MS);
    if (got === null || got === "missing") return res.writeHead(got === null ? 502 : 404).end();
    last = { spliced: 0, socketBody: isSocketBody(got) };
    const body = blobBody(req, got, start, length);
    res.writeHead(200, { "Content-Length": length });
    res.on("close", () => {
      last.spliced = res.socket ? sendfileBytes(res.socket) : last.spliced;
    });
    body.on("error", (err) => {
      last.error = err.message;
      res.destroy();
    });
    const socket = res.socket;
    res.on("finish", () => {
      if (socket) last.spliced = sendfileBytes(socket);
    });
    body.pipe(res);
  });
  frontUrl = await listen(front);
});

afterAll(async () => {
  await new Promise((r) => front.close(r));
  await new Promise((r) => store.close(r));
});

describe("splicing a blob from the store's socket into the client's", () => {
  it("sends the whole blob and ranges byte for byte, through splice(2)", async () => {
    const whole = Buffer.from(await (await fetch(`${frontUrl}/blob`)).arrayBuffer());
    expect(sha(whole)).toBe(sha(blob));
    expect(last.socketBody).toBe(true);
    // What the store sent with its headers went through JavaScript; the rest was spliced.
    expect(last.spliced).toBeGreaterThan(blob.length - 256 * 1024);
    const part = Buffer.from(await (await fetch(`${frontUrl}/blob?start=1000&end=4000000`)).arrayBuffer());
    expect(part.equals(blob.subarray(1000, 4_000_001))).toBe(true);
  });

  it("tells a missing object from one it cannot take, and leaves both to the caller", async () => {
    expect((await fetch(`${frontUrl}/missing`)).status).toBe(404);
    expect((await fetch(`${frontUrl}/broken`)).status).toBe(502);
    // A length other than the one the database has: not taken either.
    expect(await httpGetBody(new URL(`${storeUrl}/blob`), undefined, blob.length - 1, 5_000)).toBeNull();
    expect(await httpGetBody(new URL("https://127.0.0.1:1/blob"), undefined, 1, 5_000)).toBeNull();
  });

  it("cuts the client's response short when the store hangs up early", async () => {
    last = { spliced: 0, socketBody: false };
    const res = await fetch(`${frontUrl}/short`);
    await expect(res.arrayBuffer()).rejects.toThrow();
    expect(last.socketBody).toBe(true);
    expect(last.error).toMatch(/ECONNRESET|closed/);
  });

  it("cuts a spliced read after the idle timeout when the store stalls mid-body", async () => {
    last = { spliced: 0, socketBody: false };
    const t0 = Date.now();
    const res = await fetch(`${frontUrl}/stall`);
    await expect(res.arrayBuffer()).rejects.toThrow();
    expect(last.socketBody).toBe(true);
    expect(last.error).toMatch(/ETIMEDOUT/);
    expect(Date.now() - t0).toBeLessThan(IDLE_MS + 4_000);
  }, 15_000);

  it("cuts a read through JavaScript too when the store stalls mid-body", async () => {
    const got = (await httpGetBody(
      new URL(`${storeUrl}/stall`),
      undefined,
      blob.length,
      5_000,
      500,
    )) as SocketBody;
    const read = (async () => {
      for await (const _ of got) {
      }
    })();
    await expect(read).rejects.toThrow(/sent nothing for 500 ms/);
  }, 15_000);

  it("streams through JavaScript when nothing splices it", async () => {
    const got = (await httpGetBody(new URL(`${storeUrl}/blob`), undefined, blob.length, 5_000)) as SocketBody;
    const chunks: Buffer[] = [];
    for await (const chunk of got) chunks.push(chunk as Buffer);
    expect(sha(Buffer.concat(chunks))).toBe(sha(blob));
  });

  it("is on only for plain HTTP/1.1 requests with the addon", async () => {
    const seen = await new Promise<boolean>((resolve) => {
      const server = http.createServer((req, res) => {
        resolve(spliceable(req));
        res.end();
        server.close();
      });
      server.listen(0, "127.0.0.1", () =>
        fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`).catch(() => {}),
      );
    });
    expect(seen).toBe(true);
  });
});
