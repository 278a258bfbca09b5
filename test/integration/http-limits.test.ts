import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, freePort, portOpen, startBerth, tempDir } from "../helpers/server.js";
import { makePki } from "./auth-fixtures.js";

// What one client can hold of a worker (issue 21, item 3): on main, a body sending 1 byte every 20 s on an
// upload POST stayed open for 160 s and more, and connections were not limited per client. Here
// http.idletimeout and http.headertimeout are 2 s and a client may hold 4 connections.
let berth: Berth;

beforeAll(async () => {
  const dir = tempDir("berth-limits-");
  const config = path.join(dir, "config.yml");
  writeFileSync(
    config,
    [
      "http:",
      "  idletimeout: 2s",
      "  headertimeout: 2s",
      "  maxclientconnections: 4",
      // The test's client is on loopback, which is a trusted proxy by default (and then exempt).
      "  trustedproxies: []",
      "",
    ].join("\n"),
  );
  berth = await startBerth({ args: ["--config", config] });
}, 60_000);
afterAll(async () => {
  await berth?.cleanup();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Conversation {
  socket: net.Socket;
  /** Resolves when the server closes: what it sent, and after how long. */
  closed: Promise<{ text: string; ms: number }>;
  connected: Promise<void>;
}

function connect(port = berth.port): Conversation {
  const started = Date.now();
  const socket = net.connect(port, "127.0.0.1");
  let text = "";
  socket.on("data", (d: Buffer) => {
    text += d.toString("latin1");
  });
  socket.on("error", () => {});
  const closed = new Promise<{ text: string; ms: number }>((resolve) =>
    socket.on("close", () => resolve({ text, ms: Date.now() - started })),
  );
  const connected = new Promise<void>((resolve) => socket.once("connect", () => resolve()));
  // Without the limits the server never closes these: end the test's side after a while.
  const timer = setTimeout(() => socket.destroy(), 15_000);
  socket.on("close", () => clearTimeout(timer));
  return { socket, closed, connected };
}

function statusOf(text: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
}

describe("idle timeouts", () => {
  it("a body that stops coming is cut after http.idletimeout with 408", async () => {
    const c = connect();
    await c.connected;
    c.socket.write(
      `POST /v2/slow/loris/blobs/uploads/?digest=sha256:${"0".repeat(64)} HTTP/1.1\r\nHost: x\r\n` +
        "Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n0123456789",
    );
    // One byte every 3 s: more than the idle timeout between bytes.
    const dribble = setInterval(() => c.socket.writable && c.socket.write("x"), 3_000);
    const { text, ms } = await c.closed;
    clearInterval(dribble);
    expect(statusOf(text)).toBe(408);
    expect(JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4)).errors[0].code).toBe("BLOB_UPLOAD_INVALID");
    expect(ms).toBeLessThan(6_000);
  });

  it("a slow but moving upload goes through, however long it takes in total", async () => {
    const data = Buffer.alloc(16 * 1024, 7);
    const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
    const c = connect();
    await c.connected;
    c.socket.write(
      `POST /v2/slow/mover/blobs/uploads/?digest=${digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n` +
        `Content-Type: application/octet-stream\r\nContent-Length: ${data.length}\r\n\r\n`,
    );
    // 16 pieces, one every 500 ms: 8 s in all, four times the idle timeout, never idle for long.
    for (let i = 0; i < 16; i++) {
      c.socket.write(data.subarray(i * 1024, (i + 1) * 1024));
      await sleep(500);
    }
    const { text } = await c.closed;
    expect(statusOf(text), text).toBe(201);
  });

  it("headers that stop coming, and a connection that sends nothing, are closed after http.headertimeout", async () => {
    const partial = connect();
    await partial.connected;
    partial.socket.write("GET /v2/ HTTP/1.1\r\nHost: x\r\n");
    const silent = connect();
    const [a, b] = await Promise.all([partial.closed, silent.closed]);
    expect(statusOf(a.text)).toBe(408);
    expect(a.ms).toBeLessThan(6_000);
    expect(b.ms).toBeLessThan(6_000);
  });
});

describe("connections per client", () => {
  it("a fifth connection from the same address is closed at once; a slot freed is usable again", async () => {
    const open: Conversation[] = [];
    for (let i = 0; i < 4; i++) {
      const c = connect();
      await c.connected;
      c.socket.write("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n");
      open.push(c);
    }
    await sleep(200);
    const fifth = connect();
    const refused = await fifth.closed;
    expect(refused.text).toBe("");
    expect(refused.ms).toBeLessThan(1_000);

    open[0]!.socket.destroy();
    await open[0]!.closed;
    await sleep(100);
    const again = connect();
    await again.connected;
    again.socket.write("GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(statusOf((await again.closed).text)).toBe(200);
    for (const c of open) c.socket.destroy();
  });
});

describe("the ACME HTTP listener (http.tls.letsencrypt.httpaddr)", () => {
  let acme: Berth;
  let httpPort: number;
  beforeAll(async () => {
    const dir = tempDir("berth-limits-acme-");
    httpPort = await freePort();
    const config = path.join(dir, "config.yml");
    // No CA answers: Berth serves a temporary certificate, and its HTTP listener is up all the same.
    writeFileSync(
      config,
      JSON.stringify({
        http: {
          headertimeout: "2s",
          maxclientconnections: 4,
          trustedproxies: [],
          tls: {
            letsencrypt: {
              hosts: ["localhost"],
              email: "ops@example.com",
              directoryurl: `https://127.0.0.1:${await freePort()}/dir`,
              challenges: ["http-01"],
              httpaddr: `127.0.0.1:${httpPort}`,
            },
          },
        },
      }),
    );
    acme = await startBerth({ args: ["--config", config], scheme: "https" });
    for (let i = 0; i < 100 && !(await portOpen(httpPort)); i++) await sleep(100);
  }, 60_000);
  afterAll(async () => {
    await acme?.cleanup();
  });

  it("closes headers that stop coming, and caps connections per client", async () => {
    const partial = connect(httpPort);
    await partial.connected;
    partial.socket.write("GET / HTTP/1.1\r\nHost: localhost\r\n");
    const open: Conversation[] = [];
    for (let i = 0; i < 3; i++) {
      const c = connect(httpPort);
      await c.connected;
      open.push(c);
    }
    await sleep(200);
    const fifth = connect(httpPort);
    const refused = await fifth.closed;
    expect(refused.text).toBe("");
    expect(refused.ms).toBeLessThan(1_000);
    const slow = await partial.closed;
    expect(slow.ms).toBeLessThan(6_000);
    for (const c of open) c.socket.destroy();
  });
});

describe("over TLS with HTTP/2", () => {
  let tlsBerth: Berth;
  let ca: Buffer;
  beforeAll(async () => {
    const pki = makePki();
    ca = readFileSync(pki.caCert);
    const dir = tempDir("berth-limits-h2-");
    const config = path.join(dir, "config.yml");
    writeFileSync(config, ["http:", "  idletimeout: 2s", "  headertimeout: 2s", ""].join("\n"));
    tlsBerth = await startBerth({
      args: ["--config", config, "--tls-cert", pki.serverChain, "--tls-key", pki.serverKey],
      scheme: "https",
    });
  }, 60_000);
  afterAll(async () => {
    await tlsBerth?.cleanup();
  });

  it("HTTP/1.1 over TLS: headers that stop coming, and a connection that sends nothing, are closed", async () => {
    const port = Number(new URL(tlsBerth.url).port);
    const open = (head: string | null) =>
      new Promise<{ text: string; ms: number }>((resolve) => {
        const started = Date.now();
        const socket = tls.connect(
          { host: "127.0.0.1", port, ca, servername: "localhost", ALPNProtocols: ["http/1.1"] },
          () => {
            if (head) socket.write(head);
          },
        );
        let text = "";
        socket.on("data", (d: Buffer) => {
          text += d.toString("latin1");
        });
        socket.on("error", () => {});
        const giveUp = setTimeout(() => socket.destroy(), 15_000);
        socket.on("close", () => {
          clearTimeout(giveUp);
          resolve({ text, ms: Date.now() - started });
        });
      });
    const [partial, silent] = await Promise.all([
      open("GET /v2/ HTTP/1.1\r\nHost: localhost\r\n"),
      open(null),
    ]);
    expect(statusOf(partial.text)).toBe(408);
    expect(partial.ms).toBeLessThan(6_000);
    expect(silent.ms).toBeLessThan(6_000);
  });

  it("a stream whose body stops coming is reset after http.idletimeout; the session goes on", async () => {
    const session = http2.connect(tlsBerth.url, { ca, servername: "localhost" });
    session.on("error", () => {});
    try {
      const started = Date.now();
      const stream = session.request({
        ":method": "POST",
        ":path": `/v2/slow/h2/blobs/uploads/?digest=sha256:${"0".repeat(64)}`,
        "content-type": "application/octet-stream",
        "content-length": "1000",
      });
      stream.write(Buffer.alloc(10, 1));
      // Without the limit the server never resets it: end the test's side after a while.
      const giveUp = setTimeout(() => stream.close(), 15_000);
      stream.on("close", () => clearTimeout(giveUp));
      const closed = await new Promise<{ code: number; ms: number }>((resolve) => {
        stream.on("error", () => {});
        stream.resume();
        stream.on("close", () => resolve({ code: stream.rstCode ?? -1, ms: Date.now() - started }));
      });
      expect(closed.code).toBe(http2.constants.NGHTTP2_CANCEL);
      expect(closed.ms).toBeLessThan(6_000);
      // The same session still answers.
      const ping = session.request({ ":path": "/v2/" });
      const status = await new Promise<number>((resolve) => {
        ping.on("response", (h) => resolve(Number(h[":status"])));
        ping.resume();
      });
      expect(status).toBe(200);
    } finally {
      session.close();
    }
  });
});
