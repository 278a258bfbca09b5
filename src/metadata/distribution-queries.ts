import type { Kysely } from "kysely";
import { type DistributionDatabase, distributionDb } from "./distribution-schema.js";
import { manifestRow } from "./manifest-rows.js";
import type { Dialect } from "./migrations.js";
import type { Database } from "./schema.js";
import type { NewManifest } from "./store.js";

/**
 * Queries for a data directory shared with registry:2 (issue 12): the adoption state, the bulk import
 * of adopted rows, and the journal of link files to bring in step. See distribution-schema.ts.
 */

export interface DistributionState {
  adoption: "running" | "done" | null;
  links: "off" | "exporting" | "on";
  adoptedAt: number | null;
  report: string | null;
}

/** A manifest as a push records it (NewManifest), with the time registry:2 wrote its link. */
export interface ImportedManifest extends NewManifest {
  createdAt: number;
}

export interface ImportedRepository {
  name: string;
  manifests: ImportedManifest[];
  tags: { name: string; digest: string; at: number }[];
  /** Blob links (`_layers`), including the manifests' own digests. */
  links: { digest: string; at: number }[];
}

export interface ImportBatch {
  repositories: ImportedRepository[];
  blobs: { digest: string; size: number; createdAt: number }[];
}

export interface JournalEntry {
  id: number;
  repository: string;
  kind: "tag" | "revision" | "layer" | "repository";
  key: string;
}

/** Rows per INSERT statement: well under SQLite's limit of bound parameters. */
const ROWS = 400;

/**
 * PostgreSQL binds at most 65,535 parameters a statement: rows per INSERT are as many as this many
 * parameters allow (5,000 tags or links, 2,700 manifests), so that a batch of 20,000 rows is a handful
 * of statements rather than fifty round trips.
 */
const PG_PARAMETERS = 30_000;

/**
 * What the domain (src/registry/adopt.ts, distribution-sync.ts) asks of the metadata about a data
 * directory shared with registry:2, in domain terms: DistributionQueries implements it on SQLite and
 * PostgreSQL.
 */
export interface DistributionMetadata {
  importBatch(batch: ImportBatch, now?: number): Promise<void>;
  journal(limit: number): Promise<JournalEntry[]>;
  clearJournal(ids: number[]): Promise<void>;
  tagTarget(repository: string, tag: string): Promise<string | null>;
  hasRevision(repository: string, digest: string): Promise<boolean>;
  hasLayer(repository: string, digest: string): Promise<boolean>;
  hasAnyManifest(repository: string): Promise<boolean>;
  hasRepository(repository: string): Promise<boolean>;
  repositoryPage(afterId: number, limit: number): Promise<{ id: number; name: string }[]>;
  repositoryLinks(
    repositoryId: number,
  ): Promise<{ layers: string[]; revisions: string[]; tags: { name: string; digest: string }[] }>;
}

export class DistributionQueries implements DistributionMetadata {
  private readonly db: Kysely<DistributionDatabase>;

  /** A faster writer for importBatch (SQLite: distribution-bulk.ts), while an adoption runs. */
  bulk: { importBatch(batch: ImportBatch, now: number): void; close(): void } | null = null;

  constructor(
    db: Kysely<Database>,
    private readonly dialect: Dialect = "sqlite",
  ) {
    this.db = distributionDb(db);
  }

  /** Rows per multi-row INSERT of `columns` columns. */
  private rowsPerInsert(columns: number): number {
    return this.dialect === "postgres" ? Math.floor(PG_PARAMETERS / columns) : ROWS;
  }

  async state(): Promise<DistributionState> {
    const row = await this.db
      .selectFrom("distribution_state")
      .selectAll()
      .where("id", "=", 1)
      .executeTakeFirst();
    return {
      adoption: (row?.adoption as DistributionState["adoption"]) ?? null,
      links: (row?.links as DistributionState["links"]) ?? "off",
      adoptedAt: row?.adopted_at === null || row?.adopted_at === undefined ? null : Number(row.adopted_at),
      report: row?.report ?? null,
    };
  }

  async setState(patch: Partial<DistributionState>, now = Date.now()): Promise<void> {
    const values = {
      ...(patch.adoption !== undefined ? { adoption: patch.adoption } : {}),
      ...(patch.links !== undefined ? { links: patch.links } : {}),
      ...(patch.adoptedAt !== undefined ? { adopted_at: patch.adoptedAt } : {}),
      ...(patch.report !== undefined ? { report: patch.report } : {}),
      updated_at: now,
    };
    await this.db
      .insertInto("distribution_state")
      .values({
        id: 1,
        adoption: null,
        links: "off",
        adopted_at: null,
        report: null,
        ...values,
      })
      .onConflict((oc) => oc.column("id").doUpdateSet(values))
      .execute();
  }

  /** True when the database holds no repository yet. */
  async isEmpty(): Promise<boolean> {
    return (await this.db.selectFrom("repositories").select("id").limit(1).executeTakeFirst()) === undefined;
  }

  /**
   * Writes one batch of adopted rows in one transaction. Rows that already exist are left as they are
   * (ON CONFLICT DO NOTHING): running an interrupted import again adds what is missing and changes nothing else.
   */
  async importBatch(batch: ImportBatch, now = Date.now()): Promise<void> {
    if (this.bulk) return this.bulk.importBatch(batch, now);
    await this.db.transaction().execute(async (trx) => {
      const names = batch.repositories.map((r) => r.name);
      for (let i = 0; i < names.length; i += ROWS) {
        await trx
          .insertInto("repositories")
          .values(names.slice(i, i + ROWS).map((name) => ({ name, created_at: now, updated_at: now })))
          .onConflict((oc) => oc.column("name").doNothing())
          .execute();
      }
      const ids = new Map<string, number>();
      for (let i = 0; i < names.length; i += ROWS) {
        const rows = await trx
          .selectFrom("repositories")
          .select(["id", "name"])
          .where("name", "in", names.slice(i, i + ROWS))
          .execute();
        for (const row of rows) ids.set(row.name, row.id);
      }
      const insert = async <T extends keyof Database>(table: T, rows: Record<string, unknown>[]) => {
        const step = this.rowsPerInsert(Object.keys(rows[0] ?? {}).length);
        for (let i = 0; i < rows.length; i += step) {
          await trx
            .insertInto(table)
            .values(rows.slice(i, i + step) as never)
            .onConflict((oc) => oc.doNothing())
            .execute();
        }
      };
      await insert(
        "blobs",
        batch.blobs.map((b) => ({ digest: b.digest, size: b.size, created_at: b.createdAt })),
      );
      const links: Record<string, unknown>[] = [];
      const manifests: Record<string, unknown>[] = [];
      const manifestBlobs: Record<string, unknown>[] = [];
      const children: Record<string, unknown>[] = [];
      const tags: Record<string, unknown>[] = [];
      for (const repo of batch.repositories) {
        const id = ids.get(repo.name);
        if (id === undefined) throw new Error(`repository ${repo.name} was not created`);
        for (const l of repo.links) links.push({ repository_id: id, digest: l.digest, created_at: l.at });
        for (const m of repo.manifests) {
          manifests.push(manifestRow(id, m, m.createdAt) as Record<string, unknown>);
          for (const b of new Set(m.blobs))
            manifestBlobs.push({ repository_id: id, manifest_digest: m.digest, blob_digest: b });
          for (const c of new Set(m.children))
            children.push({ repository_id: id, parent_digest: m.digest, child_digest: c });
        }
        for (const t of repo.tags)
          tags.push({
            repository_id: id,
            name: t.name,
            digest: t.digest,
            created_at: t.at,
            updated_at: t.at,
          });
      }
      await insert("repository_blobs", links);
      await insert("manifests", manifests);
      await insert("manifest_blobs", manifestBlobs);
      await insert("manifest_children", children);
      await insert("tags", tags);
    });
  }

  // ---------- the journal ----------

  async journal(limit: number): Promise<JournalEntry[]> {
    const rows = await this.db
      .selectFrom("distribution_journal")
      .selectAll()
      .orderBy("id")
      .limit(limit)
      .execute();
    return rows.map((r) => ({ ...r, id: Number(r.id), kind: r.kind as JournalEntry["kind"] }));
  }

  async hasJournal(): Promise<boolean> {
    return (
      (await this.db.selectFrom("distribution_journal").select("id").limit(1).executeTakeFirst()) !==
      undefined
    );
  }

  async clearJournal(ids: number[]): Promise<void> {
    for (let i = 0; i < ids.length; i += ROWS) {
      await this.db
        .deleteFrom("distribution_journal")
        .where("id", "in", ids.slice(i, i + ROWS))
        .execute();
    }
  }

  // ---------- what the rows say now ----------

  async tagTarget(repository: string, tag: string): Promise<string | null> {
    const row = await this.db
      .selectFrom("tags as t")
      .innerJoin("repositories as r", "r.id", "t.repository_id")
      .select("t.digest")
      .where("r.name", "=", repository)
      .where("t.name", "=", tag)
      .executeTakeFirst();
    return row?.digest ?? null;
  }

  async hasRevision(repository: string, digest: string): Promise<boolean> {
    const row = await this.db
      .selectFrom("manifests as m")
      .innerJoin("repositories as r", "r.id", "m.repository_id")
      .select("m.digest")
      .where("r.name", "=", repository)
      .where("m.digest", "=", digest)
      .executeTakeFirst();
    return row !== undefined;
  }

  async hasLayer(repository: string, digest: string): Promise<boolean> {
    const row = await this.db
      .selectFrom("repository_blobs as rb")
      .innerJoin("repositories as r", "r.id", "rb.repository_id")
      .select("rb.digest")
      .where("r.name", "=", repository)
      .where("rb.digest", "=", digest)
      .executeTakeFirst();
    return row !== undefined;
  }

  async hasAnyManifest(repository: string): Promise<boolean> {
    const row = await this.db
      .selectFrom("manifests as m")
      .innerJoin("repositories as r", "r.id", "m.repository_id")
      .select("m.digest")
      .where("r.name", "=", repository)
      .limit(1)
      .executeTakeFirst();
    return row !== undefined;
  }

  async hasRepository(repository: string): Promise<boolean> {
    return (
      (await this.db
        .selectFrom("repositories")
        .select("id")
        .where("name", "=", repository)
        .executeTakeFirst()) !== undefined
    );
  }

  /** Repositories in id order after `afterId`, for writing every link of a directory. */
  async repositoryPage(afterId: number, limit: number): Promise<{ id: number; name: string }[]> {
    return this.db
      .selectFrom("repositories")
      .select(["id", "name"])
      .where("id", ">", afterId)
      .orderBy("id")
      .limit(limit)
      .execute();
  }

  /** Everything a repository's link files must say. */
  async repositoryLinks(
    repositoryId: number,
  ): Promise<{ layers: string[]; revisions: string[]; tags: { name: string; digest: string }[] }> {
    const layers = await this.db
      .selectFrom("repository_blobs")
      .select("digest")
      .where("repository_id", "=", repositoryId)
      .execute();
    const revisions = await this.db
      .selectFrom("manifests")
      .select("digest")
      .where("repository_id", "=", repositoryId)
      .execute();
    const tags = await this.db
      .selectFrom("tags")
      .select(["name", "digest"])
      .where("repository_id", "=", repositoryId)
      .execute();
    return { layers: layers.map((l) => l.digest), revisions: revisions.map((r) => r.digest), tags };
  }
}
