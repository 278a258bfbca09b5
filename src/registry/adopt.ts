import { createHash } from "node:crypto";
import { Worker } from "node:worker_threads";
import type {
  DistributionMetadata,
  ImportBatch,
  ImportedManifest,
  ImportedRepository,
} from "../metadata/distribution-queries.js";
import type { DistributionTree, LinkFile, RepositoryLinks } from "../storage/distribution-layout.js";
import { manifestRecord, parseManifest, requiredBlobs } from "./manifests.js";
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
  | "manifest-too-large"
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
  layout: DistributionTree;
  /** Null in a dry run: nothing is written. */
  queries: DistributionMetadata | null;
}

export interface AdoptionOptions {
  dryRun?: boolean;
  onProgress?: (p: AdoptionProgress) => void;
  /** Called once the repositories are listed. */
  onListed?: (count: number) => void;
  /** Rows (manifests + links + tags) per transaction. */
  batchRows?: number;
  /** Worker threads reading repositories (default: none below 200 repositories, else 8). */
  workers?: number;
  /** The module the reading threads run (src/cli/adopt-worker-file.ts); without it, all is read here. */
  workerFile?: URL;
  /** A revision naming a larger blob is reported and skipped, never read (http.maxmanifestbytes). */
  maxManifestBytes?: number;
}

/** The default of http.maxmanifestbytes, for callers that have no configuration. */
export const DEFAULT_MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/**
 * Repositories of a tree that is not on a filesystem (a bucket) read at once: each read is a few requests
 * (a tag link, a HEAD and a GET per manifest, a HEAD per blob not seen yet) that wait on the network.
 */
const STREAM_CONCURRENCY = 32;

const DEFAULT_BATCH_ROWS = 20_000;

export const PROBLEM_TEXT: Record<ProblemKind, string> = {
  "empty-link": "empty link file (left by a crash of Distribution 2.8): skipped",
  "invalid-link": "link file does not hold a digest: skipped",
  "missing-blob": "link to a blob that is missing: skipped",
  "invalid-manifest": "manifest does not parse: skipped",
  "digest-mismatch": "manifest bytes do not hash to its digest: skipped",
  schema1: "Docker schema1 manifest (not supported by Berth): skipped",
  "dangling-tag": "tag points to a manifest that was not adopted: skipped",
  "manifest-too-large": "revision names a blob larger than http.maxmanifestbytes: skipped, not read",
  "invalid-name": "folder name is not a valid repository name: skipped",
  upload: "Distribution upload in progress (cannot be resumed): removed",
};

/** What reading one repository gives: its rows, the blobs it needs rows for, and its problems. */
export interface RepositoryResult {
  name: string;
  /** Null when the name itself is not valid. */
  repo: ImportedRepository | null;
  blobs: ImportBatch["blobs"];
  problems: AdoptionProblem[];
  /** Blob links adopted (`_layers`). */
  links: number;
  /** Distribution's uploads in progress (to remove). */
  uploads: string[];
}

/**
 * Reads repositories one at a time, keeping the size of every blob it has seen so that a blob shared by many
 * repositories is stat'd once. On a filesystem every call it makes is synchronous underneath (see
 * DistributionLayout); used in worker threads, and in the calling thread for small directories and buckets.
 */
export class RepositoryReader {
  private readonly stats = new Map<string, { size: number; modifiedAt: number } | null>();
  private readonly recorded = new Set<string>();

  constructor(
    readonly layout: DistributionTree,
    readonly maxManifestBytes = DEFAULT_MAX_MANIFEST_BYTES,
  ) {}

  private async statBlob(digest: string): Promise<{ size: number; modifiedAt: number } | null> {
    let st = this.stats.get(digest);
    if (st === undefined) {
      st = parseDigest(digest) ? await this.layout.statBlob(digest) : null;
      // Bounded: a bucket may hold millions of blobs; forgetting costs a stat again, never a wrong answer.
      if (this.stats.size >= 500_000) this.stats.clear();
      this.stats.set(digest, st);
    }
    return st;
  }

  async read(name: string, given?: RepositoryLinks): Promise<RepositoryResult> {
    const problems: AdoptionProblem[] = [];
    const problem = (kind: ProblemKind, path: string, detail?: string): null => {
      problems.push({ kind, repository: name, path, ...(detail ? { detail } : {}) });
      return null;
    };
    const linkProblem = (link: LinkFile) =>
      problem(link.problem === "empty" ? "empty-link" : "invalid-link", link.path);
    if (!isValidName(name)) {
      problem("invalid-name", `${this.layout.repositories}/${name}`);
      return { name, repo: null, blobs: [], problems, links: 0, uploads: [] };
    }
    const links = given ?? (await this.layout.readRepository(name));
    const repo: ImportedRepository = { name, manifests: [], tags: [], links: [] };
    const blobs: ImportBatch["blobs"] = [];
    const record = (digest: string, size: number, createdAt: number) => {
      if (this.recorded.has(digest)) return;
      if (this.recorded.size >= 500_000) this.recorded.clear();
      this.recorded.add(digest);
      blobs.push({ digest, size, createdAt: Math.round(createdAt) });
    };
    for (const upload of links.uploads) problem("upload", upload.path);

    const linked = new Set<string>();
    for (const link of links.layers) {
      if (!link.digest) {
        linkProblem(link);
        continue;
      }
      const st = await this.statBlob(link.digest);
      if (!st) {
        problem("missing-blob", link.path, link.digest);
        continue;
      }
      record(link.digest, st.size, st.modifiedAt);
      linked.add(link.digest);
      repo.links.push({ digest: link.digest, at: Math.round(link.modifiedAt) });
    }

    const adopted = new Set<string>();
    const adoptRevision = async (link: LinkFile): Promise<ImportedManifest | null> => {
      if (!link.digest) return linkProblem(link);
      const digest = link.digest;
      const parsedDigest = parseDigest(digest);
      if (!parsedDigest) return problem("invalid-link", link.path, digest);
      const stored = await this.statBlob(digest);
      if (!stored) return problem("missing-blob", link.path, digest);
      if (stored.size > this.maxManifestBytes)
        return problem("manifest-too-large", link.path, `${digest}: ${stored.size} bytes`);
      const content = await this.layout.readBlob(digest);
      const actual = `${parsedDigest.algorithm}:${createHash(parsedDigest.algorithm).update(content).digest("hex")}`;
      if (actual !== digest) return problem("digest-mismatch", link.path, `${digest} holds ${actual}`);
      let parsed: ReturnType<typeof parseManifest>;
      try {
        if (isSchema1(content)) return problem("schema1", link.path, digest);
        parsed = parseManifest(content, undefined);
      } catch (err) {
        return problem("invalid-manifest", link.path, `${digest}: ${(err as Error).message}`);
      }
      const blobsOf = requiredBlobs(parsed);
      for (const b of blobsOf) {
        const st = await this.statBlob(b);
        if (st) record(b, st.size, st.modifiedAt);
      }
      record(digest, content.length, link.modifiedAt);
      adopted.add(digest);
      const at = Math.round(link.modifiedAt);
      // As a push does: a manifest is also a blob the repository may read.
      if (!linked.has(digest)) repo.links.push({ digest, at });
      return { ...manifestRecord(digest, content, parsed), createdAt: at };
    };
    for (const link of links.revisions) {
      const manifest = await adoptRevision(link);
      if (manifest) repo.manifests.push(manifest);
    }

    for (const { tag, link } of links.tags) {
      if (!isValidTag(tag)) {
        problem("invalid-name", link.path, `tag ${tag}`);
        continue;
      }
      if (!link.digest) {
        linkProblem(link);
        continue;
      }
      if (!adopted.has(link.digest)) {
        problem("dangling-tag", link.path, `${tag} -> ${link.digest}`);
        continue;
      }
      repo.tags.push({ name: tag, digest: link.digest, at: Math.round(link.modifiedAt) });
    }
    return { name, repo, blobs, problems, links: linked.size, uploads: links.uploads.map((u) => u.path) };
  }
}

/**
 * Repositories are read by this many worker threads: reading is bound by the disk far more than by the CPU
 * on a cold cache, and 8 threads keep enough reads in flight (on the 2-core development VM, 100,000
 * manifests from a cold cache: 56 s with 8 threads, 157 s with 4, 197 s with none). Small directories are
 * read in the calling thread.
 */
function defaultWorkers(repositories: number): number {
  return repositories < 200 ? 0 : 8;
}

/** Reads `names` in `count` worker threads, in chunks, yielding results as they come. */
async function* readInWorkers(
  workerFile: URL,
  root: string,
  names: string[],
  count: number,
  maxManifestBytes: number,
): AsyncGenerator<RepositoryResult[]> {
  const CHUNK = 50;
  let next = 0;
  const queue: RepositoryResult[][] = [];
  let wake: (() => void) | null = null;
  let failed: Error | null = null;
  let running = count;
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  const workers = Array.from({ length: count }, () => {
    const worker = new Worker(workerFile, { workerData: { root, maxManifestBytes } });
    const feed = () => {
      if (next >= names.length) {
        void worker.terminate();
        return;
      }
      worker.postMessage(names.slice(next, next + CHUNK));
      next += CHUNK;
    };
    worker.on("message", (results: RepositoryResult[]) => {
      queue.push(results.map(revive));
      feed();
      notify();
    });
    worker.on("error", (err) => {
      failed ??= err;
      notify();
    });
    worker.on("exit", () => {
      running--;
      notify();
    });
    feed();
    return worker;
  });
  try {
    for (;;) {
      if (failed) throw failed;
      const results = queue.shift();
      if (results) {
        yield results;
        continue;
      }
      if (running === 0) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  } finally {
    for (const w of workers) void w.terminate();
  }
}

/** Buffers arrive from a worker as Uint8Arrays. */
function revive(r: RepositoryResult): RepositoryResult {
  if (r.repo)
    for (const m of r.repo.manifests)
      m.content = Buffer.from(m.content.buffer, m.content.byteOffset, m.content.byteLength);
  return r;
}

async function* readHere(reader: RepositoryReader, names: string[]): AsyncGenerator<RepositoryResult[]> {
  for (let i = 0; i < names.length; i += 20) {
    const out: RepositoryResult[] = [];
    for (const name of names.slice(i, i + 20)) out.push(await reader.read(name));
    yield out;
    // Reading a directory is synchronous: let timers and logging run in between.
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * A tree that is not on a filesystem (a bucket): repositories come from its scan as they are listed, and up
 * to `STREAM_CONCURRENCY` of them are read at once (each read is a few requests that wait on the network);
 * results are handed on in small groups as they complete.
 */
async function* readStreaming(
  reader: RepositoryReader,
  tree: DistributionTree,
): AsyncGenerator<RepositoryResult[]> {
  const inFlight = new Set<Promise<void>>();
  const done: RepositoryResult[] = [];
  let failed: unknown = null;
  for await (const repository of tree.scan()) {
    const task: Promise<void> = repository
      .links()
      .then((links) => reader.read(repository.name, links))
      .then(
        (result) => void done.push(result),
        (err: unknown) => {
          failed ??= err;
        },
      )
      .finally(() => inFlight.delete(task));
    inFlight.add(task);
    if (inFlight.size >= STREAM_CONCURRENCY) await Promise.race(inFlight);
    if (failed) throw failed;
    if (done.length >= 20) yield done.splice(0);
  }
  await Promise.all(inFlight);
  if (failed) throw failed;
  if (done.length > 0) yield done.splice(0);
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
  const tree = target.layout;
  const maxManifestBytes = options.maxManifestBytes ?? DEFAULT_MAX_MANIFEST_BYTES;
  // A directory is listed whole first (names only) and may be read by threads; a bucket is streamed.
  const names = tree.listRepositories ? tree.listRepositories() : null;
  const total = names ? names.length : await tree.countRepositories();
  options.onListed?.(total);

  const recorded = new Set<string>();
  let batch: ImportBatch = { repositories: [], blobs: [] };
  let batchRows = 0;
  const flush = async () => {
    const current = batch;
    batch = { repositories: [], blobs: [] };
    batchRows = 0;
    if (dryRun || !target.queries || (current.repositories.length === 0 && current.blobs.length === 0))
      return;
    await target.queries.importBatch(current);
  };

  const workers = options.workerFile && names && tree.root ? (options.workers ?? defaultWorkers(total)) : 0;
  const reader = new RepositoryReader(tree, maxManifestBytes);
  const source =
    options.workerFile && names && tree.root && workers > 0
      ? readInWorkers(options.workerFile, tree.root, names, workers, maxManifestBytes)
      : names
        ? readHere(reader, names)
        : readStreaming(reader, tree);
  let done = 0;
  let lastProgress = started;
  for await (const results of source) {
    for (const r of results) {
      done++;
      report.problems.push(...r.problems);
      for (const upload of r.uploads) if (!dryRun) await tree.purgeUpload(upload);
      report.uploads += r.uploads.length;
      if (!r.repo) continue;
      const repo = r.repo;
      const blobs = r.blobs.filter((b) => !recorded.has(b.digest));
      for (const b of blobs) recorded.add(b.digest);
      report.repositories++;
      report.manifests += repo.manifests.length;
      report.tags += repo.tags.length;
      report.links += r.links;
      report.blobs += blobs.length;
      if (repo.links.length + repo.manifests.length + repo.tags.length > 0) batch.repositories.push(repo);
      batch.blobs.push(...blobs);
      batchRows += repo.links.length + repo.manifests.length * 3 + repo.tags.length + blobs.length;
      if (batchRows >= (options.batchRows ?? DEFAULT_BATCH_ROWS)) await flush();
    }
    const now = Date.now();
    if (options.onProgress && (now - lastProgress >= 1000 || done === total)) {
      lastProgress = now;
      options.onProgress({
        repositories: done,
        repositoriesTotal: total,
        manifests: report.manifests,
        elapsedMs: now - started,
      });
    }
  }
  await flush();
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
