/**
 * Upload leases end by time, or at once when their holder is a process seen to be gone from where it ran.
 * A process in another container may share this hostname without sharing its PID namespace: a lease whose
 * `host:pid` names no process here but no place (boot id and PID namespace) like ours can still be alive,
 * so it must not be taken over before its time runs out. The lease rows are set by hand in the server's
 * database, as another process would have left them. A writer whose lease is taken over stops writing.
 */
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import fs from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { PROCESS_PLACE } from "../../src/metadata/gc-queries.js";
import { openTestDb } from "../helpers/metadata-db.js";
import { RegistryClient, randomBlob } from "../helpers/registry.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";

const dirs: string[] = [];
const started: Berth[] = [];
afterEach(async () => {
  for (const b of started.splice(0)) await b.stop().catch(() => {});
  for (const d of dirs.splice(0)) await fs.rm(d, { recursive: true, force: true });
});

async function start(dataDir: string) {
  const berth = await startBerth({ dataDir });
  started.push(berth);
  return { berth, client: new RegistryClient(berth.url) };
}

async function stop(berth: Berth): Promise<void> {
  await berth.stop();
  started.splice(started.indexOf(berth), 1);
}

async function setLease(
  dataDir: string,
  id: string,
  holder: string | null,
  until: number | null,
): Promise<void> {
  const db = await openTestDb(dataDir);
  await db.run("update uploads set lease_holder = ?, lease_until = ? where id = ?", holder, until, id);
  await db.close();
}

/** The pid of a process that has exited: on this host it looks dead. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]);
  return Number(child.stdout.toString());
}

describe("upload leases", () => {
  it("are not taken over while their time runs, even when their holder's pid looks dead here", async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const blob = randomBlob(2000);
    let { berth, client } = await start(dataDir);
    const post = await client.fetch("/v2/lease/app/blobs/uploads/", { method: "POST" });
    const location = new URL(post.headers.get("location")!).pathname;
    const id = post.headers.get("docker-upload-uuid")!;
    const first = await client.fetch(location, {
      method: "PATCH",
      body: blob.data.subarray(0, 1000),
      headers: { "content-type": "application/octet-stream", "content-range": "0-999" },
    });
    expect(first.status).toBe(202);
    await stop(berth);

    // A live lease of a process in another PID namespace with the same hostname.
    await setLease(dataDir, id, `${os.hostname()}:${deadPid()}`, Date.now() + 10 * 60_000);
    ({ berth, client } = await start(dataDir));
    const second = () =>
      client.fetch(location, {
        method: "PATCH",
        body: blob.data.subarray(1000),
        headers: { "content-type": "application/octet-stream", "content-range": "1000-1999" },
      });
    const refused = await second();
    expect(refused.status).toBe(416);
    expect(refused.headers.get("range")).toBe("0-999");
    const status = await client.fetch(location);
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe("0-999");
    await stop(berth);

    // Once its time has run out, the lease is free, whoever held it.
    await setLease(dataDir, id, `${os.hostname()}:${deadPid()}`, Date.now() - 1);
    ({ berth, client } = await start(dataDir));
    const taken = await second();
    expect(taken.status).toBe(202);
    expect(taken.headers.get("range")).toBe("0-1999");
    const put = await client.fetch(`${location}?digest=${blob.digest}`, { method: "PUT" });
    expect(put.status).toBe(201);
  });

  it("wait for a lease that its holder stopped renewing and take it when it runs out; refuse while it is renewed", async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const blob = randomBlob(2000);
    const { client } = await start(dataDir);
    const post = await client.fetch("/v2/lease/dead/blobs/uploads/", { method: "POST" });
    const location = new URL(post.headers.get("location")!).pathname;
    const id = post.headers.get("docker-upload-uuid")!;
    const first = await client.fetch(location, {
      method: "PATCH",
      body: blob.data.subarray(0, 1000),
      headers: { "content-type": "application/octet-stream", "content-range": "0-999" },
    });
    expect(first.status).toBe(202);
    const second = () =>
      client.fetch(location, {
        method: "PATCH",
        body: blob.data.subarray(1000),
        headers: { "content-type": "application/octet-stream", "content-range": "1000-1999" },
      });

    // A holder on another machine that is alive: it renews its lease, so a second writer is refused.
    const holder = "other-machine:1:abc";
    await setLease(dataDir, id, holder, Date.now() + 4_000);
    let renewing = true;
    const renewals = (async () => {
      while (renewing) {
        await new Promise((r) => setTimeout(r, 500));
        if (renewing) await setLease(dataDir, id, holder, Date.now() + 4_000);
      }
    })();
    let t0 = Date.now();
    const refused = await second();
    renewing = false;
    await renewals;
    expect(refused.status).toBe(416);
    expect(refused.headers.get("range")).toBe("0-999");
    expect(Date.now() - t0).toBeLessThan(4_000);

    // A holder that finishes while the second write waits: that write was sent for an upload that has
    // moved on since, so it is refused too, even without a Content-Range, with the Range as it stands.
    await setLease(dataDir, id, holder, Date.now() + 4_000);
    const released = setTimeout(() => void setLease(dataDir, id, null, null), 600);
    t0 = Date.now();
    const appended = await client.fetch(location, {
      method: "PATCH",
      body: blob.data.subarray(1000),
      headers: { "content-type": "application/octet-stream" },
    });
    clearTimeout(released);
    expect(appended.status).toBe(416);
    expect(appended.headers.get("range")).toBe("0-999");
    expect(Date.now() - t0).toBeLessThan(4_000);

    // The same holder dies (kill -9 of its machine): its lease is no longer renewed and runs out in 4 s.
    // The next write waits for that, not for a refusal and a retry by the client, and is not let in early.
    await setLease(dataDir, id, holder, Date.now() + 4_000);
    t0 = Date.now();
    const taken = await second();
    const waited = Date.now() - t0;
    expect(taken.status).toBe(202);
    expect(taken.headers.get("range")).toBe("0-1999");
    expect(waited).toBeGreaterThanOrEqual(3_500);
    expect(waited).toBeLessThan(10_000);
    const put = await client.fetch(`${location}?digest=${blob.digest}`, { method: "PUT" });
    expect(put.status).toBe(201);
  });

  it.skipIf(PROCESS_PLACE === null)(
    "are taken over at once when their holder's process is gone from this place; kept while it lives",
    async () => {
      const dataDir = tempDir();
      dirs.push(dataDir);
      const blob = randomBlob(2000);
      const { client } = await start(dataDir);
      const post = await client.fetch("/v2/lease/gone/blobs/uploads/", { method: "POST" });
      const location = new URL(post.headers.get("location")!).pathname;
      const id = post.headers.get("docker-upload-uuid")!;
      const patch = (from: number, to: number) =>
        client.fetch(location, {
          method: "PATCH",
          body: blob.data.subarray(from, to),
          headers: { "content-type": "application/octet-stream", "content-range": `${from}-${to - 1}` },
        });
      expect((await patch(0, 1000)).status).toBe(202);

      // A live process in this place (this test's own) holds a long lease: refused, not taken.
      await setLease(
        dataDir,
        id,
        `${os.hostname()}:${process.pid}:abc@${PROCESS_PLACE}`,
        Date.now() + 600_000,
      );
      expect((await patch(1000, 2000)).status).toBe(416);

      // A process of this place that has exited (a replica killed mid-request) held it: taken at once.
      await setLease(dataDir, id, `${os.hostname()}:${deadPid()}:abc@${PROCESS_PLACE}`, Date.now() + 600_000);
      const t0 = Date.now();
      const taken = await patch(1000, 2000);
      expect(taken.status).toBe(202);
      expect(taken.headers.get("range")).toBe("0-1999");
      expect(Date.now() - t0).toBeLessThan(2_000);
      const put = await client.fetch(`${location}?digest=${blob.digest}`, { method: "PUT" });
      expect(put.status).toBe(201);
    },
  );

  it("stop a writer whose lease was taken over: it answers 503 at its next renewal and writes nothing more", async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const { berth, client } = await start(dataDir);
    const post = await client.fetch("/v2/lease/lost/blobs/uploads/", { method: "POST" });
    const location = new URL(post.headers.get("location")!).pathname;
    const id = post.headers.get("docker-upload-uuid")!;
    const first = await client.fetch(location, {
      method: "PATCH",
      body: Buffer.alloc(1000, 1),
      headers: { "content-type": "application/octet-stream", "content-range": "0-999" },
    });
    expect(first.status).toBe(202);

    // A chunk that streams 1000 bytes every 100 ms for 12 s, with no declared length.
    let sent = 0;
    let sending = true;
    const t0 = Date.now();
    const answered = new Promise<{ status: number; at: number; body: string }>((resolve, reject) => {
      const req = http.request(`${berth.url}${location}`, {
        method: "PATCH",
        headers: { "content-type": "application/octet-stream", "transfer-encoding": "chunked" },
      });
      req.on("response", (res) => {
        sending = false;
        const parts: Buffer[] = [];
        res.on("data", (d: Buffer) => parts.push(d));
        res.on("end", () => {
          resolve({
            status: res.statusCode ?? 0,
            at: Date.now() - t0,
            body: Buffer.concat(parts).toString(),
          });
          req.destroy();
        });
      });
      req.on("error", (err) => (sending ? reject(err) : undefined));
      void (async () => {
        while (sending && Date.now() - t0 < 12_000) {
          req.write(Buffer.alloc(1000, 2));
          sent += 1000;
          await new Promise((r) => setTimeout(r, 100));
        }
        if (sending) req.end();
      })();
    });
    // Another request takes the lease over (as one would once it had run out) while this one writes.
    await new Promise((r) => setTimeout(r, 500));
    await setLease(dataDir, id, "other-machine:1:abc", Date.now() + 600_000);
    const file = path.join(dataDir, "berth/uploads", id);
    const outcome = await answered;
    expect(outcome.status, outcome.body).toBe(503);
    expect(JSON.parse(outcome.body).errors[0].code).toBe("UNAVAILABLE");
    // At the first renewal after the takeover (every 3 s), long before the body ends.
    expect(outcome.at).toBeLessThan(5_000);
    expect(sent).toBeLessThan(60_000);
    if (existsSync(file)) {
      // The filesystem store: nothing written after the answer, nothing cut back to this writer's offset.
      const size = statSync(file).size;
      expect(size).toBeGreaterThanOrEqual(1000);
      await new Promise((r) => setTimeout(r, 1000));
      expect(statSync(file).size).toBe(size);
    }
    // The row is the other holder's, as it set it: this writer recorded nothing.
    const db = await openTestDb(dataDir);
    const row = await db.get<{ size: number | string; lease_holder: string }>(
      "select size, lease_holder from uploads where id = ?",
      id,
    );
    await db.close();
    expect(Number(row?.size)).toBe(1000);
    expect(row?.lease_holder).toBe("other-machine:1:abc");
  });

  it("are released after each request, so the next chunk goes on at once", async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const { client } = await start(dataDir);
    const blob = randomBlob(30_000);
    await client.pushBlobChunked("lease/chunks", blob, 1000);
    const db = await openTestDb(dataDir);
    const held = await db.get<{ n: number | string }>(
      "select count(*) as n from uploads where lease_holder is not null",
    );
    await db.close();
    expect(Number(held?.n)).toBe(0);
  });
});
