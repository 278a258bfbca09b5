import type { DistributionMetadata, JournalEntry } from "../metadata/distribution-queries.js";
import { type DistributionTree, forEachLimit } from "../storage/distribution-layout.js";

/**
 * Keeps registry:2's link files in step with Berth's rows (issue 12), so that Distribution started on the
 * same directory serves every image Berth holds and none that Berth deleted.
 *
 * Crash ordering: the database journals every changed tag, revision, blob link and repository in the same
 * transaction as the change (triggers, see src/metadata/distribution-schema.ts). After the transaction
 * commits, `flush` reads the journal, makes each named link file say what the rows say now (write it, or
 * remove it), and only then deletes those journal rows. A crash between commit and flush leaves journal
 * rows, which the next start applies before answering. Applying is idempotent and reads the current state
 * rather than replaying the change, so order does not matter; after each write the state is read again and
 * the write repeated if another process changed it meanwhile, so two processes flushing at once still leave
 * the file saying what the database says last.
 */

export interface SyncLogger {
  warn(obj: object, msg?: string): void;
}

const PAGE = 1000;
const CONCURRENCY = 8;
const MAX_ROUNDS = 5;

export class DistributionSync {
  private current: Promise<void> | null = null;
  private queued: Promise<void> | null = null;

  constructor(
    readonly queries: DistributionMetadata,
    readonly layout: DistributionTree,
    readonly log?: SyncLogger,
  ) {}

  /**
   * Applies the journal. Resolves once everything committed before the call is on disk: a drain that
   * started earlier may have missed it, so a new one is queued after it (callers arriving meanwhile share it).
   */
  flush(): Promise<void> {
    if (this.queued) return this.queued;
    const before = this.current ?? Promise.resolve();
    const next: Promise<void> = before
      .catch(() => {})
      .then(() => {
        this.queued = null;
        this.current = next;
        return this.drain();
      })
      .finally(() => {
        if (this.current === next) this.current = null;
      });
    this.queued = next;
    return next;
  }

  /** Like flush, but never throws: a failure is logged and the rows stay for the next flush. */
  async flushQuietly(): Promise<void> {
    try {
      await this.flush();
    } catch (err) {
      this.log?.warn({ err }, "registry:2 link files: could not bring them in step (will retry)");
    }
  }

  private async drain(): Promise<void> {
    for (;;) {
      const entries = await this.queries.journal(PAGE);
      if (entries.length === 0) return;
      const unique = new Map<string, JournalEntry>();
      for (const e of entries) unique.set(`${e.kind}\n${e.repository}\n${e.key}`, e);
      const all = [...unique.values()];
      // Whole repositories first, so that a repository deleted and made again gets its new links after.
      await forEachLimit(
        all.filter((e) => e.kind === "repository"),
        CONCURRENCY,
        (e) => this.applyRepository(e.repository),
      );
      await forEachLimit(
        all.filter((e) => e.kind !== "repository"),
        CONCURRENCY,
        (e) => this.apply(e),
      );
      // registry:2 lists a repository in its catalog while it has a _manifests folder; Berth, while it has a
      // manifest. A repository whose last manifest went loses the folder, so that both list the same.
      const emptied = new Set(all.filter((e) => e.kind === "revision").map((e) => e.repository));
      await forEachLimit([...emptied], CONCURRENCY, (repo) => this.applyManifestsFolder(repo));
      await this.queries.clearJournal(entries.map((e) => e.id));
      if (entries.length < PAGE) return;
    }
  }

  /** Makes one link file say what the rows say, again until the rows stay put. */
  private async apply(e: JournalEntry): Promise<void> {
    const state = () => this.state(e);
    let want = await state();
    for (let round = 0; round < MAX_ROUNDS; round++) {
      await this.write(e, want);
      const now = await state();
      if (now === want) return;
      want = now;
    }
  }

  private async state(e: JournalEntry): Promise<string | null> {
    switch (e.kind) {
      case "tag":
        return this.queries.tagTarget(e.repository, e.key);
      case "revision":
        return (await this.queries.hasRevision(e.repository, e.key)) ? e.key : null;
      case "layer":
        // Berth links a manifest's own digest as a blob of its repository; registry:2 keeps manifests only
        // as revisions, so that link is not written.
        return (await this.queries.hasLayer(e.repository, e.key)) &&
          !(await this.queries.hasRevision(e.repository, e.key))
          ? e.key
          : null;
      default:
        return null;
    }
  }

  private async write(e: JournalEntry, value: string | null): Promise<void> {
    const l = this.layout;
    if (e.kind === "tag")
      return value ? l.writeTag(e.repository, e.key, value) : l.removeTag(e.repository, e.key);
    if (e.kind === "revision")
      return value ? l.writeRevision(e.repository, e.key) : l.removeRevision(e.repository, e.key);
    if (e.kind === "layer")
      return value ? l.writeLayer(e.repository, e.key) : l.removeLayer(e.repository, e.key);
  }

  private async applyRepository(name: string): Promise<void> {
    if (await this.queries.hasRepository(name)) return;
    await this.layout.removeRepository(name);
    // Made again by another process while its folders were going: write what it holds now.
    const again = await this.queries.hasRepository(name);
    if (again) await this.exportAll(name);
  }

  private async applyManifestsFolder(name: string): Promise<void> {
    if (await this.queries.hasAnyManifest(name)) return;
    await this.layout.removeManifests(name);
    if (await this.queries.hasAnyManifest(name)) await this.exportAll(name);
  }

  /**
   * Makes every link file of the repositories Berth holds say what the rows say: writes what is missing or
   * different, removes tags, revisions and blob links the rows no longer have (switching link files on for
   * a directory that already holds Berth's rows, or on again after they were off). Folders of repositories
   * Berth does not hold are left alone. With `only`, one repository.
   */
  async exportAll(only?: string, onProgress?: (repositories: number) => void): Promise<number> {
    let count = 0;
    for (let after = 0; ; ) {
      const page = await this.queries.repositoryPage(after, 200);
      if (page.length === 0) return count;
      after = page[page.length - 1]?.id ?? after;
      for (const repo of page) {
        if (only !== undefined && repo.name !== only) continue;
        const links = await this.queries.repositoryLinks(repo.id);
        const revisions = new Set(links.revisions);
        const layers = new Set(links.layers.filter((d) => !revisions.has(d)));
        const tags = new Map(links.tags.map((t) => [t.name, t.digest]));
        const disk = await this.layout.readRepository(repo.name);
        const named = (l: { named: string | null }) =>
          l.named !== null && /^[a-z0-9]+:[a-f0-9]{32,128}$/.test(l.named);
        await forEachLimit(
          disk.layers.filter((l) => named(l) && !layers.has(l.named as string)),
          CONCURRENCY,
          (l) => this.layout.removeLayer(repo.name, l.named as string),
        );
        await forEachLimit(
          disk.revisions.filter((l) => named(l) && !revisions.has(l.named as string)),
          CONCURRENCY,
          (l) => this.layout.removeRevision(repo.name, l.named as string),
        );
        await forEachLimit(
          disk.tags.filter((t) => !tags.has(t.tag)),
          CONCURRENCY,
          (t) => this.layout.removeTag(repo.name, t.tag),
        );
        await forEachLimit([...layers], CONCURRENCY, (d) => this.layout.writeLayer(repo.name, d));
        await forEachLimit([...revisions], CONCURRENCY, (d) => this.layout.writeRevision(repo.name, d));
        await forEachLimit([...tags], CONCURRENCY, ([t, d]) => this.layout.writeTag(repo.name, t, d));
        count++;
      }
      onProgress?.(count);
    }
  }
}
