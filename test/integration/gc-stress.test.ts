/**
 * Stress: garbage collection running in a loop (the server's own scheduled collector in two worker
 * processes, and `berth gc` from the CLI beside them, all competing for the one lease) while clients
 * push (images sharing base layers, indexes, referrers), move tags, delete and pull in parallel.
 *
 * Afterwards: every image still tagged pulls byte for byte (indexes with all their children, and their
 * referrers are still there); no blob that a manifest references is missing (checked in the database
 * and on disk); no request failed because of the collector; and the collector did remove garbage.
 *
 * GC_STRESS_SECONDS sets how long the clients run (default 30).
 *
 * A push that HEADs a blob, finds it and skips uploading it must find it at its manifest PUT too:
 * the registry renews a stale link on HEAD, so the collector cannot take it in between. Such a
 * failure is reported apart ("HEAD races") to say which guarantee broke.
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { openTestDb } from "../helpers/metadata-db.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import {
  type Blob,
  berth,
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
  writeConfig,
} from "./gc-helpers.js";

const SECONDS = Number(process.env.GC_STRESS_SECONDS ?? 30);
const GRACE = "6s"; // pushes must PUT their manifest within half of it after their HEADs
const REPOS = ["stress/r0", "stress/r1", "stress/r2", "stress/r3"];
const TAGS = ["t0", "t1", "t2", "t3", "t4", "t5"];

let server: Berth;
let dir: string;
let cli: string[];

beforeAll(async () => {
  dir = tempDir("berth-gc-stress-");
  const config = writeConfig(dir, [
    "gc:",
    "  interval: 500ms",
    `  graceperiod: ${GRACE}`,
    "  batchsize: 20",
    "  pause: 5ms",
    "  untagged:",
    "    enabled: true",
    `    olderthan: ${GRACE}`,
    "storage:",
    "  maintenance:",
    "    uploadpurging:",
    "      age: 30s",
    "      interval: 1s",
  ]);
  mkdirSync(path.join(dir, "data"));
  server = await startBerth({ args: ["-c", config], dataDir: path.join(dir, "data"), workers: 2 });
  cli = ["-c", config, "--data-dir", server.dataDir];
});

afterAll(async () => {
  await server?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const pick = <T>(list: T[]): T => list[Math.floor(Math.random() * list.length)] as T;

interface Failure {
  what: string;
  error: string;
}

test(
  `GC in a loop while clients push, tag, delete and pull for ${SECONDS}s`,
  async () => {
    const url = server.url;
    const base: Blob[] = Array.from({ length: 8 }, (_, i) =>
      blob(bytes(`stress-base-${i}`, 2000 + i * 1500)),
    );
    const failures: Failure[] = [];
    const headRaces: Failure[] = [];
    const counts = {
      pushes: 0,
      indexes: 0,
      referrers: 0,
      deletes: 0,
      pulls: 0,
      pullRaces: 0,
      cliRuns: 0,
      skippedBlobs: 0,
    };
    /** Referrers pushed, by subject digest. */
    const referrersOf = new Map<string, string[]>();
    const deadline = Date.now() + SECONDS * 1000;
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
        if ((await blobStatus(url, repo, b.digest)) === 200) {
          skipped.add(b.digest);
          counts.skippedBlobs++;
        } else {
          await pushBlob(url, repo, b);
        }
      }
      try {
        await putManifest(url, repo, ref, img.manifest);
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
        const repo = pick(REPOS);
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
            await putManifest(url, repo, tag, index, OCI_INDEX);
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
        const repo = pick(REPOS);
        const tag = pick(TAGS);
        try {
          const m = await getManifest(url, repo, tag);
          if (m.status !== 200) continue;
          // By digest (the manifest and all its tags) or by tag (the tag only).
          const status = await deleteManifest(url, repo, Math.random() < 0.5 ? (m.digest ?? tag) : tag);
          if (status === 202) counts.deletes++;
          else if (status !== 404) failures.push({ what: `delete ${repo}:${tag}`, error: `HTTP ${status}` });
        } catch (err) {
          failures.push({ what: `delete ${repo}:${tag}`, error: String(err) });
        }
      }
    };

    const puller = async () => {
      while (running()) {
        const repo = pick(REPOS);
        const tags = await listTags(url, repo).catch(() => []);
        if (tags.length === 0) {
          await sleep(20);
          continue;
        }
        const tag = pick(tags);
        const m = await getManifest(url, repo, tag);
        if (m.status === 404) {
          counts.pullRaces++; // deleted or moved since the listing
          continue;
        }
        try {
          const json = JSON.parse(m.bytes.toString()) as { manifests?: { digest: string }[] };
          const refs = json.manifests ? json.manifests.map((c) => c.digest) : [sha256(m.bytes)];
          for (const ref of refs) await pullImage(url, repo, ref);
          counts.pulls++;
        } catch (err) {
          // A blob or child may vanish with a manifest deleted since we read it; that is no failure.
          // But if the manifest is still there, something it references went missing.
          const still = await getManifest(url, repo, sha256(m.bytes));
          if (still.status === 200)
            failures.push({ what: `pull ${repo}:${tag} (${sha256(m.bytes)})`, error: String(err) });
          else counts.pullRaces++;
        }
      }
    };

    const cliLoop = async () => {
      while (running()) {
        const r = await berth(
          ["gc", ...cli, "--untagged", "--grace-period", GRACE, "--no-list", "--wait", "30s"],
          {
            env: { REGISTRY_GC_UNTAGGED_OLDERTHAN: GRACE },
          },
        );
        if (r.code !== 0)
          failures.push({ what: "berth gc (CLI)", error: `exit ${r.code}: ${r.stderr}${r.stdout}` });
        else counts.cliRuns++;
      }
    };

    await Promise.all([pusher(1), pusher(2), pusher(3), deleter(), puller(), puller(), cliLoop()]);

    // Settle: everything garbage is now older than the grace period; one more collection takes it.
    await sleep(6500);
    const final = await berth(
      ["gc", ...cli, "--untagged", "--grace-period", GRACE, "--no-list", "--json", "--wait", "60s"],
      {
        env: { REGISTRY_GC_UNTAGGED_OLDERTHAN: GRACE },
      },
    );
    expect(final.code, final.stderr).toBe(0);

    // 1. Every image still tagged pulls byte for byte; its referrers are still there.
    let tagged = 0;
    for (const repo of REPOS) {
      for (const tag of await listTags(url, repo)) {
        const m = await getManifest(url, repo, tag);
        expect(m.status, `${repo}:${tag}`).toBe(200);
        const json = JSON.parse(m.bytes.toString()) as { manifests?: { digest: string }[] };
        for (const ref of json.manifests ? json.manifests.map((c) => c.digest) : [sha256(m.bytes)]) {
          await pullImage(url, repo, ref);
          for (const sig of referrersOf.get(ref) ?? []) {
            expect((await getManifest(url, repo, sig)).status, `referrer ${sig} of ${repo}@${ref}`).toBe(200);
          }
        }
        tagged++;
      }
    }

    // 2. No blob that a manifest references is missing: rows and files.
    const db = await openTestDb(server.dataDir);
    const blobPath = (digest: string) => {
      const hex = digest.slice(7);
      return path.join(
        server.dataDir,
        "docker",
        "registry",
        "v2",
        "blobs",
        "sha256",
        hex.slice(0, 2),
        hex,
        "data",
      );
    };
    let referenced = 0;
    try {
      const refs = await db.all<{ digest: string; size: number | null }>(
        `select mb.blob_digest as digest, b.size as size from manifest_blobs mb left join blobs b on b.digest = mb.blob_digest
           union select m.digest, b.size from manifests m left join blobs b on b.digest = m.digest`,
      );
      for (const r of refs) {
        expect(r.size, `blob row of ${r.digest}`).not.toBeNull();
        expect(existsSync(blobPath(r.digest)), `file of ${r.digest}`).toBe(true);
        expect(statSync(blobPath(r.digest)).size).toBe(r.size);
        referenced++;
      }
      // 3. And garbage is gone: no row nobody uses, no file without a row.
      const rows = (await db.get<{ n: number }>("select count(*) as n from blobs"))!.n;
      let files = 0;
      const root = path.join(server.dataDir, "docker", "registry", "v2", "blobs", "sha256");
      for (const fan of readdirSync(root)) files += readdirSync(path.join(root, fan)).length;
      expect(files).toBe(rows);
      const unused = (await db.get<{ n: number }>(
        `select count(*) as n from blobs b where not exists (select 1 from manifest_blobs mb where mb.blob_digest = b.digest)
           and not exists (select 1 from manifests m where m.digest = b.digest)`,
      ))!;
      expect(unused.n).toBe(0);
    } finally {
      await db.close();
    }

    // 4. No request failed, no job failed, no 5xx; and the collectors did work while clients ran.
    expect(failures).toEqual([]);
    expect(headRaces).toEqual([]);
    const logs = server.logs.map((l) => {
      try {
        return JSON.parse(l) as {
          msg?: string;
          status?: number;
          blobs?: number;
          manifests?: number;
          job?: string;
          level?: number;
        };
      } catch {
        return {};
      }
    });
    expect(logs.filter((l) => (l.status ?? 0) >= 500)).toEqual([]);
    expect(logs.filter((l) => l.msg?.includes("failed"))).toEqual([]);
    const runs = logs.filter((l) => l.msg === "gc: collection finished");
    const removedBlobs = runs.reduce((n, l) => n + (l.blobs ?? 0), 0);
    const removedManifests = runs.reduce((n, l) => n + (l.manifests ?? 0), 0);
    console.log(
      `gc stress: ${SECONDS}s, ${JSON.stringify(counts)}, HEAD races ${headRaces.length}, ${runs.length} scheduled collections removed ${removedBlobs} blobs and ${removedManifests} manifests; ` +
        `at the end ${tagged} tags, ${referenced} referenced blobs`,
    );
    expect(counts.pushes).toBeGreaterThan(20);
    expect(counts.pulls).toBeGreaterThan(20);
    expect(counts.deletes).toBeGreaterThan(10);
    expect(runs.length + counts.cliRuns).toBeGreaterThan(5);
    expect(removedBlobs).toBeGreaterThan(0);
    expect(removedManifests).toBeGreaterThan(0);
  },
  (SECONDS + 150) * 1000,
);
