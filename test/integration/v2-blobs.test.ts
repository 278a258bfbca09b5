import { existsSync, readdirSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path_ from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { blobOf, errorCode, RegistryClient, randomBlob, sha256 } from "../helpers/registry.js";
import { type Berth, ROOT, startBerth } from "../helpers/server.js";

let berth: Berth;
let client: RegistryClient;

beforeAll(async () => {
  berth = await startBerth({ env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
  client = new RegistryClient(berth.url);
});
afterAll(async () => {
  await berth?.cleanup();
});

describe("base", () => {
  it("answers GET /v2/ with the API version header", async () => {
    const res = await client.fetch("/v2/");
    expect(res.status).toBe(200);
    expect(res.headers.get("docker-distribution-api-version")).toBe("registry/2.0");
    expect(await res.json()).toEqual({});
  });
});

describe("blob uploads", () => {
  it("takes a monolithic POST ?digest= and serves the blob with its headers", async () => {
    const blob = randomBlob(10_000);
    const res = await client.pushBlob("mono/app", blob);
    expect(res.headers.get("location")).toContain(`/v2/mono/app/blobs/${blob.digest}`);
    expect(res.headers.get("docker-content-digest")).toBe(blob.digest);
    const head = await client.fetch(`/v2/mono/app/blobs/${blob.digest}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe("10000");
    expect(head.headers.get("docker-content-digest")).toBe(blob.digest);
    expect(head.headers.get("etag")).toBe(`"${blob.digest}"`);
    expect(head.headers.get("accept-ranges")).toBe("bytes");
    const get = await client.fetch(`/v2/mono/app/blobs/${blob.digest}`);
    expect(Buffer.from(await get.arrayBuffer()).equals(blob.data)).toBe(true);
  });

  it("starts an upload with 202, Location, Docker-Upload-UUID and Range 0-0", async () => {
    const res = await client.fetch("/v2/start/app/blobs/uploads/", { method: "POST" });
    expect(res.status).toBe(202);
    expect(res.headers.get("location")).toMatch(/\/v2\/start\/app\/blobs\/uploads\/[0-9a-f-]+$/);
    expect(res.headers.get("docker-upload-uuid")).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.headers.get("range")).toBe("0-0");
  });

  it("streams a PATCH without Content-Range (as docker sends it), then PUT ?digest=", async () => {
    const blob = randomBlob(3 * 1024 * 1024 + 7);
    const start = await client.fetch("/v2/stream/app/blobs/uploads/", { method: "POST" });
    const location = start.headers.get("location")!;
    const patch = await client.fetch(location, { method: "PATCH", body: blob.data });
    expect(patch.status).toBe(202);
    expect(patch.headers.get("range")).toBe(`0-${blob.size - 1}`);
    const put = await client.fetch(`${patch.headers.get("location")}?digest=${blob.digest}`, {
      method: "PUT",
    });
    expect(put.status).toBe(201);
    const get = await client.fetch(`/v2/stream/app/blobs/${blob.digest}`);
    expect(sha256(Buffer.from(await get.arrayBuffer()))).toBe(blob.digest);
  });

  it("takes chunks with Content-Range and a last chunk on the PUT", async () => {
    const blob = randomBlob(100_000);
    const start = await client.fetch("/v2/chunks/app/blobs/uploads/", { method: "POST" });
    let location = start.headers.get("location")!;
    const first = await client.fetch(location, {
      method: "PATCH",
      body: blob.data.subarray(0, 60_000),
      headers: { "content-range": "0-59999", "content-type": "application/octet-stream" },
    });
    expect(first.status).toBe(202);
    expect(first.headers.get("range")).toBe("0-59999");
    location = first.headers.get("location")!;
    const put = await client.fetch(`${location}?digest=${blob.digest}`, {
      method: "PUT",
      body: blob.data.subarray(60_000),
      headers: { "content-range": "60000-99999", "content-type": "application/octet-stream" },
    });
    expect(put.status).toBe(201);
    expect(put.headers.get("docker-content-digest")).toBe(blob.digest);
  });

  it("refuses an out-of-order chunk with 416 and keeps the true Range", async () => {
    const start = await client.fetch("/v2/order/app/blobs/uploads/", { method: "POST" });
    const location = start.headers.get("location")!;
    await client.fetch(location, {
      method: "PATCH",
      body: Buffer.alloc(100, 1),
      headers: { "content-range": "0-99" },
    });
    const skip = await client.fetch(location, {
      method: "PATCH",
      body: Buffer.alloc(10, 2),
      headers: { "content-range": "200-209" },
    });
    expect(skip.status).toBe(416);
    const again = await client.fetch(location, {
      method: "PATCH",
      body: Buffer.alloc(100, 1),
      headers: { "content-range": "0-99" },
    });
    expect(again.status).toBe(416);
    const status = await client.fetch(location);
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe("0-99");
    expect(status.headers.get("docker-upload-uuid")).toBeTruthy();
    // The upload goes on where it really ends.
    const next = await client.fetch(location, {
      method: "PATCH",
      body: Buffer.alloc(10, 3),
      headers: { "content-range": "100-109" },
    });
    expect(next.status).toBe(202);
    const data = Buffer.concat([Buffer.alloc(100, 1), Buffer.alloc(10, 3)]);
    const put = await client.fetch(`${location}?digest=${sha256(data)}`, { method: "PUT" });
    expect(put.status).toBe(201);
  });

  it("refuses a wrong digest with DIGEST_INVALID and makes nothing visible", async () => {
    const blob = randomBlob(500);
    const wrong = sha256("something else");
    const res = await client.fetch(`/v2/digest/app/blobs/uploads/?digest=${wrong}`, {
      method: "POST",
      body: blob.data,
    });
    expect(res.status).toBe(400);
    expect(await errorCode(res)).toBe("DIGEST_INVALID");
    expect((await client.fetch(`/v2/digest/app/blobs/${wrong}`, { method: "HEAD" })).status).toBe(404);
    expect((await client.fetch(`/v2/digest/app/blobs/${blob.digest}`, { method: "HEAD" })).status).toBe(404);

    const start = await client.fetch("/v2/digest/app/blobs/uploads/", { method: "POST" });
    const location = start.headers.get("location")!;
    await client.fetch(location, { method: "PATCH", body: blob.data });
    const put = await client.fetch(`${location}?digest=${wrong}`, { method: "PUT" });
    expect(put.status).toBe(400);
    expect(await errorCode(put)).toBe("DIGEST_INVALID");
  });

  it("refuses a malformed digest and a PUT without one", async () => {
    const bad = await client.fetch("/v2/digest/app/blobs/uploads/?digest=sha256:xyz", {
      method: "POST",
      body: "a",
    });
    expect(bad.status).toBe(400);
    expect(await errorCode(bad)).toBe("DIGEST_INVALID");
    const start = await client.fetch("/v2/digest/app/blobs/uploads/", { method: "POST" });
    const none = await client.fetch(start.headers.get("location")!, { method: "PUT" });
    expect(none.status).toBe(400);
  });

  it("cancels an upload with DELETE, after which it is unknown", async () => {
    const start = await client.fetch("/v2/cancel/app/blobs/uploads/", { method: "POST" });
    const location = start.headers.get("location")!;
    expect((await client.fetch(location, { method: "DELETE" })).status).toBe(204);
    const status = await client.fetch(location);
    expect(status.status).toBe(404);
    expect(await errorCode(status)).toBe("BLOB_UPLOAD_UNKNOWN");
    const unknown = await client.fetch("/v2/cancel/app/blobs/uploads/00000000-0000-0000-0000-000000000000", {
      method: "PATCH",
      body: "x",
    });
    expect(unknown.status).toBe(404);
  });

  it("keeps an upload of another repository out of reach", async () => {
    const start = await client.fetch("/v2/owner/app/blobs/uploads/", { method: "POST" });
    const id = start.headers.get("docker-upload-uuid")!;
    const res = await client.fetch(`/v2/other/app/blobs/uploads/${id}`);
    expect(res.status).toBe(404);
  });
});

describe("blob reads", () => {
  it("serves ranges with 206 and refuses unsatisfiable ones with 416", async () => {
    const blob = blobOf(Buffer.from("0123456789"));
    await client.pushBlob("range/app", blob);
    const url = `/v2/range/app/blobs/${blob.digest}`;
    const part = await client.fetch(url, { headers: { range: "bytes=2-5" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe("bytes 2-5/10");
    expect(await part.text()).toBe("2345");
    const tail = await client.fetch(url, { headers: { range: "bytes=-3" } });
    expect(await tail.text()).toBe("789");
    const open = await client.fetch(url, { headers: { range: "bytes=8-" } });
    expect(await open.text()).toBe("89");
    const bad = await client.fetch(url, { headers: { range: "bytes=20-30" } });
    expect(bad.status).toBe(416);
    expect(bad.headers.get("content-range")).toBe("bytes */10");
  });

  it("shows a blob only in repositories that pushed or mounted it", async () => {
    const blob = randomBlob(64);
    await client.pushBlob("vis/a", blob);
    const other = await client.fetch(`/v2/vis/b/blobs/${blob.digest}`);
    expect(other.status).toBe(404);
    expect(await errorCode(other)).toBe("BLOB_UNKNOWN");
    expect((await client.fetch(`/v2/vis/b/blobs/${blob.digest}`, { method: "HEAD" })).status).toBe(404);
  });

  it("mounts across repositories: 201 when possible, 202 with an upload otherwise", async () => {
    const blob = randomBlob(128);
    await client.pushBlob("mount/src", blob);
    const mounted = await client.fetch(`/v2/mount/dst/blobs/uploads/?mount=${blob.digest}&from=mount/src`, {
      method: "POST",
    });
    expect(mounted.status).toBe(201);
    expect(mounted.headers.get("docker-content-digest")).toBe(blob.digest);
    expect(mounted.headers.get("location")).toContain(`/v2/mount/dst/blobs/${blob.digest}`);
    expect((await client.fetch(`/v2/mount/dst/blobs/${blob.digest}`, { method: "HEAD" })).status).toBe(200);

    const missing = sha256("not pushed anywhere");
    const fallback = await client.fetch(`/v2/mount/dst2/blobs/uploads/?mount=${missing}&from=mount/src`, {
      method: "POST",
    });
    expect(fallback.status).toBe(202);
    expect(fallback.headers.get("location")).toContain("/v2/mount/dst2/blobs/uploads/");

    const noFrom = await client.fetch(`/v2/mount/dst3/blobs/uploads/?mount=${blob.digest}`, {
      method: "POST",
    });
    expect(noFrom.status).toBe(201);
  });

  it("unlinks a blob from one repository with DELETE", async () => {
    const blob = randomBlob(32);
    await client.pushBlob("del/a", blob);
    await client.pushBlob("del/b", blob);
    expect((await client.fetch(`/v2/del/a/blobs/${blob.digest}`, { method: "DELETE" })).status).toBe(202);
    expect((await client.fetch(`/v2/del/a/blobs/${blob.digest}`, { method: "HEAD" })).status).toBe(404);
    expect((await client.fetch(`/v2/del/b/blobs/${blob.digest}`, { method: "HEAD" })).status).toBe(200);
    expect((await client.fetch(`/v2/del/a/blobs/${blob.digest}`, { method: "DELETE" })).status).toBe(404);
  });
});

describe("names and bad input", () => {
  it("refuses invalid names with 400 NAME_INVALID", async () => {
    for (const name of ["UPPER/case", "a//b", "-lead", "trail-", "a..b", "x".repeat(256)]) {
      const res = await client.fetch(`/v2/${name}/tags/list`);
      expect(res.status, name).toBe(400);
      expect(await errorCode(res)).toBe("NAME_INVALID");
    }
  });

  it("never escapes the data directory", async () => {
    for (const path of [
      "/v2/../../etc/passwd/blobs/sha256:abc",
      "/v2/a/blobs/..%2f..%2fetc",
      "/v2/a/blobs/sha256:..%2F..%2F",
    ]) {
      const res = await client.fetch(path);
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect(res.status).toBeLessThan(500);
    }
  });

  it("answers unknown repositories and endpoints with 404", async () => {
    const res = await client.fetch("/v2/nobody/here/tags/list");
    expect(res.status).toBe(404);
    expect(await errorCode(res)).toBe("NAME_UNKNOWN");
    expect((await client.fetch("/v2/x/nothing")).status).toBe(404);
  });

  it("answers a method a resource does not have with 405", async () => {
    const res = await client.fetch("/v2/a/tags/list", { method: "DELETE" });
    expect(res.status).toBe(405);
    expect(await errorCode(res)).toBe("UNSUPPORTED");
  });
});

describe("blob reads with sendfile(2) (plain HTTP/1.1)", () => {
  const big = randomBlob(24 * 1024 * 1024);
  const path = `/v2/sendfile/app/blobs/${big.digest}`;
  beforeAll(async () => {
    await client.pushBlob("sendfile/app", big);
  });

  /** GET over a raw socket, reading slowly (pauses fill the server's socket buffer: EAGAIN, then poll). */
  function rawGet(
    headers: string,
    options: { pauseEvery?: number; abortAfter?: number } = {},
  ): Promise<{ head: string; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(berth.port, "127.0.0.1");
      const chunks: Buffer[] = [];
      let received = 0;
      let paused = 0;
      socket.on("data", (chunk: Buffer) => {
        chunks.push(chunk);
        received += chunk.length;
        if (options.abortAfter !== undefined && received >= options.abortAfter) {
          socket.destroy();
          resolve({ head: "", body: Buffer.concat(chunks) });
          return;
        }
        if (options.pauseEvery && received - paused > options.pauseEvery) {
          paused = received;
          socket.pause();
          setTimeout(() => socket.resume(), 30);
        }
      });
      socket.on("error", reject);
      socket.on("end", () => {
        const all = Buffer.concat(chunks);
        const split = all.indexOf("\r\n\r\n");
        resolve({ head: all.subarray(0, split).toString(), body: all.subarray(split + 4) });
      });
      socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${headers}\r\n`);
    });
  }

  function openFds(): number {
    return readdirSync(`/proc/${berth.process.pid}/fd`).length;
  }

  it("is built (the fast path under test exists)", () => {
    expect(existsSync(path_.join(ROOT, "native/sendfile/build/Release/berth_sendfile.node"))).toBe(true);
  });

  it("serves a whole blob to a slow reader, and the connection carries the next request", async () => {
    const slow = await rawGet("", { pauseEvery: 2 * 1024 * 1024 });
    expect(slow.head).toMatch(/^HTTP\/1\.1 200 /);
    expect(slow.head.toLowerCase()).toContain(`content-length: ${big.size}`);
    expect(slow.body.equals(big.data)).toBe(true);
    // Keep-alive: two GETs and a HEAD on one connection; each response framed right.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    for (const method of ["GET", "HEAD", "GET"]) {
      const { status, body, socket } = await new Promise<{ status: number; body: Buffer; socket: unknown }>(
        (resolve, reject) => {
          const req = http.request(`${berth.url}${path}`, { agent, method }, (res) => {
            const parts: Buffer[] = [];
            res.on("data", (c: Buffer) => parts.push(c));
            res.on("end", () =>
              resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts), socket: req.socket }),
            );
          });
          req.on("error", reject);
          req.end();
        },
      );
      sockets.add(socket);
      expect(status).toBe(200);
      if (method === "GET") expect(sha256(body)).toBe(big.digest);
      else expect(body.length).toBe(0);
    }
    expect(sockets.size).toBe(1);
    agent.destroy();
  });

  it("serves ranges", async () => {
    for (const [range, start, end] of [
      ["bytes=0-0", 0, 0],
      ["bytes=1000-2000999", 1000, 2000999],
      [`bytes=${big.size - 10}-`, big.size - 10, big.size - 1],
      ["bytes=-4096", big.size - 4096, big.size - 1],
    ] as const) {
      const res = await rawGet(`Range: ${range}\r\n`);
      expect(res.head).toMatch(/^HTTP\/1\.1 206 /);
      expect(res.head.toLowerCase()).toContain(`content-range: bytes ${start}-${end}/${big.size}`);
      expect(res.body.equals(big.data.subarray(start, end + 1))).toBe(true);
    }
  });

  it("survives clients that hang up mid-transfer, and keeps no descriptor open for them", async () => {
    await rawGet("", { abortAfter: 1 }); // warm: the first request opens the database's files
    await new Promise((r) => setTimeout(r, 300));
    const before = openFds();
    for (let i = 0; i < 10; i++) await rawGet("", { abortAfter: 64 * 1024 * (i + 1) });
    await new Promise((r) => setTimeout(r, 500));
    expect(openFds()).toBeLessThanOrEqual(before + 2);
    const res = await client.fetch(path);
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(big.digest);
  });
});
