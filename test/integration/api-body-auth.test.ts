import { readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { basic, writeAuthConfig } from "./api-push.js";

// A body is read only once its caller is authenticated, and a caller who never authenticated does not
// get its refused body drained: its connection closes after the answer (issue 21, item 3). On main, 40
// concurrent anonymous 16 MiB POSTs to /api/v1/events/redeliver were each parsed (16 MiB JSON limit)
// before the 401, and the worker grew from 72 MB to 557 MB.
const BIG = 16 * 1024 * 1024;

let berth: Berth;
let configDir: string;

beforeAll(async () => {
  configDir = tempDir("berth-body-auth-");
  const config = writeAuthConfig(configDir, { admin: "admin-pw" });
  berth = await startBerth({ args: ["--config", config] });
}, 60_000);

afterAll(async () => {
  await berth?.cleanup();
  rmSync(configDir, { recursive: true, force: true });
});

/** The resident memory of the (single) Berth process, in bytes. */
function rss(): number {
  const status = readFileSync(`/proc/${berth.process.pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

interface Sent {
  status: number;
  body: string;
  /** Bytes of the body written before the server closed the connection. */
  sent: number;
  ms: number;
}

/**
 * Sends `method target` with a body of `size` bytes over one connection (keep-alive unless `close`), as
 * fast as the server takes it; stops writing when the server closes. Resolves when the connection closes.
 */
function sendBody(
  target: string,
  options: {
    method?: string;
    size?: number;
    type?: string;
    authorization?: string;
    close?: boolean;
    /** Pause this long after each 64 KiB (a client on a slow link). */
    pauseMs?: number;
  } = {},
): Promise<Sent> {
  const size = options.size ?? BIG;
  const started = Date.now();
  return new Promise((resolve) => {
    const socket = net.connect(berth.port, "127.0.0.1");
    let received = "";
    let sent = 0;
    socket.on("data", (d: Buffer) => {
      received += d.toString("latin1");
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1] ?? 0);
      resolve({
        status,
        body: received.slice(received.indexOf("\r\n\r\n") + 4),
        sent,
        ms: Date.now() - started,
      });
    });
    // Ends the test's side if the server kept the connection open for ever.
    const timer = setTimeout(() => socket.destroy(), 20_000);
    socket.on("close", () => clearTimeout(timer));
    socket.on("connect", async () => {
      socket.write(
        `${options.method ?? "POST"} ${target} HTTP/1.1\r\nHost: ${berth.host}\r\n` +
          (options.close ? "Connection: close\r\n" : "") +
          (options.authorization ? `Authorization: ${options.authorization}\r\n` : "") +
          `Content-Type: ${options.type ?? "application/json"}\r\nContent-Length: ${size}\r\n\r\n`,
      );
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      chunk[0] = 0x5b; // "[": a JSON array of spaces, never closed
      while (sent < size && !socket.destroyed) {
        const piece = chunk.subarray(0, Math.min(chunk.length, size - sent));
        sent += piece.length;
        if (options.pauseMs) await new Promise((r) => setTimeout(r, options.pauseMs));
        if (!socket.write(piece)) {
          await new Promise<void>((r) => {
            socket.once("drain", r);
            socket.once("close", r);
          });
        }
      }
      // The whole body went out: the server answers and (keep-alive) the test ends the connection.
      setTimeout(() => socket.end(), 2_000);
    });
  });
}

describe("bodies from callers who never authenticated", () => {
  it("40 concurrent anonymous 16 MiB POSTs to the API: 401s, closed unread, no memory growth", async () => {
    const before = rss();
    const results = await Promise.all(Array.from({ length: 40 }, () => sendBody("/api/v1/events/redeliver")));
    const after = rss();
    for (const r of results) {
      expect(r.status).toBe(401);
      expect(JSON.parse(r.body).errors[0].code).toBe("UNAUTHORIZED");
    }
    expect(after - before).toBeLessThan(64 * 1024 * 1024);
  });

  // A client on a slow link (about 12 MB/s) declaring 1 GiB: draining it would take 80 s or more.
  const slow = { size: 1024 * 1024 * 1024, pauseMs: 5 };

  it("an anonymous upload body is answered and closed, not drained, keep-alive or not", async () => {
    for (const close of [false, true]) {
      const r = await sendBody(`/v2/team/app/blobs/uploads/?digest=sha256:${"0".repeat(64)}`, {
        ...slow,
        type: "application/octet-stream",
        close,
      });
      expect(r.status).toBe(401);
      expect(r.ms).toBeLessThan(10_000);
      expect(r.sent).toBeLessThan(slow.size);
    }
  });

  it("an anonymous API body and bad credentials: the same", async () => {
    for (const authorization of [undefined, basic("admin", "wrong")]) {
      const r = await sendBody("/api/v1/events/redeliver", { ...slow, authorization });
      expect(r.status).toBe(401);
      expect(r.ms).toBeLessThan(10_000);
    }
  });
});

describe("bodies from administrators", () => {
  const admin = basic("admin", "admin-pw");

  it("API bodies over 64 KiB are refused with 413", async () => {
    const res = await fetch(`${berth.url}/api/v1/events/redeliver`, {
      method: "POST",
      headers: { authorization: admin, "content-type": "application/json" },
      body: JSON.stringify({ endpoint: "x".repeat(70 * 1024), all: true }),
    });
    expect(res.status).toBe(413);
    expect((await res.json()).errors[0].code).toBe("SIZE_INVALID");
  });

  it("a small JSON body is read once the caller is authenticated; other types get 415", async () => {
    const res = await fetch(`${berth.url}/api/v1/events/redeliver`, {
      method: "POST",
      headers: { authorization: admin, "content-type": "application/json" },
      body: JSON.stringify({ endpoint: "nowhere" }),
    });
    // Parsed: the route itself says what is missing.
    expect(res.status).toBe(400);
    expect((await res.json()).errors[0].message).toMatch(/give "event"/);
    const text = await fetch(`${berth.url}/api/v1/events/redeliver`, {
      method: "POST",
      headers: { authorization: admin, "content-type": "text/plain" },
      body: "all",
    });
    expect(text.status).toBe(415);
    const broken = await fetch(`${berth.url}/api/v1/events/redeliver`, {
      method: "POST",
      headers: { authorization: admin, "content-type": "application/json" },
      body: "{",
    });
    expect(broken.status).toBe(400);
  });
});
