import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { openTestDb } from "../helpers/metadata-db.js";
import { OCI_MANIFEST, RegistryClient, randomBlob, sha256 } from "../helpers/registry.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";

/** BERTH_TEST_STORAGE=s3: blobs are in a bucket, so the checks of the blob tree on disk do not apply. */
const onFilesystem = process.env.BERTH_TEST_STORAGE !== "s3";

const started: Berth[] = [];
async function start(options: Parameters<typeof startBerth>[0] = {}): Promise<Berth> {
  const b = await startBerth(options);
  started.push(b);
  return b;
}
afterEach(async () => {
  for (const b of started.splice(0)) await b.cleanup().catch(() => {});
});

async function fileDigest(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest("hex")}`;
}

/** Every file in the blob tree holds exactly the bytes its path names. */
async function verifyBlobTree(dataDir: string): Promise<number> {
  const root = path.join(dataDir, "docker/registry/v2/blobs/sha256");
  let count = 0;
  for (const fan of await fs.readdir(root).catch(() => [] as string[])) {
    for (const hex of await fs.readdir(path.join(root, fan)).catch(() => [] as string[])) {
      const file = path.join(root, fan, hex, "data");
      // The collector may remove an orphan file (one a crash left without its row) during the walk.
      const digest = await fileDigest(file).catch((err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT") return null;
        throw err;
      });
      if (digest === null) continue;
      expect(digest, file).toBe(`sha256:${hex}`);
      count++;
    }
  }
  return count;
}

describe("concurrency", () => {
  it("ends 10 simultaneous pushes of one blob as one verified copy and 10 successes", async () => {
    const berth = await start({ workers: 2 });
    const client = new RegistryClient(berth.url);
    const blob = randomBlob(4 * 1024 * 1024);
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        (i % 2 === 0
          ? client.pushBlob(`same/r${i}`, blob)
          : client.pushBlobChunked(`same/r${i}`, blob, 1024 * 1024)
        ).then((r) => r.status),
      ),
    );
    expect(results).toEqual(Array(10).fill(201));
    if (onFilesystem) {
      const fan = path.join(berth.dataDir, "docker/registry/v2/blobs/sha256", blob.digest.slice(7, 9));
      expect(await fs.readdir(fan)).toEqual([blob.digest.slice(7)]);
      expect(await verifyBlobTree(berth.dataDir)).toBe(1);
    }
    for (let i = 0; i < 10; i++) {
      const res = await client.fetch(`/v2/same/r${i}/blobs/${blob.digest}`);
      expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(blob.digest);
    }
  });

  it("lets only one request append to an upload at a time", async () => {
    const berth = await start();
    const client = new RegistryClient(berth.url);
    const startRes = await client.fetch("/v2/race/app/blobs/uploads/", { method: "POST" });
    const location = startRes.headers.get("location")!;
    const body = Buffer.alloc(8 * 1024 * 1024, 7);
    const statuses = await Promise.all(
      [0, 1, 2].map(() =>
        client
          .fetch(location, { method: "PATCH", body, headers: { "content-range": `0-${body.length - 1}` } })
          .then((r) => r.status),
      ),
    );
    expect(statuses.filter((s) => s === 202)).toHaveLength(1);
    expect(statuses.filter((s) => s === 416)).toHaveLength(2);
    const status = await client.fetch(location);
    expect(status.headers.get("range")).toBe(`0-${body.length - 1}`);
    const put = await client.fetch(`${location}?digest=${sha256(body)}`, { method: "PUT" });
    expect(put.status).toBe(201);
  });
});

describe("restarts and crashes", () => {
  it("resumes an upload after a restart", async () => {
    const dataDir = tempDir();
    const first = await start({ dataDir });
    let client = new RegistryClient(first.url);
    const blob = randomBlob(300_000);
    const startRes = await client.fetch("/v2/resume/app/blobs/uploads/", { method: "POST" });
    const id = startRes.headers.get("docker-upload-uuid")!;
    await client.fetch(startRes.headers.get("location")!, {
      method: "PATCH",
      body: blob.data.subarray(0, 100_000),
      headers: { "content-range": "0-99999" },
    });
    await first.kill();
    // What was acknowledged is recorded with its digest, so a PUT on any process need not re-read it.
    const db = await openTestDb(dataDir);
    const row = await db.get<{ size: number; digest: string }>(
      "select size, digest from uploads where id = ?",
      id,
    );
    await db.close();
    expect(row).toEqual({ size: 100_000, digest: sha256(blob.data.subarray(0, 100_000)) });

    const second = await start({ dataDir });
    client = new RegistryClient(second.url);
    const location = `/v2/resume/app/blobs/uploads/${id}`;
    const status = await client.fetch(location);
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe("0-99999");
    const patch = await client.fetch(location, {
      method: "PATCH",
      body: blob.data.subarray(100_000),
      headers: { "content-range": `100000-${blob.size - 1}` },
    });
    expect(patch.status).toBe(202);
    const put = await client.fetch(`${location}?digest=${blob.digest}`, { method: "PUT" });
    expect(put.status).toBe(201);
    const get = await client.fetch(`/v2/resume/app/blobs/${blob.digest}`);
    expect(sha256(Buffer.from(await get.arrayBuffer()))).toBe(blob.digest);
  });

  it("keeps every completed push and shows no partial one after kill -9 during 20 parallel pushes", async () => {
    const dataDir = tempDir();
    const first = await start({ dataDir, workers: 2 });
    const client = new RegistryClient(first.url);
    type Image = { name: string; digest: string; manifest: Buffer; layers: ReturnType<typeof randomBlob>[] };
    const completed: Image[] = [];
    let killed = false;
    const pushes = Array.from({ length: 20 }, async (_, i) => {
      const name = `crash/app${i}`;
      try {
        for (let round = 0; !killed; round++) {
          const layers = [randomBlob(1024 * 1024 + i), randomBlob(2 * 1024 * 1024 + round)];
          const pushed = await client.pushImage(name, `t${round}`, { layers });
          completed.push({
            name: `${name}:t${round}`,
            digest: pushed.digest,
            manifest: pushed.manifest,
            layers,
          });
        }
      } catch {
        // The server died under this push: what it had not finished must not show.
      }
    });
    // Let a good number of pushes finish, then crash in the middle of the rest.
    // Every upload costs a dozen S3 round trips: on a bucket, allow longer for the same number of pushes.
    const deadline = Date.now() + (onFilesystem ? 20_000 : 90_000);
    while (completed.length < 25 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    killed = true;
    await first.kill();
    await Promise.all(pushes);
    expect(completed.length).toBeGreaterThanOrEqual(20);

    const second = await start({ dataDir, workers: 2 });
    const after = new RegistryClient(second.url);
    for (const img of completed) {
      const [name, tag] = img.name.split(":") as [string, string];
      const res = await after.fetch(`/v2/${name}/manifests/${tag}`, { headers: { accept: OCI_MANIFEST } });
      expect(res.status, img.name).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(img.manifest)).toBe(true);
      for (const layer of img.layers) {
        const blob = await after.fetch(`/v2/${name}/blobs/${layer.digest}`);
        expect(blob.status).toBe(200);
        expect(sha256(Buffer.from(await blob.arrayBuffer()))).toBe(layer.digest);
      }
    }
    // No blob file anywhere holds bytes other than those of its digest.
    if (onFilesystem) expect(await verifyBlobTree(dataDir)).toBeGreaterThan(0);
    // Every manifest the database knows has all its blobs, and pushes work again.
    await after.pushImage("crash/after", "ok");
  });
});
