/**
 * The workload and the checks of the collector stress test (gc-stress.test.ts), shared with the
 * replicas test (replicas-s3.test.ts): clients push images sharing base layers, indexes and referrers,
 * move tags, delete and pull in parallel, spread over one or more registry URLs, while a collector runs;
 * afterwards nothing referenced may be missing and no request may have failed because of the collector.
 *
 * A push that HEADs a blob, finds it and skips uploading it must find it at its manifest PUT too:
 * the registry renews a stale link on HEAD, so the collector cannot take it in between. Such a
 * failure is reported apart ("HEAD races") to say which guarantee broke.
 */
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { expect } from "vitest";
import type { TestDb } from "../helpers/metadata-db.js";
import {
  type Blob,
  blob,
  blobStatus,
  bytes,
  deleteManifest,
  getManifest,
  HttpFailure,
  type Image,
  image,
  listTags,
  OCI_INDEX,
  pullImage,
  pushBlob,
  putManifest,
  sha256,
  sleep,
} from "./gc-helpers.js";

export const STRESS_REPOS = ["stress/r0", "stress/r1", "stress/r2", "stress/r3"];
const TAGS = ["t0", "t1", "t2", "t3", "t4", "t5"];

const pick = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)] as T;

export interface Failure {
  what: string;
  error: string;
}

export interface StressResult {
  failures: Failure[];
  headRaces: Failure[];
  counts: {
    pushes: number;
    indexes: number;
    referrers: number;
    deletes: number;
    pulls: number;
    pullRaces: number;
    collectorRuns: number;
    skippedBlobs: number;
  };
  /** Referrers pushed, by subject digest. */
  referrersOf: Map<string, string[]>;
}

/**
 * Runs three pushers, a deleter and two pullers for `seconds`, each request on one of `urls` picked at
 * random, and `collector` in a loop beside them (it returns an error message, or null when it ran).
 */
export async function runStressWorkload(options: {
  urls: string[];
  seconds: number;
  collector?: () => Promise<string | null>;
}): Promise<StressResult> {
  const url = () => pick(options.urls);
  const base: Blob[] = Array.from({ length: 8 }, (_, i) => blob(bytes(`stress-base-${i}`, 2000 + i * 1500)));
  const failures: Failure[] = [];
  const headRaces: Failure[] = [];
  const counts = {
    pushes: 0,
    indexes: 0,
    referrers: 0,
    deletes: 0,
    pulls: 0,
    pullRaces: 0,
    collectorRuns: 0,
    skippedBlobs: 0,
  };
  const referrersOf = new Map<string, string[]>();
  const deadline = Date.now() + options.seconds * 1000;
  const running = () => Date.now() < deadline;

  const fresh = (seed: string): Image => {
    const layers = [
      pick(base),
      ...(Math.random() < 0.5 ? [pick(base)] : []),
      blob(randomBytes(500 + Math.floor(Math.random() * 4000))),
    ];
    return image(`${seed}-${randomBytes(6).toString("hex")}`, [
      ...new Map(layers.map((l) => [l.digest, l])).values(),
    ]);
  };

  /** As real clients push: HEAD each blob, upload the missing ones, PUT the manifest. */
  const push = async (repo: string, ref: string, img: Image): Promise<boolean> => {
    const skipped = new Set<string>();
    for (const b of [img.config, ...img.layers]) {
      if ((await blobStatus(url(), repo, b.digest)) === 200) {
        skipped.add(b.digest);
        counts.skippedBlobs++;
      } else {
        await pushBlob(url(), repo, b);
      }
    }
    try {
      await putManifest(url(), repo, ref, img.manifest);
    } catch (err) {
      const detail =
        err instanceof HttpFailure
          ? (JSON.parse(err.body) as { errors?: { detail?: { digest?: string } }[] }).errors?.[0]?.detail
          : undefined;
      if (
        err instanceof HttpFailure &&
        err.code === "MANIFEST_BLOB_UNKNOWN" &&
        detail?.digest &&
        skipped.has(detail.digest)
      ) {
        headRaces.push({
          what: `push ${repo}:${ref}`,
          error: `blob ${detail.digest} answered HEAD 200, then was collected before the manifest PUT`,
        });
        return false;
      }
      throw err;
    }
    return true;
  };

  const pusher = async (id: number) => {
    while (running()) {
      const repo = pick(STRESS_REPOS);
      const tag = pick(TAGS);
      try {
        const roll = Math.random();
        if (roll < 0.2) {
          // An index of two platform images, pushed by digest first (untagged until the index arrives).
          const children = [fresh(`p${id}-c1`), fresh(`p${id}-c2`)];
          let complete = true;
          for (const c of children) complete = (await push(repo, c.digest, c)) && complete;
          if (!complete) continue;
          const index = Buffer.from(
            JSON.stringify({
              schemaVersion: 2,
              mediaType: OCI_INDEX,
              manifests: children.map((c, i) => ({
                mediaType: "application/vnd.oci.image.manifest.v1+json",
                digest: c.digest,
                size: c.manifest.length,
                platform: { architecture: i === 0 ? "amd64" : "arm64", os: "linux" },
              })),
            }),
          );
          await putManifest(url(), repo, tag, index, OCI_INDEX);
          counts.indexes++;
        } else {
          const img = fresh(`p${id}`);
          if (!(await push(repo, tag, img))) continue;
          counts.pushes++;
          if (roll > 0.7) {
            // A signature: an untagged referrer, kept as long as its subject is.
            const sig = image(`sig-${img.digest}`, [blob(randomBytes(300))], {
              artifactType: "application/vnd.example.signature",
              subject: {
                mediaType: "application/vnd.oci.image.manifest.v1+json",
                digest: img.digest,
                size: img.manifest.length,
              },
            });
            await push(repo, sig.digest, sig);
            referrersOf.set(img.digest, [...(referrersOf.get(img.digest) ?? []), sig.digest]);
            counts.referrers++;
          }
        }
      } catch (err) {
        failures.push({ what: `push ${repo}:${tag}`, error: String(err) });
      }
    }
  };

  const deleter = async () => {
    while (running()) {
      await sleep(150);
      const repo = pick(STRESS_REPOS);
      const tag = pick(TAGS);
      try {
        const m = await getManifest(url(), repo, tag);
        if (m.status !== 200) continue;
        // By digest (the manifest and all its tags) or by tag (the tag only).
        const status = await deleteManifest(url(), repo, Math.random() < 0.5 ? (m.digest ?? tag) : tag);
        if (status === 202) counts.deletes++;
        else if (status !== 404) failures.push({ what: `delete ${repo}:${tag}`, error: `HTTP ${status}` });
      } catch (err) {
        failures.push({ what: `delete ${repo}:${tag}`, error: String(err) });
      }
    }
  };

  const puller = async () => {
    while (running()) {
      const repo = pick(STRESS_REPOS);
      const at = url();
      const tags = await listTags(at, repo).catch(() => []);
      if (tags.length === 0) {
        await sleep(20);
        continue;
      }
      const tag = pick(tags);
      const m = await getManifest(at, repo, tag);
      if (m.status === 404) {
        counts.pullRaces++; // deleted or moved since the listing
        continue;
      }
      try {
        const json = JSON.parse(m.bytes.toString()) as { manifests?: { digest: string }[] };
        const refs = json.manifests ? json.manifests.map((c) => c.digest) : [sha256(m.bytes)];
        for (const ref of refs) await pullImage(url(), repo, ref);
        counts.pulls++;
      } catch (err) {
        // A blob or child may vanish with a manifest deleted since we read it; that is no failure.
        // But if the manifest is still there, something it references went missing.
        const still = await getManifest(url(), repo, sha256(m.bytes));
        if (still.status === 200)
          failures.push({ what: `pull ${repo}:${tag} (${sha256(m.bytes)})`, error: String(err) });
        else counts.pullRaces++;
      }
    }
  };

  const collector = async () => {
    if (!options.collector) return;
    while (running()) {
      const error = await options.collector();
      if (error) failures.push({ what: "collector", error });
      else counts.collectorRuns++;
    }
  };

  await Promise.all([pusher(1), pusher(2), pusher(3), deleter(), puller(), puller(), collector()]);
  return { failures, headRaces, counts, referrersOf };
}

/** Every image still tagged pulls byte for byte through `url`, and its referrers are still there. Returns the tags seen. */
export async function expectTaggedImagesWhole(url: string, result: StressResult): Promise<number> {
  let tagged = 0;
  for (const repo of STRESS_REPOS) {
    for (const tag of await listTags(url, repo)) {
      const m = await getManifest(url, repo, tag);
      expect(m.status, `${repo}:${tag}`).toBe(200);
      const json = JSON.parse(m.bytes.toString()) as { manifests?: { digest: string }[] };
      for (const ref of json.manifests ? json.manifests.map((c) => c.digest) : [sha256(m.bytes)]) {
        await pullImage(url, repo, ref);
        for (const sig of result.referrersOf.get(ref) ?? []) {
          expect((await getManifest(url, repo, sig)).status, `referrer ${sig} of ${repo}@${ref}`).toBe(200);
        }
      }
      tagged++;
    }
  }
  return tagged;
}

/**
 * No blob that a manifest references is missing (its row, and its bytes: `storedSize` gives the size of
 * the stored object or file, null when there is none), and garbage is gone: no row nobody uses, and as
 * many stored blobs (`storedCount`) as rows. Returns the number of referenced blobs.
 */
export async function expectNothingMissingNoGarbage(
  db: TestDb,
  storedSize: (digest: string) => Promise<number | null>,
  storedCount: () => Promise<number>,
): Promise<number> {
  const refs = await db.all<{ digest: string; size: number | null }>(
    `select mb.blob_digest as digest, b.size as size from manifest_blobs mb left join blobs b on b.digest = mb.blob_digest
       union select m.digest, b.size from manifests m left join blobs b on b.digest = m.digest`,
  );
  for (const r of refs) {
    expect(r.size, `blob row of ${r.digest}`).not.toBeNull();
    expect(await storedSize(r.digest), `stored bytes of ${r.digest}`).toBe(Number(r.size));
  }
  const rows = Number((await db.get<{ n: number }>("select count(*) as n from blobs"))!.n);
  expect(await storedCount()).toBe(rows);
  const unused = (await db.get<{ n: number }>(
    `select count(*) as n from blobs b where not exists (select 1 from manifest_blobs mb where mb.blob_digest = b.digest)
       and not exists (select 1 from manifests m where m.digest = b.digest)`,
  ))!;
  expect(Number(unused.n)).toBe(0);
  return refs.length;
}

interface LogLine {
  msg?: string;
  status?: number;
  blobs?: number;
  manifests?: number;
}

/**
 * No 5xx and no failed job in the servers' logs, and the collectors did work while clients ran.
 * Returns the scheduled collections and what they removed.
 */
export function expectCleanLogs(logs: string[]): { runs: number; blobs: number; manifests: number } {
  const lines = logs.map((l) => {
    try {
      return JSON.parse(l) as LogLine;
    } catch {
      return {} as LogLine;
    }
  });
  expect(lines.filter((l) => (l.status ?? 0) >= 500)).toEqual([]);
  expect(lines.filter((l) => l.msg?.includes("failed"))).toEqual([]);
  const runs = lines.filter((l) => l.msg === "gc: collection finished");
  return {
    runs: runs.length,
    blobs: runs.reduce((n, l) => n + (l.blobs ?? 0), 0),
    manifests: runs.reduce((n, l) => n + (l.manifests ?? 0), 0),
  };
}

/** What the filesystem store under `dataDir` holds, for expectNothingMissingNoGarbage. */
export function filesystemBlobs(dataDir: string): {
  storedSize: (digest: string) => Promise<number | null>;
  storedCount: () => Promise<number>;
} {
  const root = path.join(dataDir, "docker", "registry", "v2", "blobs", "sha256");
  const file = (digest: string) => {
    const hex = digest.slice(7);
    return path.join(root, hex.slice(0, 2), hex, "data");
  };
  return {
    storedSize: async (digest) => (existsSync(file(digest)) ? statSync(file(digest)).size : null),
    storedCount: async () => {
      let files = 0;
      for (const fan of readdirSync(root)) files += readdirSync(path.join(root, fan)).length;
      return files;
    },
  };
}
