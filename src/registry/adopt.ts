import { createHash } from "node:crypto";
import type {
  DistributionQueries,
  ImportBatch,
  ImportedRepository,
} from "../metadata/distribution-queries.js";
import type { BlobStore } from "../storage/blob-store.js";
import { type DistributionLayout, forEachLimit, type LinkFile } from "../storage/distribution-layout.js";
import { parseManifest, requiredBlobs } from "./manifests.js";
import { isValidName, isValidTag, parseDigest } from "./names.js";

/**
 * Adoption of a registry:2 (Distribution 2.8) data directory, in place (issue 12).
 *
 * Distribution keeps its state in link files beside the blobs; Berth keeps it in the database. Adopting
 * reads every repository's link files, the manifests they name (from the blob store: nothing is copied
 * or rewritten), parses each manifest with the same parser as a push, and writes the rows in large
 * transactions. Rows that exist are kept (ON CONFLICT DO NOTHING), so an interrupted adoption simply runs
 * again from the start and ends with the same rows; once it has finished, the database says so
 * (distribution_state) and the directory is never imported again.
 *
 * What Distribution leaves behind is reported, not fatal: empty link files (Distribution 2.8 writes links
 * in place and a crash leaves 0 bytes), links to missing blobs, manifests that do not parse or do not hash
 * to their name, schema1 manifests, tags whose manifest was not imported, and uploads in progress (which
 * cannot be resumed: Distribution keeps Go's hash state; they are removed).
 */

export type ProblemKind =
  | "empty-link"
  | "invalid-link"
  | "missing-blob"
  | "invalid-manifest"
  | "digest-mismatch"
  | "schema1"
  | "dangling-tag"
  | "invalid-name"
  | "upload";

export interface AdoptionProblem {
  kind: ProblemKind;
  /** The file or folder concerned. */
  path: string;
  repository: string;
  detail?: string;
}

export interface AdoptionProgress {
  repositories: number;
  repositoriesTotal: number;
  manifests: number;
  elapsedMs: number;
}

export interface AdoptionReport {
  dryRun: boolean;
  repositories: number;
  manifests: number;
  tags: number;
  /** Blob links (`_layers`) adopted. */
  links: number;
  /** Distinct blobs recorded. */
  blobs: number;
  /** Distribution uploads removed (or, in a dry run, that would be). */
  uploads: number;
  problems: AdoptionProblem[];
  durationMs: number;
}

export interface AdoptionTarget {
  layout: DistributionLayout;
  store: BlobStore;
  /** Null in a dry run: nothing is written. */
  queries: DistributionQueries | null;
}

export interface AdoptionOptions {
  dryRun?: boolean;
  onProgress?: (p: AdoptionProgress) => void;
  /** Called once the repositories are listed. */
  onListed?: (count: number) => void;
  /** Rows (manifests + links + tags) per transaction. */
  batchRows?: number;
  /** Repositories read at a time. */
  concurrency?: number;
}

const DEFAULT_BATCH_ROWS = 20_000;

export const PROBLEM_TEXT: Record<ProblemKind, string> = {
  "empty-link": "empty link file (left by a crash of Distribution 2.8): skipped",
  "invalid-link": "link file does not hold a digest: skipped",
  "missing-blob": "link to a blob that is missing: skipped",
  "invalid-manifest": "manifest does not parse: skipped",
  "digest-mismatch": "manifest bytes do not hash to its digest: skipped",
  schema1: "Docker schema1 manifest (not supported by Berth): skipped",
  "dangling-tag": "tag points to a manifest that was not adopted: skipped",
  "invalid-name": "folder name is not a valid repository name: skipped",
  upload: "Distribution upload in progress (cannot be resumed): removed",
};

async function readAll(store: BlobStore, digest: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await store.read(digest)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function adoptDistribution(
  target: AdoptionTarget,
  options: AdoptionOptions = {},
): Promise<AdoptionReport> {
  const dryRun = options.dryRun ?? target.queries === null;
  const started = Date.now();
  const report: AdoptionReport = {
    dryRun,
    repositories: 0,
    manifests: 0,
    tags: 0,
    links: 0,
    blobs: 0,
    uploads: 0,
    problems: [],
    durationMs: 0,
  };
  const names = await target.layout.listRepositories();
  options.onListed?.(names.length);

  /** Blob sizes, each stat'd once however many repositories link the blob. */
  const stats = new Map<string, Promise<{ size: number; modifiedAt: number } | null>>();
  const statBlob = (digest: string) => {
    let p = stats.get(digest);
    if (!p) {
      p = parseDigest(digest) ? target.store.stat(digest) : Promise.resolve(null);
      stats.set(digest, p);
    }
    return p;
  };
  const recorded = new Set<string>();

  let batch: ImportBatch = { repositories: [], blobs: [] };
  let batchRows = 0;
  let writing: Promise<void> = Promise.resolve();
  const flush = async () => {
    const current = batch;
    batch = { repositories: [], blobs: [] };
    batchRows = 0;
    if (dryRun || !target.queries || current.repositories.length === 0) return;
    const queries = target.queries;
    // One batch is written while the next is read.
    await writing;
    writing = queries.importBatch(current);
    await writing;
  };
  const problem = (kind: ProblemKind, repository: string, path: string, detail?: string): void => {
    report.problems.push({ kind, repository, path, ...(detail ? { detail } : {}) });
  };
  const linkProblem = (repository: string, link: LinkFile) =>
    problem(link.problem === "empty" ? "empty-link" : "invalid-link", repository, link.path);

  let done = 0;
  let lastProgress = 0;
  await forEachLimit(names, options.concurrency ?? 8, async (name) => {
    if (!isValidName(name)) {
      problem("invalid-name", name, `${target.layout.repositories}/${name}`);
      return;
    }
    const links = await target.layout.readRepository(name);
    const repo: ImportedRepository = { name, manifests: [], tags: [], links: [] };
    const blobs: ImportBatch["blobs"] = [];
    const record = (digest: string, size: number, createdAt: number) => {
      if (recorded.has(digest)) return;
      recorded.add(digest);
      blobs.push({ digest, size, createdAt: Math.round(createdAt) });
    };

    for (const upload of links.uploads) {
      problem("upload", name, upload.path);
      if (!dryRun) await target.layout.purgeUpload(upload.path);
    }

    const linked = new Set<string>();
    await forEachLimit(links.layers, 16, async (link) => {
      if (!link.digest) return linkProblem(name, link);
      const st = await statBlob(link.digest);
      if (!st) return problem("missing-blob", name, link.path, link.digest);
      record(link.digest, st.size, st.modifiedAt);
      linked.add(link.digest);
      repo.links.push({ digest: link.digest, at: Math.round(link.modifiedAt) });
    });

    const adopted = new Set<string>();
    await forEachLimit(links.revisions, 16, async (link) => {
      if (!link.digest) return linkProblem(name, link);
      const digest = link.digest;
      const parsedDigest = parseDigest(digest);
      if (!parsedDigest) return problem("invalid-link", name, link.path, digest);
      if (!(await statBlob(digest))) return problem("missing-blob", name, link.path, digest);
      const content = await readAll(target.store, digest);
      const actual = `${parsedDigest.algorithm}:${createHash(parsedDigest.algorithm).update(content).digest("hex")}`;
      if (actual !== digest) return problem("digest-mismatch", name, link.path, `${digest} holds ${actual}`);
      let parsed: ReturnType<typeof parseManifest>;
      try {
        if (isSchema1(content)) return problem("schema1", name, link.path, digest);
        parsed = parseManifest(content, undefined);
      } catch (err) {
        return problem("invalid-manifest", name, link.path, `${digest}: ${(err as Error).message}`);
      }
      const blobsOf = requiredBlobs(parsed);
      for (const b of blobsOf) {
        const st = await statBlob(b);
        if (st) record(b, st.size, st.modifiedAt);
      }
      record(digest, content.length, link.modifiedAt);
      adopted.add(digest);
      const at = Math.round(link.modifiedAt);
      repo.manifests.push({
        digest,
        mediaType: parsed.mediaType,
        content,
        artifactType: parsed.artifactType,
        subject: parsed.subject?.digest ?? null,
        annotations: parsed.annotations ? JSON.stringify(parsed.annotations) : null,
        configDigest: parsed.config?.digest ?? null,
        blobs: blobsOf,
        children: parsed.manifests.map((m) => m.digest),
        createdAt: at,
      });
      // As a push does: a manifest is also a blob the repository may read.
      if (!linked.has(digest)) repo.links.push({ digest, at });
    });

    for (const { tag, link } of links.tags) {
      if (!isValidTag(tag)) {
        problem("invalid-name", name, link.path, `tag ${tag}`);
        continue;
      }
      if (!link.digest) {
        linkProblem(name, link);
        continue;
      }
      if (!adopted.has(link.digest)) {
        problem("dangling-tag", name, link.path, `${tag} -> ${link.digest}`);
        continue;
      }
      repo.tags.push({ name: tag, digest: link.digest, at: Math.round(link.modifiedAt) });
    }

    report.repositories++;
    report.manifests += repo.manifests.length;
    report.tags += repo.tags.length;
    report.links += linked.size;
    report.uploads += links.uploads.length;
    report.blobs += blobs.length;
    if (repo.links.length + repo.manifests.length + repo.tags.length > 0) {
      batch.repositories.push(repo);
      batch.blobs.push(...blobs);
      batchRows += repo.links.length + repo.manifests.length * 3 + repo.tags.length;
      if (batchRows >= (options.batchRows ?? DEFAULT_BATCH_ROWS)) await flush();
    } else if (blobs.length > 0) {
      batch.blobs.push(...blobs);
    }
    done++;
    const now = Date.now();
    if (options.onProgress && (now - lastProgress >= 1000 || done === names.length)) {
      lastProgress = now;
      options.onProgress({
        repositories: done,
        repositoriesTotal: names.length,
        manifests: report.manifests,
        elapsedMs: now - started,
      });
    }
  });
  await flush();
  await writing;
  report.problems.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  report.durationMs = Date.now() - started;
  return report;
}

/** A Docker schema1 manifest (signed or not): `"schemaVersion": 1`. */
function isSchema1(content: Buffer): boolean {
  try {
    const json = JSON.parse(content.toString("utf8")) as { schemaVersion?: unknown };
    return json?.schemaVersion === 1;
  } catch {
    return false;
  }
}

/** "12 repositories, 340 manifests, ..." plus one line per problem. */
export function summaryLines(report: AdoptionReport): string[] {
  const verb = report.dryRun ? "would adopt" : "adopted";
  const lines = [
    `${verb} ${report.repositories} repositories, ${report.manifests} manifests, ${report.tags} tags, ` +
      `${report.links} blob links (${report.blobs} blobs) in ${(report.durationMs / 1000).toFixed(1)} s`,
  ];
  if (report.problems.length > 0) lines.push(`${report.problems.length} problems (the rest was adopted):`);
  for (const p of report.problems)
    lines.push(`  ${p.kind}: ${p.path}${p.detail ? ` (${p.detail})` : ""}: ${PROBLEM_TEXT[p.kind]}`);
  return lines;
}
