/**
 * registry:2's `proxy.ttl` (issue 21): content of the pull-through cache that nobody pulled within its
 * upstream's TTL is expired, so that the garbage collector frees its blobs; the next pull fetches it again.
 *
 * A scheduled job (src/registry/jobs.ts) walks the mirrored repositories. In each, it removes the tags
 * whose manifest was neither cached (pushed into the cache, or moved) nor pulled within the TTL, then the
 * manifests that are untagged and not pulled within it either (cached by digest, or untagged just now),
 * with the manifests only they held (an index's children, referrers), through the collector's own
 * removal (planManifestRemoval: nothing that a kept manifest holds goes). Pull times are the manifests'
 * `last_pulled_at`, which every manifest GET records (Registry.getManifest). Nothing younger than the
 * collector's grace period is removed. Each removal is one transaction under the job's lease, and tags are
 * judged again inside it, so a pull or a fetch meanwhile keeps what it touched.
 */
import type { TagInfo } from "../../metadata/gc-queries.js";
import {
  Batcher,
  emptyReport,
  type GcLogger,
  type GcTarget,
  type Lease,
  noteStopped,
  type RemovedManifest,
  removeUnkeptManifests,
} from "../gc.js";

export interface ExpiryOptions {
  /** The TTL of a repository's cached content, or null when it is not expired by time (PullThroughCache.ttlOf). */
  ttlOf(name: string): number | null;
  /** gc.graceperiod: nothing newer is removed whatever the TTL. */
  graceMs: number;
  batchSize: number;
  pauseMs: number;
  lease: Lease;
  signal?: AbortSignal;
  log?: GcLogger;
}

export interface ExpiryReport {
  aborted: boolean;
  durationMs: number;
  tags: { repository: string; tag: string; digest: string }[];
  manifests: RemovedManifest[];
  notes: string[];
}

/** Whether cached content last cached or pulled at these times is past `cutoff`. */
function expired(cachedAt: number, pulledAt: number | null, cutoff: number): boolean {
  return Math.max(cachedAt, pulledAt ?? 0) < cutoff;
}

/** Expires what the mirrored repositories hold and nobody pulled within their TTL. */
export async function expireCache(target: GcTarget, options: ExpiryOptions): Promise<ExpiryReport> {
  const started = Date.now();
  const report: ExpiryReport = { aborted: false, durationMs: 0, tags: [], manifests: [], notes: [] };
  const b = new Batcher(target, emptyReport(false), options.lease, options.pauseMs, options.signal);
  try {
    for (let after = 0; ; ) {
      b.checkStop();
      const repos = await b.gc.repositoryPage(after, 100);
      if (repos.length === 0) break;
      after = repos[repos.length - 1]?.id ?? after;
      for (const repo of repos) {
        const ttl = options.ttlOf(repo.name);
        if (ttl === null) continue;
        b.checkStop();
        await expireRepository(b, repo, ttl, options, report);
      }
    }
  } catch (err) {
    if (!noteStopped(report, err)) throw err;
  }
  report.durationMs = Date.now() - started;
  return report;
}

async function expireRepository(
  b: Batcher,
  repo: { id: number; name: string },
  ttl: number,
  options: ExpiryOptions,
  report: ExpiryReport,
): Promise<void> {
  const keepFor = Math.max(ttl, options.graceMs);
  const untagged = new Set<string>();
  for (;;) {
    const step = await b.write(async (lease) => {
      let batch: TagInfo[] = [];
      let more = false;
      // Judged inside the transaction: a tag pulled or fetched again meanwhile stays.
      const gone = await b.gc.removeTags(lease, repo.id, (tags) => {
        const cutoff = Date.now() - keepFor;
        const old = tags.filter((t) => expired(t.updatedAt, t.pulledAt, cutoff));
        batch = old.slice(0, options.batchSize);
        more = old.length > batch.length;
        return batch;
      });
      return { gone, more: more && gone.length > 0 };
    });
    for (const t of step.gone) {
      report.tags.push({ repository: repo.name, tag: t.name, digest: t.digest });
      untagged.add(t.digest);
    }
    if (!step.more) break;
  }
  // Manifests untagged now, and those cached by digest alone, not pulled within the TTL either.
  const cutoff = Date.now() - keepFor;
  const graph = await b.gc.repositoryGraph(repo.id);
  const candidates = new Set<string>();
  for (const m of graph.manifests.values()) {
    if (m.tags.length === 0 && expired(m.freshAt, m.pulledAt, cutoff)) candidates.add(m.digest);
  }
  const removed =
    candidates.size === 0
      ? []
      : await removeUnkeptManifests(b, repo, cutoff, options.batchSize, false, {
          digests: candidates,
          reason: `not pulled within proxy.ttl (${Math.round(ttl / 1000)} s)`,
        });
  report.manifests.push(...removed);
  if (untagged.size > 0 || removed.length > 0) {
    options.log?.info(
      { job: "proxyexpiry", repository: repo.name, tags: untagged.size, manifests: removed.length },
      "proxy: expired cached content not pulled within proxy.ttl",
    );
  }
}
