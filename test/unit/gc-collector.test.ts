import { mkdirSync, utimesSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { retentionSection } from "../../src/config/sections/gc.js";
import { acquireLock, readLock } from "../../src/metadata/gc-queries.js";
import { deleteManifestBatch } from "../../src/metadata/gc-store.js";
import { collectGarbage, Lease, purgeUploads } from "../../src/registry/gc.js";
import { applyRetention, compilePolicies } from "../../src/registry/retention.js";
import { blob, bytes, Fixture, image, referrer } from "./gc-fixture.js";

const HOUR = 3_600_000;
let fx: Fixture;

beforeEach(async () => {
  fx = await Fixture.create();
});

afterEach(async () => {
  await fx.close();
});

describe("blobs", () => {
  test("deleting image A frees exactly A's own layers; B still reads byte for byte", async () => {
    const shared = [blob(bytes("base-1", 3000)), blob(bytes("base-2", 2000))];
    const ownA = blob(bytes("only-a", 1500));
    const ownB = blob(bytes("only-b", 1200));
    const a = image("a", [...shared, ownA]);
    const b = image("b", [...shared, ownB]);
    await fx.pushImage("team/a", "v1", a);
    await fx.pushImage("team/b", "v1", b);

    await fx.registry.deleteManifest("team/a", a.digest);
    await fx.age(2 * HOUR);
    const report = await fx.gc({ graceMs: HOUR });

    const gone = report.blobs.map((x) => x.digest).sort();
    expect(gone).toEqual([ownA.digest, a.config.digest, a.digest].sort());
    expect(report.blobBytes).toBe(ownA.size + a.config.size + a.manifest.length);
    for (const d of gone) {
      expect(await fx.blobOnDisk(d)).toBe(false);
      expect(await fx.blobRow(d)).toBe(false);
    }
    for (const l of [...shared, ownB, b.config]) {
      expect(await fx.blobOnDisk(l.digest)).toBe(true);
      expect((await fx.readBlob("team/b", l.digest)).equals(l.data)).toBe(true);
    }
    // A's links to the shared layers were stale: team/a can no longer read them.
    await expect(fx.registry.statBlob("team/a", shared[0]!.digest)).rejects.toThrow(/unknown/);
    expect(report.links).toBe(2);
  });

  test("deleting transactions stay short when each delete is slow (a bucket): batches shrink", async () => {
    const garbage = Array.from({ length: 100 }, (_, i) => blob(bytes(`slow-${i}`, 100)));
    for (const b of garbage) await fx.pushBlob("team/slow", b);
    await fx.age(2 * HOUR);
    // Every delete waits 100 ms, as a DeleteObjects round trip to a loaded S3 endpoint may.
    const store = fx.rt.storage;
    const remove = store.delete.bind(store);
    store.delete = async (digest: string) => {
      await new Promise((r) => setTimeout(r, 100));
      await remove(digest);
    };
    const report = await fx.gc({ graceMs: HOUR, batchSize: 100 });
    expect(report.blobs.length).toBe(100);
    // 100 deletes in one transaction, 8 at a time, would hold it for about 1.3 s.
    expect(report.transactions).toBeGreaterThan(2);
    expect(report.longestTransactionMs).toBeLessThan(800);
  });

  test("the grace period protects a blob whose manifest has not arrived yet", async () => {
    const layer = blob(bytes("in-flight", 4096));
    await fx.pushBlob("team/a", layer);
    const report = await fx.gc({ graceMs: HOUR });
    expect(report.blobs).toEqual([]);
    expect(await fx.blobOnDisk(layer.digest)).toBe(true);
    // The push finishes later: the manifest finds its blob.
    const img = image("late", [layer]);
    await fx.pushBlob("team/a", img.config);
    await fx.registry.putManifest("team/a", "v1", img.manifest, "application/vnd.oci.image.manifest.v1+json");

    // An upload abandoned longer than the grace period goes.
    const stale = blob(bytes("abandoned-layer", 100));
    await fx.pushBlob("team/a", stale);
    await fx.age(2 * HOUR);
    const later = await fx.gc({ graceMs: HOUR });
    expect(later.blobs.map((x) => x.digest)).toEqual([stale.digest]);
    expect((await fx.readBlob("team/a", layer.digest)).equals(layer.data)).toBe(true);
  });

  test("a blob pushed again after it was found to be garbage is kept: the push restarts its grace period", async () => {
    const layer = blob(bytes("again", 500));
    await fx.pushBlob("r", layer);
    await fx.age(2 * HOUR);
    // Found to be garbage; then a push commits the same blob before the collection deletes anything.
    const lease = (await Lease.acquire(fx.rt.meta, "job:gc"))!;
    const { stillGarbageBlobs } = await import("../../src/metadata/gc-queries.js");
    const cutoff = Date.now() - HOUR;
    expect([...(await stillGarbageBlobs(fx.db, [layer.digest], cutoff)).keys()]).toEqual([layer.digest]);
    await fx.pushBlob("r", layer);
    const report = await collectGarbage(
      { meta: fx.rt.meta, store: fx.rt.storage },
      {
        graceMs: HOUR,
        batchSize: 10,
        pauseMs: 0,
        untagged: { enabled: false, olderThanMs: 0 },
        uploads: null,
        dryRun: false,
        lease,
      },
    );
    await lease.release();
    expect(report.blobs).toEqual([]);
    expect(await fx.blobOnDisk(layer.digest)).toBe(true);
  });

  // A HEAD reads, so without help a blob a client was just told exists could be collected before that
  // client's manifest arrives (when no manifest referenced it and its link was older than the grace
  // period). The registry closes this: a HEAD or GET renews a link older than half the grace period.
  test("a blob a HEAD just found is not collected before the manifest that uses it arrives", async () => {
    const layer = blob(bytes("head-race", 700));
    const first = image("head-race-1", [layer]);
    await fx.pushImage("r", "v1", first);
    await fx.registry.deleteManifest("r", first.digest);
    await fx.age(2 * HOUR);
    // A client pushes another image with the same layer: HEAD says it exists, so it is not uploaded...
    expect((await fx.registry.statBlob("r", layer.digest)).size).toBe(layer.size);
    const second = image("head-race-2", [layer]);
    await fx.pushBlob("r", second.config);
    // ...a collection runs meanwhile...
    await fx.gc({ graceMs: HOUR });
    // ...and the manifest must still find the layer.
    await fx.registry.putManifest("r", "v2", second.manifest, "application/vnd.oci.image.manifest.v1+json");
    expect((await fx.readBlob("r", layer.digest)).equals(layer.data)).toBe(true);
  });

  test("dry run lists without removing, and matches the real run", async () => {
    const img = image("dry", [blob(bytes("dry-1", 100)), blob(bytes("dry-2", 200))]);
    await fx.pushImage("r", "t", img);
    await fx.registry.deleteManifest("r", img.digest);
    const dry = await fx.gc({ dryRun: true });
    expect(dry.dryRun).toBe(true);
    expect(dry.blobs).toHaveLength(4);
    for (const b of dry.blobs) expect(await fx.blobOnDisk(b.digest)).toBe(true);
    const real = await fx.gc();
    expect(real.blobs.map((b) => b.digest).sort()).toEqual(dry.blobs.map((b) => b.digest).sort());
    expect(real.blobBytes).toBe(dry.blobBytes);
  });

  test("works in bounded batches: one transaction per batch", async () => {
    for (let i = 0; i < 25; i++) await fx.pushBlob("r", blob(bytes(`many-${i}`, 10)));
    const report = await fx.gc({ batchSize: 10 });
    expect(report.blobs).toHaveLength(25);
    expect(report.transactions).toBe(3);
  });

  test("a deleted repository's blobs go at the next collection, shared ones stay", async () => {
    const shared = blob(bytes("shared", 100));
    const a = image("ra", [shared, blob(bytes("ra-own", 100))]);
    const b = image("rb", [shared]);
    await fx.pushImage("ra", "v1", a);
    await fx.pushImage("rb", "v1", b);
    await fx.registry.deleteRepository("ra");
    const report = await fx.gc();
    expect(report.blobs.map((x) => x.digest).sort()).toEqual(
      [a.config.digest, a.layers[1]!.digest, a.digest].sort(),
    );
    expect((await fx.readBlob("rb", shared.digest)).equals(shared.data)).toBe(true);
  });
});

describe("orphan files and uploads", () => {
  test("a file without a row goes once older than the grace period; a young one stays", async () => {
    // The database knows Berth's own blobs (an empty one beside files is a refusal, tested below).
    await fx.pushImage("team/kept", "v1", image("kept", [blob(bytes("kept", 100))]));
    const old = blob(bytes("orphan-old", 300));
    const young = blob(bytes("orphan-young", 300));
    for (const o of [old, young]) {
      const file = fx.rt.storage.blobPath(o.digest);
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, o.data);
    }
    const past = (Date.now() - 2 * HOUR) / 1000;
    utimesSync(fx.rt.storage.blobPath(old.digest), past, past);
    const dry = await fx.gc({ graceMs: HOUR, dryRun: true });
    expect(dry.orphans.map((o) => o.digest)).toEqual([old.digest]);
    const report = await fx.gc({ graceMs: HOUR });
    expect(report.orphans).toEqual([{ digest: old.digest, size: 300 }]);
    expect(await fx.blobOnDisk(old.digest)).toBe(false);
    expect(await fx.blobOnDisk(young.digest)).toBe(true);
  });

  test("files without rows are left alone while the database knows no blob, unless the store is said to be Berth's", async () => {
    const o = blob(bytes("unknown-store", 10));
    const file = fx.rt.storage.blobPath(o.digest);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, o.data);
    const past = (Date.now() - 2 * HOUR) / 1000;
    utimesSync(file, past, past);
    const refused = await fx.gc({ graceMs: HOUR });
    expect(refused.orphans).toEqual([]);
    expect(refused.notes.join(" ")).toContain("--i-know-the-store-is-mine");
    expect(await fx.blobOnDisk(o.digest)).toBe(true);
    const mine = await fx.gc({ graceMs: HOUR, storeIsMine: true });
    expect(mine.orphans).toEqual([{ digest: o.digest, size: 10 }]);
    expect(await fx.blobOnDisk(o.digest)).toBe(false);
  });

  test("orphan files are left alone in a registry:2 directory that has not been imported", async () => {
    const o = blob(bytes("foreign", 10));
    const file = fx.rt.storage.blobPath(o.digest);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, o.data);
    mkdirSync(path.join(fx.dir, "docker", "registry", "v2", "repositories", "library"), { recursive: true });
    const report = await fx.gc();
    expect(report.orphans).toEqual([]);
    expect(report.notes.join(" ")).toMatch(/registry:2/);
    expect(await fx.blobOnDisk(o.digest)).toBe(true);
  });

  test("abandoned upload sessions and row-less upload files older than the age are purged", async () => {
    const stale = await fx.registry.startUpload("r");
    await fx.registry.appendChunk(
      "r",
      stale.id,
      (async function* () {
        yield Buffer.alloc(1000, 1);
      })(),
    );
    const fresh = await fx.registry.startUpload("r");
    await fx.age(2 * HOUR);
    const fresher = await fx.registry.startUpload("r");
    // A file with no row (a monolithic upload whose process died), old by mtime.
    const uploads = path.join(fx.dir, "berth", "uploads");
    writeFileSync(path.join(uploads, "dead-beef"), Buffer.alloc(10));
    const past = (Date.now() - 2 * HOUR) / 1000;
    utimesSync(path.join(uploads, "dead-beef"), past, past);
    utimesSync(path.join(uploads, stale.id), past, past);
    utimesSync(path.join(uploads, fresh.id), past, past);

    const lease = (await Lease.acquire(fx.rt.meta, "job:uploadpurging"))!;
    const report = await purgeUploads(
      { meta: fx.rt.meta, store: fx.rt.storage },
      { ageMs: HOUR, batchSize: 10, pauseMs: 0, dryRun: false, lease },
    );
    await lease.release();
    expect(report.uploads.map((u) => `${u.kind}:${u.id}`).sort()).toEqual(
      [`file:dead-beef`, `session:${fresh.id}`, `session:${stale.id}`].sort(),
    );
    expect(report.uploadBytes).toBe(1010);
    await expect(fx.registry.uploadStatus("r", stale.id)).rejects.toThrow(/unknown/);
    expect((await fx.registry.uploadStatus("r", fresher.id)).size).toBe(0);
  });
});

describe("untagged manifests", () => {
  test("only when enabled; never a child of a kept index nor a referrer of a kept image", async () => {
    const tagged = image("tagged", [blob(bytes("t-l", 50))]);
    const sig = referrer("sig", { digest: tagged.digest, size: tagged.manifest.length });
    const loose = image("loose", [blob(bytes("loose-l", 50))]);
    const c1 = image("c1", [blob(bytes("c1-l", 50))]);
    const c2 = image("c2", [blob(bytes("c2-l", 50))]);
    await fx.pushImage("r", "v1", tagged);
    await fx.pushImage("r", sig.digest, sig);
    await fx.pushImage("r", loose.digest, loose);
    const idx = await fx.pushIndex("r", "multi", [c1, c2]);
    await fx.age(2 * HOUR);

    const off = await fx.gc({ graceMs: HOUR });
    expect(off.manifests).toEqual([]);

    const on = await fx.gc({ graceMs: HOUR, untagged: { enabled: true, olderThanMs: HOUR } });
    expect(on.manifests.map((m) => m.digest)).toEqual([loose.digest]);
    expect(await fx.hasManifest("r", loose.digest)).toBe(false);
    for (const d of [tagged.digest, sig.digest, c1.digest, c2.digest, idx])
      expect(await fx.hasManifest("r", d)).toBe(true);
    // The loose image's blobs went in the same run.
    expect(on.blobs.map((b) => b.digest).sort()).toEqual(
      [loose.digest, loose.config.digest, loose.layers[0]!.digest].sort(),
    );
  });

  test("removing an index untagged takes its children and the referrers of what goes", async () => {
    const c1 = image("i1", [blob(bytes("i1-l", 50))]);
    const c2 = image("i2", [blob(bytes("i2-l", 50))]);
    const idx = await fx.pushIndex("r", "multi", [c1, c2]);
    const sig = referrer("idx-sig", { digest: idx, size: 1 });
    await fx.pushImage("r", sig.digest, sig);
    // c2 is also tagged on its own: it stays.
    await fx.registry.putManifest("r", "c2", c2.manifest, "application/vnd.oci.image.manifest.v1+json");
    await fx.registry.deleteTag("r", "multi");
    await fx.age(2 * HOUR);
    const dry = await fx.gc({ graceMs: HOUR, untagged: { enabled: true, olderThanMs: HOUR }, dryRun: true });
    const report = await fx.gc({ graceMs: HOUR, untagged: { enabled: true, olderThanMs: HOUR } });
    const removed = report.manifests.map((m) => m.digest).sort();
    expect(removed).toEqual([idx, c1.digest, sig.digest].sort());
    expect(dry.manifests.map((m) => m.digest).sort()).toEqual(removed);
    expect(dry.blobs.map((b) => b.digest).sort()).toEqual(report.blobs.map((b) => b.digest).sort());
    expect(report.manifests.find((m) => m.digest === c1.digest)?.reason).toMatch(/child of index/);
    expect(report.manifests.find((m) => m.digest === sig.digest)?.reason).toMatch(/referrer of/);
    expect(await fx.hasManifest("r", c2.digest)).toBe(true);
  });

  test("a tagged referrer keeps its untagged subject", async () => {
    const subject = image("subj", [blob(bytes("subj-l", 50))]);
    const sbom = referrer("sbom", { digest: subject.digest, size: subject.manifest.length });
    await fx.pushImage("r", subject.digest, subject);
    await fx.pushImage("r", "sbom", sbom);
    await fx.age(2 * HOUR);
    const report = await fx.gc({ graceMs: HOUR, untagged: { enabled: true, olderThanMs: HOUR } });
    expect(report.manifests).toEqual([]);
    expect(await fx.hasManifest("r", subject.digest)).toBe(true);
  });

  test("untagged manifests younger than olderthan stay", async () => {
    const loose = image("young", [blob(bytes("young-l", 50))]);
    await fx.pushImage("r", loose.digest, loose);
    await fx.age(2 * HOUR);
    const report = await fx.gc({ graceMs: HOUR, untagged: { enabled: true, olderThanMs: 3 * HOUR } });
    expect(report.manifests).toEqual([]);
  });

  test("the in-transaction check keeps a manifest tagged (or indexed) after the plan was made", async () => {
    const loose = image("late-tag", [blob(bytes("lt-l", 50))]);
    const child = image("late-child", [blob(bytes("lc-l", 50))]);
    await fx.pushImage("r", loose.digest, loose);
    await fx.pushImage("r", child.digest, child);
    await fx.age(2 * HOUR);
    const repositoryId = (await fx.rt.meta.repositoryId("r"))!;
    // Meanwhile: one is tagged, the other becomes the child of a new index.
    await fx.registry.putManifest(
      "r",
      "now-tagged",
      loose.manifest,
      "application/vnd.oci.image.manifest.v1+json",
    );
    const { index } = await import("./gc-fixture.js");
    const idx = index([child]);
    await fx.registry.putManifest("r", "idx", idx.manifest, "application/vnd.oci.image.index.v1+json");
    const removed = await fx.rt.meta.transaction((trx) =>
      deleteManifestBatch(trx, repositoryId, [loose.digest, child.digest], Date.now() - HOUR),
    );
    expect([...removed.keys()]).toEqual([]);
  });
});

describe("leases", () => {
  test("one collector at a time; an idle lease is taken only on demand; a lost lease stops the run", async () => {
    const first = await Lease.acquire(fx.rt.meta, "job:gc");
    expect(first).not.toBeNull();
    expect(await Lease.acquire(fx.rt.meta, "job:gc")).toBeNull();
    expect(await Lease.acquire(fx.rt.meta, "job:gc", { takeIdle: true })).toBeNull();
    await first!.release(Date.now() + HOUR);
    expect((await readLock(fx.db, "job:gc"))?.holder).toMatch(/^idle:/);
    expect(await Lease.acquire(fx.rt.meta, "job:gc")).toBeNull();
    const onDemand = await Lease.acquire(fx.rt.meta, "job:gc", { takeIdle: true });
    expect(onDemand).not.toBeNull();

    // Someone else takes the lease over (it expired, say): our next batch notices and stops.
    const { sql } = await import("kysely");
    await sql`update locks set expires_at = 0 where name = 'job:gc'`.execute(fx.db);
    expect(await acquireLock(fx.db, "job:gc", "other:1:abcd", 60_000, false)).toBe(true);
    for (let i = 0; i < 5; i++) await fx.pushBlob("r", blob(bytes(`lost-${i}`, 10)));
    const report = await fx.gc({ lease: onDemand! });
    expect(report.aborted).toBe(true);
    expect(report.blobs).toEqual([]);
    expect(report.notes.join(" ")).toMatch(/lease was lost/);
  });

  test("a lease held by a dead process on this host is taken over at once", async () => {
    const { sql } = await import("kysely");
    const os = await import("node:os");
    // A pid that does not exist: beyond the kernel's pid_max.
    await sql`insert into locks (name, holder, expires_at) values ('job:gc', ${`run:${os.hostname()}:99999999:abcd1234`}, ${Date.now() + HOUR})`.execute(
      fx.db,
    );
    const lease = await Lease.acquire(fx.rt.meta, "job:gc");
    expect(lease).not.toBeNull();
    await lease!.release();
  });

  test("a stop request ends the run between batches", async () => {
    for (let i = 0; i < 30; i++) await fx.pushBlob("r", blob(bytes(`stop-${i}`, 10)));
    const controller = new AbortController();
    controller.abort();
    const report = await fx.gc({ signal: controller.signal });
    expect(report.aborted).toBe(true);
    expect(report.blobs).toEqual([]);
  });
});

describe("retention frees space", () => {
  test("a manifest too young to go with its tag is freed by the first collection after the grace period, with gc.untagged off", async () => {
    const layer = blob(bytes("retained-away", 2048));
    const img = image("retained-away", [layer]);
    await fx.pushImage("team/r", "old-1", img);
    await fx.pushImage("team/r", "keep", image("kept-r", [blob(bytes("kept-r", 100))]));
    const policies = compilePolicies(
      retentionSection.parse({ policies: [{ repositories: "team/*", keeptags: ["keep"] }] }).policies,
    );
    const run = async (dryRun: boolean) => {
      const lease = dryRun ? null : await Lease.acquire(fx.rt.meta, `test-retention-${Date.now()}`);
      try {
        return await applyRetention(
          { meta: fx.rt.meta, store: fx.rt.storage },
          { policies, graceMs: HOUR, batchSize: 10, pauseMs: 0, dryRun, lease },
        );
      } finally {
        await lease?.release();
      }
    };
    const dry = await run(true);
    const said = dry.repositories.flatMap((r) => r.manifests);
    expect(said.map((m) => m.digest)).toEqual([img.digest]);
    expect(said[0]?.reason).toMatch(/freed by the first collection after \d{4}-/);
    const report = await run(false);
    expect(report.tagsRemoved).toBe(1);
    // Too young to go with its tag (the grace period protects pushes in progress).
    expect(await fx.hasManifest("team/r", img.digest)).toBe(true);
    // Before the grace period has passed, the collector keeps it too.
    expect((await fx.gc({ graceMs: HOUR })).manifests).toEqual([]);
    await fx.age(2 * HOUR);
    const gc = await fx.gc({ graceMs: HOUR });
    expect(gc.manifests.map((m) => m.digest)).toEqual([img.digest]);
    expect(gc.blobs.map((b) => b.digest)).toContain(layer.digest);
    expect(await fx.blobOnDisk(layer.digest)).toBe(false);
  });
});
