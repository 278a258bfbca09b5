import { type Kysely, sql } from "kysely";
import type { Database } from "./schema.js";
import { readSetting, storeSetting } from "./settings-queries.js";

/**
 * Storage usage, computed from the metadata database alone (no filesystem walk).
 *
 * A blob is stored once however many repositories link it (manifests are blobs too). So:
 *  - total:       every stored blob, counted once;
 *  - repository:  every blob the repository links, counted once within the repository;
 *  - unique:      the part of a repository that no other repository links (what deleting the
 *                 repository would free at the next garbage collection);
 *  - shared:      the part of a repository that at least one other repository also links;
 *  - unlinked:    blobs no repository links any more (what garbage collection would remove now).
 *
 * Used by the web UI's storage page, `berth usage` and the metrics. SQL only: works on SQLite and PostgreSQL
 * (PostgreSQL returns sums and counts of bigints as strings, hence the Number() everywhere).
 */

export interface UsageTotals {
  bytes: number;
  blobs: number;
}

export interface RepositoryUsage {
  repositoryId: number;
  name: string;
  /** Distinct blobs the repository links, in bytes. */
  bytes: number;
  blobs: number;
  /** Bytes linked by this repository only. */
  unique: number;
  /** Bytes this repository links that others link too (bytes - unique). */
  shared: number;
}

export interface UsageSummary {
  total: UsageTotals;
  /** Blobs linked by two or more repositories, each counted once. */
  shared: UsageTotals;
  /** Blobs linked by no repository (garbage, until the next collection). */
  unlinked: UsageTotals;
}

function num(value: unknown): number {
  if (value === null || value === undefined) return 0;
  return Number(value);
}

/** Every stored blob, counted once. */
export async function totalUsage(db: Kysely<Database>): Promise<UsageTotals> {
  const row = await db
    .selectFrom("blobs")
    .select((eb) => [
      eb.fn.coalesce(eb.fn.sum<number>("size"), sql<number>`0`).as("bytes"),
      eb.fn.countAll<number>().as("blobs"),
    ])
    .executeTakeFirst();
  return { bytes: num(row?.bytes), blobs: num(row?.blobs) };
}

/** Blobs that two or more repositories link, each counted once. */
export async function sharedUsage(db: Kysely<Database>): Promise<UsageTotals> {
  const row = await db
    .with("links", (qb) =>
      qb
        .selectFrom("repository_blobs")
        .select("digest")
        .groupBy("digest")
        .having((eb) => eb.fn.countAll(), ">", 1),
    )
    .selectFrom("links as l")
    .innerJoin("blobs as b", "b.digest", "l.digest")
    .select((eb) => [
      eb.fn.coalesce(eb.fn.sum<number>("b.size"), sql<number>`0`).as("bytes"),
      eb.fn.countAll<number>().as("blobs"),
    ])
    .executeTakeFirst();
  return { bytes: num(row?.bytes), blobs: num(row?.blobs) };
}

/** Blobs that no repository links: garbage until the next collection. */
export async function unlinkedUsage(db: Kysely<Database>): Promise<UsageTotals> {
  const row = await db
    .selectFrom("blobs as b")
    .where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom("repository_blobs as rb").select("rb.digest").whereRef("rb.digest", "=", "b.digest"),
        ),
      ),
    )
    .select((eb) => [
      eb.fn.coalesce(eb.fn.sum<number>("b.size"), sql<number>`0`).as("bytes"),
      eb.fn.countAll<number>().as("blobs"),
    ])
    .executeTakeFirst();
  return { bytes: num(row?.bytes), blobs: num(row?.blobs) };
}

export async function usageSummary(db: Kysely<Database>): Promise<UsageSummary> {
  const [total, shared, unlinked] = await Promise.all([totalUsage(db), sharedUsage(db), unlinkedUsage(db)]);
  return { total, shared, unlinked };
}

const CHUNK = 500;

/**
 * Size, unique and shared bytes of repositories: all of them, or only those with the given ids.
 * Repositories that link nothing are included with zeros. Ordered by name.
 */
export async function repositoryUsage(
  db: Kysely<Database>,
  options: { repositoryIds?: number[] } = {},
): Promise<RepositoryUsage[]> {
  const ids = options.repositoryIds;
  if (ids && ids.length > CHUNK) {
    const parts: RepositoryUsage[] = [];
    for (let i = 0; i < ids.length; i += CHUNK) {
      parts.push(...(await repositoryUsage(db, { repositoryIds: ids.slice(i, i + CHUNK) })));
    }
    return parts.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
  if (ids && ids.length === 0) return [];

  let repos = db.selectFrom("repositories").select(["id", "name"]).orderBy("name");
  if (ids) repos = repos.where("id", "in", ids);
  const names = await repos.execute();

  // A blob is unique to a repository when no other repository links it: one probe of the digest index
  // per link, which stops at the first other repository (counting every blob's links instead made each
  // repository cost as much as all the repositories that share its base layers).
  let query = db
    .selectFrom("repository_blobs as rb")
    .innerJoin("blobs as b", "b.digest", "rb.digest")
    .select("rb.repository_id")
    .select((eb) => [
      eb.fn.sum<number>("b.size").as("bytes"),
      eb.fn.countAll<number>().as("blobs"),
      sql<number>`sum(case when not exists (select 1 from repository_blobs as o where o.digest = rb.digest and o.repository_id <> rb.repository_id) then b.size else 0 end)`.as(
        "unique_bytes",
      ),
    ])
    .groupBy("rb.repository_id");
  if (ids) query = query.where("rb.repository_id", "in", ids);
  const rows = await query.execute();

  const byId = new Map(rows.map((r) => [Number(r.repository_id), r]));
  return names.map(({ id, name }) => {
    const r = byId.get(Number(id));
    const bytes = num(r?.bytes);
    const unique = num(r?.unique_bytes);
    return { repositoryId: Number(id), name, bytes, blobs: num(r?.blobs), unique, shared: bytes - unique };
  });
}

/** Usage of one repository by name; null when it does not exist. */
export async function usageOfRepository(db: Kysely<Database>, name: string): Promise<RepositoryUsage | null> {
  const repo = await db.selectFrom("repositories").select("id").where("name", "=", name).executeTakeFirst();
  if (!repo) return null;
  const [usage] = await repositoryUsage(db, { repositoryIds: [Number(repo.id)] });
  return usage ?? null;
}

/** Upload sessions in progress: how many, and the bytes they hold so far. */
export async function uploadUsage(db: Kysely<Database>): Promise<{ count: number; bytes: number }> {
  const row = await db
    .selectFrom("uploads")
    .select((eb) => [eb.fn.countAll<number>().as("count"), eb.fn.sum<number>("size").as("bytes")])
    .executeTakeFirst();
  return { count: num(row?.count), bytes: num(row?.bytes) };
}

/**
 * Registry-wide usage as of `computedAt`: the summary and every repository's figures. Computed by a
 * background job (src/registry/jobs.ts) and kept in the settings table, so that no request computes
 * it (on a large registry that takes seconds) and every process shares one copy.
 */
export interface UsageSnapshot {
  computedAt: number;
  summary: UsageSummary;
  repositories: RepositoryUsage[];
}

const SNAPSHOT_SETTING = "usage:snapshot";
/** Repositories whose figures one query computes, in computeUsageSnapshot. */
const SNAPSHOT_CHUNK = 50;

/**
 * Computes the snapshot in bounded steps: the summary, then the repositories a chunk at a time, with
 * `pauseMs` between chunks (on SQLite every query holds the process's event loop while it runs).
 * Resolves to null when `signal` aborts it midway.
 */
export async function computeUsageSnapshot(
  db: Kysely<Database>,
  options: { pauseMs?: number; signal?: AbortSignal } = {},
): Promise<UsageSnapshot | null> {
  const computedAt = Date.now();
  const summary = await usageSummary(db);
  const ids = (await db.selectFrom("repositories").select("id").orderBy("id").execute()).map((r) =>
    Number(r.id),
  );
  const repositories: RepositoryUsage[] = [];
  for (let i = 0; i < ids.length; i += SNAPSHOT_CHUNK) {
    if (options.signal?.aborted) return null;
    repositories.push(...(await repositoryUsage(db, { repositoryIds: ids.slice(i, i + SNAPSHOT_CHUNK) })));
    if (options.pauseMs) await new Promise((r) => setTimeout(r, options.pauseMs));
  }
  repositories.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { computedAt, summary, repositories };
}

export async function saveUsageSnapshot(db: Kysely<Database>, snapshot: UsageSnapshot): Promise<void> {
  const compact = {
    computedAt: snapshot.computedAt,
    summary: snapshot.summary,
    // [id, name, bytes, blobs, unique]: a fifth of the size of the objects for 10,000 repositories.
    repositories: snapshot.repositories.map((r) => [r.repositoryId, r.name, r.bytes, r.blobs, r.unique]),
  };
  await storeSetting(db, SNAPSHOT_SETTING, JSON.stringify(compact));
}

/** The last snapshot saved, or null before the first one. */
export async function readUsageSnapshot(db: Kysely<Database>): Promise<UsageSnapshot | null> {
  const text = await readSetting(db, SNAPSHOT_SETTING);
  if (!text) return null;
  const raw = JSON.parse(text) as {
    computedAt: number;
    summary: UsageSummary;
    repositories: [number, string, number, number, number][];
  };
  return {
    computedAt: raw.computedAt,
    summary: raw.summary,
    repositories: raw.repositories.map(([repositoryId, name, bytes, blobs, unique]) => ({
      repositoryId,
      name,
      bytes,
      blobs,
      unique,
      shared: bytes - unique,
    })),
  };
}

/** The queries above, as the store's `usage` facet binds them (src/metadata/store.ts). */
export const usageQueries = {
  computeUsageSnapshot,
  saveUsageSnapshot,
  readUsageSnapshot,
  uploadUsage,
  totalUsage,
  sharedUsage,
  unlinkedUsage,
  usageSummary,
  repositoryUsage,
  usageOfRepository,
};
