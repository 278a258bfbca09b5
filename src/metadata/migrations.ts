import { type Kysely, type Migration, type MigrationProvider, Migrator, sql } from "kysely";

export type Dialect = "sqlite" | "postgres";

/** Types that differ between the dialects; everything else is shared. */
function types(dialect: Dialect) {
  return {
    bytes: dialect === "postgres" ? "bytea" : "blob",
    big: dialect === "postgres" ? "bigint" : "integer",
    id: dialect === "postgres" ? "serial" : "integer",
    // Byte order for names and tags, so that pagination is lexical in both databases.
    text: dialect === "postgres" ? sql`text collate "C"` : sql`text`,
  } as const;
}

function migrations(dialect: Dialect): Record<string, Migration> {
  const t = types(dialect);
  return {
    "0001_initial": {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable("repositories")
          .addColumn("id", t.id as "integer", (c) => c.primaryKey().autoIncrement())
          .addColumn("name", t.text, (c) => c.notNull().unique())
          .addColumn("created_at", t.big as "integer", (c) => c.notNull())
          .addColumn("updated_at", t.big as "integer", (c) => c.notNull())
          .execute();
        await db.schema
          .createTable("blobs")
          .addColumn("digest", "text", (c) => c.primaryKey())
          .addColumn("size", t.big as "integer", (c) => c.notNull())
          .addColumn("created_at", t.big as "integer", (c) => c.notNull())
          .execute();
        await db.schema
          .createTable("repository_blobs")
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("digest", "text", (c) => c.notNull())
          .addColumn("created_at", t.big as "integer", (c) => c.notNull())
          .addPrimaryKeyConstraint("repository_blobs_pk", ["repository_id", "digest"])
          .execute();
        await db.schema
          .createIndex("repository_blobs_digest")
          .on("repository_blobs")
          .column("digest")
          .execute();
        await db.schema
          .createTable("manifests")
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("digest", "text", (c) => c.notNull())
          .addColumn("media_type", "text", (c) => c.notNull())
          .addColumn("size", t.big as "integer", (c) => c.notNull())
          .addColumn("content", t.bytes as "blob", (c) => c.notNull())
          .addColumn("artifact_type", "text")
          .addColumn("subject", "text")
          .addColumn("annotations", "text")
          .addColumn("config_digest", "text")
          .addColumn("created_at", t.big as "integer", (c) => c.notNull())
          .addColumn("last_pulled_at", t.big as "integer")
          .addPrimaryKeyConstraint("manifests_pk", ["repository_id", "digest"])
          .execute();
        await db.schema
          .createIndex("manifests_subject")
          .on("manifests")
          .columns(["repository_id", "subject"])
          .execute();
        await db.schema.createIndex("manifests_digest").on("manifests").column("digest").execute();
        await db.schema
          .createTable("manifest_blobs")
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("manifest_digest", "text", (c) => c.notNull())
          .addColumn("blob_digest", "text", (c) => c.notNull())
          .addPrimaryKeyConstraint("manifest_blobs_pk", ["repository_id", "manifest_digest", "blob_digest"])
          .execute();
        await db.schema
          .createIndex("manifest_blobs_blob")
          .on("manifest_blobs")
          .column("blob_digest")
          .execute();
        await db.schema
          .createTable("manifest_children")
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("parent_digest", "text", (c) => c.notNull())
          .addColumn("child_digest", "text", (c) => c.notNull())
          .addPrimaryKeyConstraint("manifest_children_pk", ["repository_id", "parent_digest", "child_digest"])
          .execute();
        await db.schema
          .createIndex("manifest_children_child")
          .on("manifest_children")
          .columns(["repository_id", "child_digest"])
          .execute();
        await db.schema
          .createTable("tags")
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("name", t.text, (c) => c.notNull())
          .addColumn("digest", "text", (c) => c.notNull())
          .addColumn("created_at", t.big as "integer", (c) => c.notNull())
          .addColumn("updated_at", t.big as "integer", (c) => c.notNull())
          .addPrimaryKeyConstraint("tags_pk", ["repository_id", "name"])
          .execute();
        await db.schema.createIndex("tags_digest").on("tags").columns(["repository_id", "digest"]).execute();
        await db.schema
          .createTable("uploads")
          .addColumn("id", "text", (c) => c.primaryKey())
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("size", t.big as "integer", (c) => c.notNull())
          .addColumn("created_at", t.big as "integer", (c) => c.notNull())
          .addColumn("updated_at", t.big as "integer", (c) => c.notNull())
          .addColumn("lease_until", t.big as "integer")
          .addColumn("lease_holder", "text")
          .execute();
        await db.schema.createIndex("uploads_repository").on("uploads").column("repository_id").execute();
        await db.schema
          .createTable("locks")
          .addColumn("name", "text", (c) => c.primaryKey())
          .addColumn("holder", "text", (c) => c.notNull())
          .addColumn("expires_at", t.big as "integer", (c) => c.notNull())
          .execute();
      },
    },
    "0002_upload_digest": {
      async up(db: Kysely<unknown>) {
        await db.schema.alterTable("uploads").addColumn("digest", "text").execute();
      },
    },
  };
}

class InlineProvider implements MigrationProvider {
  constructor(private readonly dialect: Dialect) {}
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations(this.dialect);
  }
}

/**
 * Brings the schema up to date; safe to call from several processes at once.
 *
 * SQLite: the common case (nothing to do) is one read, with no write lock taken. Otherwise the
 * migration runs inside `BEGIN IMMEDIATE`, which waits for SQLite's single write lock: the first
 * process to take it migrates and commits, the others then find every migration done. Kysely's
 * Migrator runs on the same connection, inside that transaction, so a failure rolls it all back.
 */
export async function migrate(db: Kysely<unknown>, dialect: Dialect, sqlite?: SqliteHandle): Promise<void> {
  if (dialect === "sqlite" && sqlite) {
    const wanted = Object.keys(migrations(dialect));
    if (applied(sqlite, wanted)) return;
    sqlite.exec("BEGIN IMMEDIATE");
    try {
      if (!applied(sqlite, wanted)) await runMigrator(db, dialect, true);
      sqlite.exec("COMMIT");
    } catch (err) {
      if (sqlite.inTransaction) sqlite.exec("ROLLBACK");
      throw err;
    }
    return;
  }
  await runMigrator(db, dialect, false);
}

/** The few calls of a better-sqlite3 connection that migrate() needs. */
export interface SqliteHandle {
  exec(sql: string): unknown;
  prepare(sql: string): { pluck(): { all(): unknown[] } };
  readonly inTransaction: boolean;
}

/** Whether every migration in `wanted` is recorded as done (false when the table does not exist yet). */
function applied(sqlite: SqliteHandle, wanted: string[]): boolean {
  try {
    const done = new Set(sqlite.prepare("select name from kysely_migration").pluck().all() as string[]);
    return wanted.every((name) => done.has(name));
  } catch {
    return false;
  }
}

async function runMigrator(db: Kysely<unknown>, dialect: Dialect, inTransaction: boolean): Promise<void> {
  const migrator = new Migrator({
    db,
    provider: new InlineProvider(dialect),
    // Already inside the caller's BEGIN IMMEDIATE (SQLite): Kysely must not open another.
    disableTransactions: inTransaction,
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === "Error");
    throw new Error(`database migration ${failed?.migrationName ?? ""} failed: ${String(error)}`);
  }
}
