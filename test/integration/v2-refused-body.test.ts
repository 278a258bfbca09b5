import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Balancer, startBalancer } from "../helpers/balancer.js";
import { type Berth, startBerth } from "../helpers/server.js";

// An error that comes before a request's body was read (an unknown upload, a busy one, a refused
// credential) must reach the client even when the connection closes after the answer: nginx sends
// `Connection: close` to its upstreams, and a server that closes at once with the body half-sent resets the
// connection, which nginx reports as a 502 in place of the answer.
const run = promisify(execFile);
const BODY = 48 * 1024 * 1024;
let berth: Berth;
let balancer: Balancer;
let bodyFile: string;

beforeAll(async () => {
  berth = await startBerth({ args: ["--workers", "1"] });
  balancer = await startBalancer([`127.0.0.1:${berth.port}`]);
  bodyFile = path.join(berth.dataDir, "..", "refused-body.bin");
  writeFileSync(bodyFile, Buffer.alloc(BODY, 3));
}, 60_000);
afterAll(async () => {
  await balancer?.stop();
  await berth?.cleanup();
});

/** Sends a PATCH with a big body and `Connection: close`; the status, and whether all of the body went out. */
function patchWithClose(target: string): Promise<{ status: number; sentAll: boolean; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(berth.port, "127.0.0.1");
    let received = "";
    let sentAll = false;
    socket.on("data", (d: Buffer) => {
      received += d.toString("latin1");
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1] ?? 0);
      resolve({ status, sentAll, body: received.slice(received.indexOf("\r\n\r\n") + 4) });
    });
    socket.on("connect", async () => {
      socket.write(
        `PATCH ${target} HTTP/1.1\r\nHost: ${berth.host}\r\nConnection: close\r\n` +
          `Content-Type: application/octet-stream\r\nContent-Length: ${BODY}\r\n\r\n`,
      );
      const chunk = Buffer.alloc(256 * 1024, 5);
      try {
        for (let sent = 0; sent < BODY; sent += chunk.length) {
          if (socket.destroyed) return;
          if (!socket.write(chunk)) await new Promise((r) => socket.once("drain", r));
        }
        sentAll = !socket.destroyed;
      } catch (err) {
        reject(err);
      }
    });
  });
}

describe("errors answered before the body is read", () => {
  it("read the rest of the body before closing a Connection: close request", async () => {
    const res = await patchWithClose("/v2/refused/body/blobs/uploads/00000000-0000-4000-8000-000000000000");
    expect(res.status).toBe(404);
    expect(JSON.parse(res.body).errors[0].code).toBe("BLOB_UPLOAD_UNKNOWN");
    expect(res.sentAll).toBe(true);
  });

  it("reach the client through nginx as the spec's error, never a 502", async () => {
    for (let i = 0; i < 5; i++) {
      const { stdout } = await run("curl", [
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        `@${bodyFile}`,
        `${balancer.url}/v2/refused/body/blobs/uploads/00000000-0000-4000-8000-00000000000${i}`,
      ]);
      expect(stdout, balancer.errors()).toBe("404");
    }
  });
});
