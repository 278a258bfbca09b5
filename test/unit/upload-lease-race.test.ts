/**
 * A PATCH reads its upload's row before it takes the lease. When another request writes, finishes and lets
 * the lease go in between, the first must work from what is acknowledged now, not from the row it read:
 * trimming the file back to that older size would throw away acknowledged bytes. The interleaving is made
 * certain by running the other request inside the first one's lease call (real SQLite, real files).
 */
import { createHash } from "node:crypto";
import { appendFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Fixture } from "./gc-fixture.js";

let fixture: Fixture | undefined;

afterEach(async () => {
  await fixture?.close();
  fixture = undefined;
});

function chunks(data: Buffer): AsyncIterable<Buffer> {
  return (async function* () {
    yield data;
  })();
}

describe("upload leases", () => {
  it("a request that took the lease after another finished works from the bytes acknowledged since", async () => {
    fixture = await Fixture.create();
    const { registry } = fixture;
    const meta = fixture.rt.meta;
    const first = Buffer.alloc(64 * 1024, 1);
    const second = Buffer.alloc(64 * 1024, 2);
    const { id } = await registry.startUpload("race/app");

    const lease = meta.leaseUpload.bind(meta);
    let interleaved = false;
    meta.leaseUpload = async (uploadId: string, ttlMs: number) => {
      if (!interleaved) {
        interleaved = true;
        // Another request writes the first chunk and ends, between this request's read and its lease.
        await registry.appendChunk("race/app", id, chunks(first), { start: 0, end: first.length - 1 });
      }
      return lease(uploadId, ttlMs);
    };

    // This request also claims to start at 0: it must be refused, and the first chunk must survive.
    await expect(
      registry.appendChunk("race/app", id, chunks(second), { start: 0, end: second.length - 1 }),
    ).rejects.toMatchObject({ code: "BLOB_UPLOAD_INVALID" });
    meta.leaseUpload = lease;

    expect((await registry.uploadStatus("race/app", id)).size).toBe(first.length);
    const digest = `sha256:${createHash("sha256").update(first).digest("hex")}`;
    await expect(registry.completeUpload("race/app", id, digest, null)).resolves.toMatchObject({
      digest,
      size: first.length,
    });
  });

  it("a commit refuses an upload whose file holds more than was acknowledged (a writer without the lease)", async () => {
    fixture = await Fixture.create();
    const { registry } = fixture;
    const store = registry.store;
    const data = Buffer.alloc(64 * 1024, 3);
    const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
    const { id } = await registry.startUpload("race/size");
    await registry.appendChunk("race/size", id, chunks(data), { start: 0, end: data.length - 1 });

    // Bytes land in the file after the lease was taken and trimmed, while the commit runs.
    const sync = store.syncUpload.bind(store);
    store.syncUpload = async (uploadId: string) => {
      await appendFile(path.join(fixture!.dir, "berth/uploads", uploadId), Buffer.alloc(100, 9));
      return sync(uploadId);
    };
    await expect(registry.completeUpload("race/size", id, digest, null)).rejects.toMatchObject({
      code: "BLOB_UPLOAD_INVALID",
    });
    store.syncUpload = sync;
    await expect(registry.statBlob("race/size", digest)).rejects.toMatchObject({ code: "BLOB_UNKNOWN" });
    expect(await store.stat(digest)).toBeNull();
  });
});
