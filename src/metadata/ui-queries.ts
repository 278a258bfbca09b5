import { type Kysely, sql } from "kysely";
import type { Database } from "./schema.js";

/**
 * Read-only queries behind Berth's JSON API (/api/v1) for the web UI: listings with counts, sizes and
 * dates that the distribution API cannot give cheaply. Portable SQL (SQLite and PostgreSQL).
 */

type Db = Kysely<Database>;

const CHUNK = 500;

function num(value: unknown): number {
  return value === null || value === undefined ? 0 : Number(value);
}

function chunks<T>(items: T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += CHUNK) out.push(items.slice(i, i + CHUNK));
  return out;
}

/** `%`, `_` and the escape character itself, escaped for LIKE ... ESCAPE '\'. */
export function likePattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

export interface RepositoryRef {
  id: number;
  name: string;
}

/** Repositories whose name contains `search` (case-insensitively), in byte order of name. */
export async function repositoryNames(db: Db, search?: string): Promise<RepositoryRef[]> {
  let query = db.selectFrom("repositories").select(["id", "name"]).orderBy("name");
  const q = search?.trim().toLowerCase();
  if (q) query = query.where(sql<boolean>`lower(name) like ${likePattern(q)} escape '\\'`);
  const rows = await query.execute();
  return rows.map((r) => ({ id: Number(r.id), name: r.name }));
}

export async function repositoryByName(db: Db, name: string): Promise<RepositoryRef | null> {
  const row = await db
    .selectFrom("repositories")
    .select(["id", "name"])
    .where("name", "=", name)
    .executeTakeFirst();
  return row ? { id: Number(row.id), name: row.name } : null;
}

export interface RepositoryStats {
  tagCount: number;
  manifestCount: number;
  /** Distinct linked blobs (manifests included), in bytes. */
  size: number;
  /** Latest manifest push or tag move; null for a repository with neither. */
  lastPush: number | null;
}

/**
 * Counts, size and last push of repositories: of the given ids, or of every repository when `ids` is
 * undefined (four grouped queries however many repositories there are).
 */
export async function repositoryStats(db: Db, ids?: number[]): Promise<Map<number, RepositoryStats>> {
  const out = new Map<number, RepositoryStats>();
  const stat = (id: number): RepositoryStats => {
    let s = out.get(id);
    if (!s) {
      s = { tagCount: 0, manifestCount: 0, size: 0, lastPush: null };
      out.set(id, s);
    }
    return s;
  };
  const later = (a: number | null, b: unknown): number | null => {
    if (b === null || b === undefined) return a;
    const v = Number(b);
    return a === null || v > a ? v : a;
  };
  if (ids && ids.length === 0) return out;
  for (const part of ids ? chunks(ids) : [undefined]) {
    let tags = db
      .selectFrom("tags")
      .select("repository_id")
      .select((eb) => [eb.fn.countAll<number>().as("n"), eb.fn.max("updated_at").as("latest")])
      .groupBy("repository_id");
    let manifests = db
      .selectFrom("manifests")
      .select("repository_id")
      .select((eb) => [eb.fn.countAll<number>().as("n"), eb.fn.max("created_at").as("latest")])
      .groupBy("repository_id");
    let sizes = db
      .selectFrom("repository_blobs as rb")
      .innerJoin("blobs as b", "b.digest", "rb.digest")
      .select("rb.repository_id")
      .select((eb) => eb.fn.sum<number>("b.size").as("bytes"))
      .groupBy("rb.repository_id");
    if (part) {
      tags = tags.where("repository_id", "in", part);
      manifests = manifests.where("repository_id", "in", part);
      sizes = sizes.where("rb.repository_id", "in", part);
      for (const id of part) stat(id);
    }
    const [t, m, s] = await Promise.all([tags.execute(), manifests.execute(), sizes.execute()]);
    for (const r of t) {
      const st = stat(Number(r.repository_id));
      st.tagCount = num(r.n);
      st.lastPush = later(st.lastPush, r.latest);
    }
    for (const r of m) {
      const st = stat(Number(r.repository_id));
      st.manifestCount = num(r.n);
      st.lastPush = later(st.lastPush, r.latest);
    }
    for (const r of s) stat(Number(r.repository_id)).size = num(r.bytes);
  }
  return out;
}

export interface TagRow {
  name: string;
  digest: string;
  created_at: number;
  updated_at: number;
  media_type: string | null;
  manifest_size: number | null;
  artifact_type: string | null;
  config_digest: string | null;
}

export type TagSort = "name" | "date";

/** One page of a repository's tags with their manifests, filtered by a substring of the tag. */
export async function tagPage(
  db: Db,
  repositoryId: number,
  options: { search?: string; sort: TagSort; descending: boolean; offset: number; limit: number },
): Promise<{ total: number; rows: TagRow[] }> {
  const search = options.search?.trim().toLowerCase();
  let base = db.selectFrom("tags as t").where("t.repository_id", "=", repositoryId);
  if (search) base = base.where(sql<boolean>`lower(t.name) like ${likePattern(search)} escape '\\'`);
  const count = await base.select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirst();
  const direction = options.descending ? "desc" : "asc";
  let query = base
    .leftJoin("manifests as m", (join) =>
      join.onRef("m.repository_id", "=", "t.repository_id").onRef("m.digest", "=", "t.digest"),
    )
    .select([
      "t.name",
      "t.digest",
      "t.created_at",
      "t.updated_at",
      "m.media_type",
      "m.size as manifest_size",
      "m.artifact_type",
      "m.config_digest",
    ]);
  query =
    options.sort === "date"
      ? query.orderBy("t.updated_at", direction).orderBy("t.name", "asc")
      : query.orderBy("t.name", direction);
  const rows = await query.limit(options.limit).offset(options.offset).execute();
  return {
    total: num(count?.n),
    rows: rows.map((r) => ({
      ...r,
      created_at: Number(r.created_at),
      updated_at: Number(r.updated_at),
      manifest_size: r.manifest_size === null ? null : Number(r.manifest_size),
    })),
  };
}

export interface ManifestInfo {
  digest: string;
  media_type: string;
  size: number;
  content: Buffer;
  artifact_type: string | null;
  subject: string | null;
  annotations: string | null;
  config_digest: string | null;
  created_at: number;
  last_pulled_at: number | null;
}

/** Stored manifests of a repository by digest (those that exist). */
export async function manifestsByDigest(
  db: Db,
  repositoryId: number,
  digests: string[],
): Promise<Map<string, ManifestInfo>> {
  const out = new Map<string, ManifestInfo>();
  for (const part of chunks([...new Set(digests)])) {
    const rows = await db
      .selectFrom("manifests")
      .select([
        "digest",
        "media_type",
        "size",
        "content",
        "artifact_type",
        "subject",
        "annotations",
        "config_digest",
        "created_at",
        "last_pulled_at",
      ])
      .where("repository_id", "=", repositoryId)
      .where("digest", "in", part)
      .execute();
    for (const r of rows) {
      out.set(r.digest, {
        ...r,
        content: Buffer.isBuffer(r.content) ? r.content : Buffer.from(r.content),
        size: Number(r.size),
        created_at: Number(r.created_at),
        last_pulled_at: r.last_pulled_at === null ? null : Number(r.last_pulled_at),
      });
    }
  }
  return out;
}

/** Children of indexes, by parent digest. */
export async function childrenOf(
  db: Db,
  repositoryId: number,
  parents: string[],
): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const part of chunks([...new Set(parents)])) {
    const rows = await db
      .selectFrom("manifest_children")
      .select(["parent_digest", "child_digest"])
      .where("repository_id", "=", repositoryId)
      .where("parent_digest", "in", part)
      .execute();
    for (const r of rows) {
      const list = out.get(r.parent_digest) ?? [];
      list.push(r.child_digest);
      out.set(r.parent_digest, list);
    }
  }
  return out;
}

/** Indexes in the repository that list `digest`. */
export async function parentsOf(db: Db, repositoryId: number, digest: string): Promise<string[]> {
  const rows = await db
    .selectFrom("manifest_children")
    .select("parent_digest")
    .where("repository_id", "=", repositoryId)
    .where("child_digest", "=", digest)
    .orderBy("parent_digest")
    .execute();
  return rows.map((r) => r.parent_digest);
}

/**
 * Total size of manifests: each manifest plus its config and layers, and for an index its children
 * with theirs, every distinct blob counted once (shared base layers between platforms count once).
 */
export async function manifestTotalSizes(
  db: Db,
  repositoryId: number,
  digests: string[],
): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  if (digests.length === 0) return out;
  const children = await childrenOf(db, repositoryId, digests);
  const all = [...new Set([...digests, ...[...children.values()].flat()])];
  const sizes = new Map<string, number>();
  const blobsOf = new Map<string, string[]>();
  for (const part of chunks(all)) {
    const [manifests, blobs] = await Promise.all([
      db
        .selectFrom("manifests")
        .select(["digest", "size"])
        .where("repository_id", "=", repositoryId)
        .where("digest", "in", part)
        .execute(),
      db
        .selectFrom("manifest_blobs as mb")
        .innerJoin("blobs as b", "b.digest", "mb.blob_digest")
        .select(["mb.manifest_digest", "mb.blob_digest", "b.size"])
        .where("mb.repository_id", "=", repositoryId)
        .where("mb.manifest_digest", "in", part)
        .execute(),
    ]);
    for (const m of manifests) sizes.set(m.digest, Number(m.size));
    for (const b of blobs) {
      sizes.set(b.blob_digest, Number(b.size));
      const list = blobsOf.get(b.manifest_digest) ?? [];
      list.push(b.blob_digest);
      blobsOf.set(b.manifest_digest, list);
    }
  }
  for (const digest of digests) {
    const seen = new Set<string>();
    const add = (m: string) => {
      if (seen.has(m)) return;
      seen.add(m);
      for (const b of blobsOf.get(m) ?? []) seen.add(b);
    };
    add(digest);
    for (const child of children.get(digest) ?? []) add(child);
    let total = 0;
    for (const d of seen) total += sizes.get(d) ?? 0;
    out.set(digest, total);
  }
  return out;
}

/** Sizes of blobs (that exist) by digest. */
export async function blobSizes(db: Db, digests: string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const part of chunks([...new Set(digests)])) {
    const rows = await db
      .selectFrom("blobs")
      .select(["digest", "size"])
      .where("digest", "in", part)
      .execute();
    for (const r of rows) out.set(r.digest, Number(r.size));
  }
  return out;
}

/** Tags on a digest, by name. */
export async function tagsOf(db: Db, repositoryId: number, digest: string): Promise<string[]> {
  const rows = await db
    .selectFrom("tags")
    .select("name")
    .where("repository_id", "=", repositoryId)
    .where("digest", "=", digest)
    .orderBy("name")
    .execute();
  return rows.map((r) => r.name);
}

export interface ReferrerInfo {
  digest: string;
  media_type: string;
  size: number;
  artifact_type: string | null;
  annotations: string | null;
  created_at: number;
}

/** Manifests whose subject is `digest`, oldest first. */
export async function referrersOf(db: Db, repositoryId: number, digest: string): Promise<ReferrerInfo[]> {
  const rows = await db
    .selectFrom("manifests")
    .select(["digest", "media_type", "size", "artifact_type", "annotations", "created_at"])
    .where("repository_id", "=", repositoryId)
    .where("subject", "=", digest)
    .orderBy("created_at")
    .orderBy("digest")
    .execute();
  return rows.map((r) => ({ ...r, size: Number(r.size), created_at: Number(r.created_at) }));
}

/** The queries above, as the store's `ui` facet binds them (src/metadata/store.ts). */
export const uiQueries = {
  repositoryNames,
  repositoryByName,
  repositoryStats,
  tagPage,
  manifestsByDigest,
  childrenOf,
  parentsOf,
  manifestTotalSizes,
  blobSizes,
  tagsOf,
  referrersOf,
};
