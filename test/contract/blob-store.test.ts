import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UploadHashes } from "../../src/registry/uploads.js";
import type { BlobStore } from "../../src/storage/blob-store.js";
import { FilesystemBlobStore } from "../../src/storage/filesystem.js";
import { S3BlobStore } from "../../src/storage/s3.js";
import { startS3, type TestS3 } from "../helpers/s3.js";
import { tempDir } from "../helpers/server.js";

/**
 * One contract for every BlobStore: what the registry relies on, checked against the filesystem store
 * and the S3 store (on a real Ceph radosgw) alike. Each step of an upload runs on a fresh store instance,
 * as another replica would.
 */
interface Backend {
  name: string;
  /** A new store instance over the same bytes (same directory, same bucket). */
  open(): Promise<BlobStore>;
  cleanup(): Promise<void>;
}

const MiB = 1024 * 1024;
const digestOf = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

async function* pieces(buf: Buffer, size = 64 * 1024): AsyncIterable<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

/** Appends `chunk` as the registry does: continue the hash from wherever it can be had. */
async function append(store: BlobStore, id: string, offset: number, chunk: Buffer): Promise<string> {
  const hashes = new UploadHashes(store);
  const hash = await hashes.at(id, offset);
  const n = await store.writeUpload(
    id,
    offset,
    pieces(chunk),
    (c) => hash.update(c),
    () => hash.save(),
  );
  expect(n).toBe(chunk.length);
  return `sha256:${hash.hex()}`;
}

let s3: TestS3 | null = null;
const backends: Backend[] = [];

beforeAll(async () => {
  const dir = tempDir("berth-contract-");
  backends.push({
    name: "filesystem",
    async open() {
      const store = new FilesystemBlobStore(dir);
      await store.init();
      return store;
    },
    async cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  });
  s3 = await startS3();
  const bucket = await s3.bucket("contract");
  const opened: S3BlobStore[] = [];
  const t = s3;
  backends.push({
    name: "s3",
    async open() {
      const store = new S3BlobStore({
        region: t.region,
        regionendpoint: t.endpoint,
        bucket,
        accesskey: t.accessKey,
        secretkey: t.secretKey,
        forcepathstyle: true,
        rootdirectory: "/registry",
        chunksize: 5 * MiB,
      });
      opened.push(store);
      return store;
    },
    async cleanup() {
      for (const store of opened) store.close();
    },
  });
}, 180_000);

afterAll(async () => {
  for (const b of backends) await b.cleanup();
  await s3?.stop();
});

describe.each(["filesystem", "s3"])("BlobStore contract: %s", (kind) => {
  const backend = () => backends.find((b) => b.name === kind)!;

  it("stat, put, read (whole and ranged), list and delete", async () => {
    const store = await backend().open();
    const content = randomBytes(300_001);
    const digest = digestOf(content);
    expect(await store.stat(digest)).toBeNull();
    await store.put(digest, content);
    await store.put(digest, content); // idempotent
    const other = await backend().open();
    expect((await other.stat(digest))?.size).toBe(content.length);
    expect((await readAll(await other.read(digest))).equals(content)).toBe(true);
    const ranged = await readAll(await other.read(digest, { start: 1000, end: 200_000 }));
    expect(ranged.equals(content.subarray(1000, 200_001))).toBe(true);
    const listed: string[] = [];
    for await (const b of other.list()) listed.push(b.digest);
    expect(listed).toContain(digest);
    await other.delete(digest);
    expect(await store.stat(digest)).toBeNull();
    await expect(store.read(digest)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("uploads odd-sized chunks, each on a fresh instance, and commits them whole", async () => {
    const chunks = [MiB + 3, 7 * MiB + 1, 3, 6 * MiB, 4 * MiB - 7, 17].map((n) => randomBytes(n));
    const whole = Buffer.concat(chunks);
    const id = randomUUID();
    await (await backend().open()).createUpload(id);
    expect(await (await backend().open()).uploadSize(id)).toBe(0);
    let offset = 0;
    let digest = "";
    for (const chunk of chunks) {
      const store = await backend().open();
      digest = await append(store, id, offset, chunk);
      offset += chunk.length;
      expect(await (await backend().open()).uploadSize(id)).toBe(offset);
    }
    expect(digest).toBe(digestOf(whole));
    const listed: { id: string; size: number }[] = [];
    for await (const u of (await backend().open()).listUploads()) listed.push(u);
    expect(listed).toContainEqual(expect.objectContaining({ id, size: whole.length }));
    const committer = await backend().open();
    await committer.syncUpload(id);
    await committer.commitUpload(id, digest);
    expect(await committer.uploadSize(id)).toBeNull();
    const reader = await backend().open();
    expect((await reader.stat(digest))?.size).toBe(whole.length);
    expect((await readAll(await reader.read(digest))).equals(whole)).toBe(true);
    await reader.delete(digest);
  });

  it("cuts an upload back to an acknowledged size and continues from there", async () => {
    const a = randomBytes(2 * MiB + 5);
    const b = randomBytes(6 * MiB);
    const c = randomBytes(123);
    const id = randomUUID();
    const store = await backend().open();
    await store.createUpload(id);
    await append(store, id, 0, a);
    await append(await backend().open(), id, a.length, b); // never acknowledged
    const other = await backend().open();
    await other.truncateUpload(id, a.length);
    expect(await other.uploadSize(id)).toBe(a.length);
    const digest = await append(await backend().open(), id, a.length, c);
    expect(digest).toBe(digestOf(Buffer.concat([a, c])));
    await other.commitUpload(id, digest);
    expect((await readAll(await other.read(digest))).equals(Buffer.concat([a, c]))).toBe(true);
    await other.delete(digest);
  });

  it("continues from the acknowledged size as a lease holder does, trusting nothing an unacknowledged write left", async () => {
    // What the registry does under the upload's lease before each write (withUploadLease).
    const resume = async (store: BlobStore, id: string, acknowledged: number) => {
      const size = store.continueUpload
        ? await store.continueUpload(id, acknowledged)
        : await store.uploadSize(id);
      expect(size).not.toBeNull();
      if (size! > acknowledged) await store.truncateUpload(id, acknowledged);
      return store;
    };
    const a = randomBytes(6 * MiB + 3);
    const x = randomBytes(13 * MiB); // never acknowledged, and longer than all that follows
    const y = randomBytes(5 * MiB + 1);
    const z = randomBytes(MiB);
    const id = randomUUID();
    await (await backend().open()).createUpload(id);
    await append(await resume(await backend().open(), id, 0), id, 0, a);
    await append(await resume(await backend().open(), id, a.length), id, a.length, x);
    // Another replica read the state at a.length (kept for its request) before this one wrote it again.
    const early = await resume(await backend().open(), id, a.length);
    await append(await resume(await backend().open(), id, a.length), id, a.length, y);
    let size = a.length + y.length;
    const digest = await append(await resume(early, id, size), id, size, z);
    size += z.length;
    const whole = Buffer.concat([a, y, z]);
    expect(digest).toBe(digestOf(whole));
    const committer = await resume(await backend().open(), id, size);
    if (committer instanceof S3BlobStore) {
      // States are dropped by name once the next one is acknowledged: the two last ones and the one the
      // unacknowledged write left (which goes with the upload) remain.
      const base = `registry/berth/uploads/${id}/state/`;
      const expected = [a.length + y.length, size, a.length + x.length].map((n) =>
        String(n).padStart(16, "0"),
      );
      let keys: string[] = [];
      for (let i = 0; i < 50; i++) {
        const out = await committer.client.send(
          new ListObjectsV2Command({ Bucket: committer.options.bucket, Prefix: base }),
        );
        keys = (out.Contents ?? []).map((o) => o.Key!.slice(base.length));
        if (keys.length === expected.length) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(keys.sort()).toEqual(expected.sort());
    }
    await committer.syncUpload(id);
    await committer.commitUpload(id, digest, size);
    expect(await committer.uploadSize(id)).toBeNull();
    const reader = await backend().open();
    expect((await readAll(await reader.read(digest))).equals(whole)).toBe(true);
    await reader.delete(digest);
  });

  it("commits an empty upload and a small one", async () => {
    for (const content of [Buffer.alloc(0), randomBytes(10)]) {
      const id = randomUUID();
      const store = await backend().open();
      await store.createUpload(id);
      const digest = content.length ? await append(store, id, 0, content) : digestOf(content);
      await (await backend().open()).commitUpload(id, digest);
      expect((await store.stat(digest))?.size).toBe(content.length);
      expect((await readAll(await store.read(digest))).equals(content)).toBe(true);
      await store.delete(digest);
    }
  });

  it("aborts an upload and leaves nothing behind", async () => {
    const id = randomUUID();
    const store = await backend().open();
    await store.createUpload(id);
    await append(store, id, 0, randomBytes(6 * MiB + 1));
    await (await backend().open()).deleteUpload(id);
    expect(await store.uploadSize(id)).toBeNull();
    for await (const u of store.listUploads()) expect(u.id).not.toBe(id);
    if (store instanceof S3BlobStore) {
      const open = await store.client.send(
        new ListMultipartUploadsCommand({ Bucket: store.options.bucket, Prefix: "registry/berth/uploads/" }),
      );
      expect((open.Uploads ?? []).filter((u) => u.Key?.includes(id))).toEqual([]);
    }
  });

  it("takes concurrent writers of different uploads, and of the same digest", async () => {
    const content = randomBytes(5 * MiB + 77);
    const digest = digestOf(content);
    const others = [randomBytes(MiB), randomBytes(9 * MiB)];
    const run = async (buf: Buffer) => {
      const store = await backend().open();
      const id = randomUUID();
      await store.createUpload(id);
      const d = await append(store, id, 0, buf);
      await store.commitUpload(id, d);
      return d;
    };
    const results = await Promise.all([run(content), run(content), ...others.map(run)]);
    expect(results.slice(0, 2)).toEqual([digest, digest]);
    const store = await backend().open();
    expect((await readAll(await store.read(digest))).equals(content)).toBe(true);
    for (const [i, buf] of others.entries()) {
      expect((await readAll(await store.read(results[i + 2]!))).equals(buf)).toBe(true);
    }
    for (const d of results) await store.delete(d);
  });

  it("keeps one copy when the same bytes are uploaded twice, and a delete removes every object", async () => {
    const content = randomBytes(6 * MiB + 5);
    const digest = digestOf(content);
    const upload = async () => {
      const store = await backend().open();
      const id = randomUUID();
      await store.createUpload(id);
      expect(await append(store, id, 0, content)).toBe(digest);
      await (await backend().open()).commitUpload(id, digest);
      expect(await store.uploadSize(id)).toBeNull();
      return id;
    };
    // One after the other, as the database's lock on the digest orders them in a registry.
    const ids = [await upload(), await upload()];
    const store = await backend().open();
    expect((await store.stat(digest))?.size).toBe(content.length);
    expect((await readAll(await store.read(digest))).equals(content)).toBe(true);
    const listed: string[] = [];
    for await (const b of store.list()) listed.push(b.digest);
    expect(listed.filter((d) => d === digest)).toEqual([digest]);
    if (store instanceof S3BlobStore) {
      // The bytes stay where the multipart upload put them: no copy to Distribution's key.
      const keys = await bucketKeys(store);
      expect(keys.filter((k) => ids.some((id) => k.includes(id)))).toEqual([
        `registry/berth/blobs/${ids[0]}/data`,
      ]);
      expect(keys.filter((k) => k.includes(digest.slice(7)))).toEqual([
        `registry/berth/links/sha256/${digest.slice(7)}`,
      ]);
      expect((await openMultipartUploads(store)).filter((k) => ids.some((id) => k.includes(id)))).toEqual([]);
    }
    await (await backend().open()).delete(digest);
    expect(await store.stat(digest)).toBeNull();
    await expect(store.read(digest)).rejects.toMatchObject({ code: "ENOENT" });
    if (store instanceof S3BlobStore) {
      const keys = await bucketKeys(store);
      expect(keys.filter((k) => ids.some((id) => k.includes(id)) || k.includes(digest.slice(7)))).toEqual([]);
    }
  });

  it("reads the right bytes after another instance deleted a blob and it was uploaded again", async () => {
    const content = randomBytes(5 * MiB + 1);
    const digest = digestOf(content);
    const push = async () => {
      const store = await backend().open();
      const id = randomUUID();
      await store.createUpload(id);
      await append(store, id, 0, content);
      await store.commitUpload(id, digest);
    };
    await push();
    const reader = await backend().open();
    expect((await readAll(await reader.read(digest))).equals(content)).toBe(true);
    await (await backend().open()).delete(digest);
    expect(await reader.stat(digest)).toBeNull();
    await push();
    // The reader found the first copy before: it must find the second, wherever that is.
    expect((await reader.stat(digest))?.size).toBe(content.length);
    expect(
      (await readAll(await reader.read(digest, { start: 10, end: 99 }))).equals(content.subarray(10, 100)),
    ).toBe(true);
    await reader.delete(digest);
  });

  it("proves it can write", async () => {
    await (await backend().open()).probe();
  });

  it("says whether it holds registry:2 repositories Berth has no rows for (their blobs are never orphans)", async () => {
    const store = await backend().open();
    expect((await store.foreignRepositories?.()) ?? null).toBeNull();
    if (store instanceof FilesystemBlobStore) {
      const dir = path.join(store.root, "docker", "registry", "v2", "repositories");
      mkdirSync(path.join(dir, "library", "app"), { recursive: true });
      try {
        expect(await store.foreignRepositories()).toBe(dir);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });
});

async function bucketKeys(store: S3BlobStore): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await store.client.send(
      new ListObjectsV2Command({ Bucket: store.options.bucket, ContinuationToken: token }),
    );
    for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

async function openMultipartUploads(store: S3BlobStore): Promise<string[]> {
  const open = await store.client.send(new ListMultipartUploadsCommand({ Bucket: store.options.bucket }));
  return (open.Uploads ?? []).map((u) => u.Key ?? "");
}

describe("S3 store: a registry:2 bucket", () => {
  it("reads, lists and deletes blobs at Distribution's keys", async () => {
    const backend = backends.find((b) => b.name === "s3")!;
    const store = (await backend.open()) as S3BlobStore;
    const content = randomBytes(7 * MiB);
    const digest = digestOf(content);
    const hex = digest.slice(7);
    const key = `registry/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
    await store.client.send(
      new PutObjectCommand({
        Bucket: store.options.bucket,
        Key: key,
        Body: content,
        ContentLength: content.length,
      }),
    );
    expect((await store.stat(digest))?.size).toBe(content.length);
    expect(
      (await readAll(await store.read(digest, { start: 5, end: 9 }))).equals(content.subarray(5, 10)),
    ).toBe(true);
    expect(await store.presign(digest, 60)).toContain(
      `/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`,
    );
    const listed: string[] = [];
    for await (const b of store.list()) listed.push(b.digest);
    expect(listed).toContain(digest);
    // An upload of the same bytes keeps the registry:2 object and adds nothing.
    const id = randomUUID();
    await store.createUpload(id);
    await append(store, id, 0, content);
    await (await backend.open()).commitUpload(id, digest);
    expect((await bucketKeys(store)).filter((k) => k.includes(hex) || k.includes(id))).toEqual([key]);
    await store.delete(digest);
    expect(await store.stat(digest)).toBeNull();
  });
});
