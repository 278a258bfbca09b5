import type { RetentionPolicyConfig } from "../config/sections/gc.js";
import type { TagInfo } from "../metadata/gc-queries.js";
import {
  Batcher,
  emptyReport,
  type GcLogger,
  type GcReport,
  type GcTarget,
  type Lease,
  noteStopped,
  planManifestRemoval,
  type RemovedManifest,
  removeUnkeptManifests,
} from "./gc.js";

/**
 * Retention policies (issue 6): per repository pattern, which tags to keep and which to remove.
 *
 * For each repository the FIRST policy whose pattern matches applies (put specific patterns before
 * general ones); a repository that no policy matches is left alone. Within a policy a tag is kept when
 *   - it matches one of `keeptags` (regular expressions, matched against the whole tag), or
 *   - it is one of the `keeplast` most recently pushed tags among those keeptags did not keep, or
 *   - its image was pulled within `keeppulledwithin`, or
 *   - it is not older than `olderthan` (when set);
 * every other tag is removed. The age of a tag is the time it was last pushed or moved.
 *
 * A manifest whose last tag goes is removed with it, together with its referrers and, for an index,
 * its children, unless something else holds them (another tag, a kept index, a kept referrer) or they
 * are newer than gc.graceperiod. Their blobs go at the next garbage collection.
 *
 * Every deletion re-evaluates the policy inside the write transaction that deletes, so a tag pushed,
 * moved or pulled meanwhile is judged on what is true then.
 */

export interface CompiledPolicy {
  index: number;
  repositories: string[];
  patterns: RegExp[];
  keeplast?: number;
  keeptags: RegExp[];
  keeptagSources: string[];
  olderthan?: number;
  keeppulledwithin?: number;
}

/** A repository pattern: `*` matches any run of characters (slashes included), as in access rules. */
export function patternRegex(pattern: string): RegExp {
  const body = pattern
    .split("*")
    .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"))
    .join(".*");
  return new RegExp(`^${body}$`);
}

export function compilePolicies(policies: RetentionPolicyConfig[]): CompiledPolicy[] {
  return policies.map((p, index) => ({
    index,
    repositories: p.repositories,
    patterns: p.repositories.map(patternRegex),
    keeplast: p.keeplast,
    keeptags: p.keeptags.map((t) => new RegExp(`^(?:${t})$`)),
    keeptagSources: p.keeptags,
    olderthan: p.olderthan,
    keeppulledwithin: p.keeppulledwithin,
  }));
}

export function policyFor(policies: CompiledPolicy[], repository: string): CompiledPolicy | null {
  return policies.find((p) => p.patterns.some((re) => re.test(repository))) ?? null;
}

/** "policy 1 (team-a/*: keeplast 5, keeptags v.*, olderthan 30d)" */
export function describePolicy(p: CompiledPolicy): string {
  const rules: string[] = [];
  if (p.keeplast !== undefined) rules.push(`keeplast ${p.keeplast}`);
  if (p.keeptagSources.length > 0) rules.push(`keeptags ${p.keeptagSources.join(" | ")}`);
  if (p.olderthan !== undefined) rules.push(`olderthan ${formatDuration(p.olderthan)}`);
  if (p.keeppulledwithin !== undefined) rules.push(`keeppulledwithin ${formatDuration(p.keeppulledwithin)}`);
  return `policy ${p.index + 1} (${p.repositories.join(", ")}: ${rules.join(", ")})`;
}

/** 90061000 → "1d1h1m1s"; the largest two units only. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const units: [string, number][] = [
    ["d", 86_400_000],
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1000],
  ];
  let rest = Math.round(ms);
  const parts: string[] = [];
  for (const [unit, size] of units) {
    if (rest >= size && parts.length < 2) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    } else if (parts.length > 0) {
      break;
    }
  }
  return parts.join("");
}

export interface TagDecision {
  tag: string;
  digest: string;
  remove: boolean;
  reason: string;
  info: TagInfo;
}

/** Decides every tag of one repository under `policy`. Pure: the same tags and time give the same answer. */
export function evaluatePolicy(policy: CompiledPolicy, tags: TagInfo[], now: number): TagDecision[] {
  const ordered = [...tags].sort(
    (a, b) => b.updatedAt - a.updatedAt || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  );
  const decisions: TagDecision[] = [];
  let recent = 0;
  for (const t of ordered) {
    const decide = (remove: boolean, reason: string) =>
      decisions.push({ tag: t.name, digest: t.digest, remove, reason, info: t });
    const pattern = policy.keeptags.findIndex((re) => re.test(t.name));
    if (pattern >= 0) {
      decide(false, `matches keeptags ${policy.keeptagSources[pattern]}`);
      continue;
    }
    if (policy.keeplast !== undefined && recent < policy.keeplast) {
      recent++;
      decide(false, `one of the ${policy.keeplast} most recent tags`);
      continue;
    }
    const age = now - t.updatedAt;
    if (
      policy.keeppulledwithin !== undefined &&
      t.pulledAt !== null &&
      now - t.pulledAt <= policy.keeppulledwithin
    ) {
      decide(
        false,
        `pulled ${formatDuration(now - t.pulledAt)} ago, within ${formatDuration(policy.keeppulledwithin)}`,
      );
      continue;
    }
    if (policy.olderthan !== undefined && age <= policy.olderthan) {
      decide(false, `pushed ${formatDuration(age)} ago, not older than ${formatDuration(policy.olderthan)}`);
      continue;
    }
    const why: string[] = [];
    if (policy.keeptags.length > 0) why.push("matches no keeptags");
    if (policy.keeplast !== undefined) why.push(`not among the ${policy.keeplast} most recent`);
    if (policy.keeppulledwithin !== undefined) {
      why.push(t.pulledAt === null ? "never pulled" : `last pulled ${formatDuration(now - t.pulledAt)} ago`);
    }
    if (policy.olderthan !== undefined)
      why.push(`pushed ${formatDuration(age)} ago, older than ${formatDuration(policy.olderthan)}`);
    decide(true, why.join("; "));
  }
  return decisions;
}

export interface RetentionOptions {
  policies: CompiledPolicy[];
  /** Manifests newer than this are not removed with their tags (gc.graceperiod). */
  graceMs: number;
  batchSize: number;
  pauseMs: number;
  dryRun: boolean;
  lease: Lease | null;
  signal?: AbortSignal;
  log?: GcLogger;
  /** Only this repository (berth retention --repository). */
  repository?: string;
}

export interface RepositoryRetention {
  repository: string;
  policy: string;
  tags: { tag: string; digest: string; reason: string }[];
  manifests: RemovedManifest[];
}

export interface RetentionReport {
  dryRun: boolean;
  aborted: boolean;
  startedAt: number;
  durationMs: number;
  repositories: RepositoryRetention[];
  tagsRemoved: number;
  manifestsRemoved: number;
  transactions: number;
  longestTransactionMs: number;
  notes: string[];
}

/** Applies (or, in a dry run, explains) every policy to every repository it covers. */
export async function applyRetention(target: GcTarget, options: RetentionOptions): Promise<RetentionReport> {
  const gcReport: GcReport = emptyReport(options.dryRun);
  const report: RetentionReport = {
    dryRun: options.dryRun,
    aborted: false,
    startedAt: gcReport.startedAt,
    durationMs: 0,
    repositories: [],
    tagsRemoved: 0,
    manifestsRemoved: 0,
    transactions: 0,
    longestTransactionMs: 0,
    notes: [],
  };
  if (!options.dryRun && !options.lease) throw new Error("applyRetention: a lease is required unless dryRun");
  const b = new Batcher(target, gcReport, options.lease, options.pauseMs, options.signal);
  try {
    if (options.policies.length > 0) {
      for (let after = 0; ; ) {
        b.checkStop();
        const repos = await b.gc.repositoryPage(after, 100);
        if (repos.length === 0) break;
        after = repos[repos.length - 1]?.id ?? after;
        for (const repo of repos) {
          if (options.repository !== undefined && repo.name !== options.repository) continue;
          const policy = policyFor(options.policies, repo.name);
          if (!policy) continue;
          b.checkStop();
          const result = options.dryRun
            ? await explainRepository(b, repo, policy, options)
            : await retainRepository(b, repo, policy, options);
          if (result.tags.length > 0 || result.manifests.length > 0) {
            report.repositories.push(result);
            report.tagsRemoved += result.tags.length;
            report.manifestsRemoved += result.manifests.length;
          }
        }
      }
    }
  } catch (err) {
    if (!noteStopped(report, err)) throw err;
  }
  report.transactions = gcReport.transactions;
  report.longestTransactionMs = gcReport.longestTransactionMs;
  report.durationMs = Date.now() - report.startedAt;
  return report;
}

async function explainRepository(
  b: Batcher,
  repo: { id: number; name: string },
  policy: CompiledPolicy,
  options: RetentionOptions,
): Promise<RepositoryRetention> {
  const now = Date.now();
  const decisions = evaluatePolicy(policy, await b.gc.tagsOfRepository(repo.id), now);
  const removed = decisions.filter((d) => d.remove);
  const result: RepositoryRetention = {
    repository: repo.name,
    policy: describePolicy(policy),
    tags: removed.map((d) => ({ tag: d.tag, digest: d.digest, reason: d.reason })),
    manifests: [],
  };
  if (removed.length === 0) return result;
  // Simulate: the repository's graph without the removed tags, then what would no longer be kept.
  const graph = await b.gc.repositoryGraph(repo.id);
  const gone = new Set(removed.map((d) => d.tag));
  for (const m of graph.manifests.values()) m.tags = m.tags.filter((t) => !gone.has(t));
  const untaggedNow = new Set(
    removed.map((d) => d.digest).filter((d) => (graph.manifests.get(d)?.tags.length ?? 1) === 0),
  );
  const remove = planManifestRemoval(graph, now - options.graceMs, untaggedNow);
  // Those too young to go with their tags are released: the first collection after the grace period frees them.
  const later = planManifestRemoval(graph, Number.POSITIVE_INFINITY, untaggedNow);
  for (const digest of [...later.digests].sort()) {
    const atOnce = remove.digests.has(digest);
    const m = graph.manifests.get(digest);
    const when = new Date((m?.freshAt ?? now) + options.graceMs).toISOString();
    result.manifests.push({
      repository: repo.name,
      digest,
      size: m?.size ?? 0,
      reason: atOnce
        ? remove.reason(digest, "its last tag would be removed")
        : `${later.reason(digest, "its last tag would be removed")}; younger than gc.graceperiod, so freed by the first collection after ${when}`,
    });
  }
  await b.breathe();
  return result;
}

async function retainRepository(
  b: Batcher,
  repo: { id: number; name: string },
  policy: CompiledPolicy,
  options: RetentionOptions,
): Promise<RepositoryRetention> {
  const result: RepositoryRetention = {
    repository: repo.name,
    policy: describePolicy(policy),
    tags: [],
    manifests: [],
  };
  const touched = new Set<string>();
  for (;;) {
    // Decide again inside each transaction: what was pushed, moved, deleted or pulled meanwhile counts.
    const step = await b.write(async (lease) => {
      let batch: TagDecision[] = [];
      let more = false;
      const gone = await b.gc.removeTags(lease, repo.id, (tags) => {
        const toRemove = evaluatePolicy(policy, tags, Date.now()).filter((d) => d.remove);
        batch = toRemove.slice(0, options.batchSize);
        more = toRemove.length > batch.length;
        return batch.map((d) => d.info);
      });
      const removed = batch.filter((d) => gone.includes(d.info));
      return { removed, more: more && removed.length > 0 };
    });
    for (const d of step.removed) {
      result.tags.push({ tag: d.tag, digest: d.digest, reason: d.reason });
      touched.add(d.digest);
    }
    if (!step.more) break;
  }
  if (result.tags.length > 0) {
    options.log?.info(
      { repository: repo.name, policy: result.policy, tags: result.tags.map((t) => t.tag) },
      "retention: removed tags",
    );
    result.manifests = await removeUnkeptManifests(
      b,
      repo,
      Date.now() - options.graceMs,
      options.batchSize,
      false,
      {
        digests: touched,
        reason: "its last tag was removed by retention",
      },
    );
  }
  return result;
}
