import type SQLite from "better-sqlite3";
import { type Kysely, type Migration, type MigrationProvider, Migrator, sql } from "kysely";
import type pg from "pg";
import { distributionLinksUp } from "./distribution-schema.js";

export type Dialect = "sqlite" | "postgres";

/** Types that differ between the dialects; everything else is shared. */
function types(dialect: Dialect) {
  return {
    bytes: dialect === "postgres" ? "bytea" : "blob",
    big: dialect === "postgres" ? "bigint" : "integer",
    id: dialect === "postgres" ? "serial" : "integer",
    /** A 64-bit auto-increment id, for tables that grow without end (the event outbox). */
    bigId: dialect === "postgres" ? "bigserial" : "integer",
    // PostgreSQL's serial is its own auto-increment; AUTOINCREMENT is SQLite's spelling.
    autoId: dialect === "postgres" ? undefined : true,
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
          .addColumn("id", t.id as "integer", (c) =>
            t.autoId ? c.primaryKey().autoIncrement() : c.primaryKey(),
          )
          .addColumn("name", t.text, (c) => c.notNull().unique())
          .addColumn("created_at", t.big as "integer", (c) => c.notNull())
          .addColumn("updated_at", t.big as "integer", (c) => c.notNull())
          .execute();
        await db.schema
          .createTable("blobs")
          .addColumn("digest", t.text, (c) => c.primaryKey())
          .addColumn("size", t.big as "integer", (c) => c.notNull())
          .addColumn("created_at", t.big as "integer", (c) => c.notNull())
          .execute();
        await db.schema
          .createTable("repository_blobs")
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("digest", t.text, (c) => c.notNull())
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
          .addColumn("digest", t.text, (c) => c.notNull())
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
          .addColumn("manifest_digest", t.text, (c) => c.notNull())
          .addColumn("blob_digest", t.text, (c) => c.notNull())
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
          .addColumn("parent_digest", t.text, (c) => c.notNull())
          .addColumn("child_digest", t.text, (c) => c.notNull())
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
          .addColumn("digest", t.text, (c) => c.notNull())
          .addColumn("created_at", t.big as "integer", (c) => c.notNull())
          .addColumn("updated_at", t.big as "integer", (c) => c.notNull())
          .addPrimaryKeyConstraint("tags_pk", ["repository_id", "name"])
          .execute();
        await db.schema.createIndex("tags_digest").on("tags").columns(["repository_id", "digest"]).execute();
        await db.schema
          .createTable("uploads")
          .addColumn("id", t.text, (c) => c.primaryKey())
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
        await db.schema.alterTable("uploads").addColumn("digest", t.text).execute();
      },
    },
    "0003_released_manifests": {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable("released_manifests")
          .addColumn("repository_id", "integer", (c) => c.notNull())
          .addColumn("digest", "text", (c) => c.notNull())
          .addColumn("released_at", t.big as "integer", (c) => c.notNull())
          .addPrimaryKeyConstraint("released_manifests_pk", ["repository_id", "digest"])
          .execute();
      },
    },
    "0004_events": {
      // Issue 14: the notification outbox, one cursor per webhook endpoint, and a log of deliveries.
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable("events")
          .addColumn("id", t.bigId as "integer", (c) =>
            t.autoId ? c.primaryKey().autoIncrement() : c.primaryKey(),
          )
          .addColumn("event_id", "text", (c) => c.notNull())
          .addColumn("created_at", t.big as "integer", (c) => c.notNull())
          .addColumn("action", "text", (c) => c.notNull())
          .addColumn("repository", "text", (c) => c.notNull())
          .addColumn("body", "text", (c) => c.notNull())
          .execute();
        await db.schema.createIndex("events_created").on("events").column("created_at").execute();
        await db.schema
          .createTable("event_endpoints")
          .addColumn("name", "text", (c) => c.primaryKey())
          .addColumn("cursor", t.big as "integer", (c) => c.notNull())
          .addColumn("failures", "integer", (c) => c.notNull().defaultTo(0))
          .addColumn("next_attempt_at", t.big as "integer", (c) => c.notNull().defaultTo(0))
          .addColumn("failing_since", t.big as "integer")
          .addColumn("last_error", "text")
          .addColumn("last_attempt_at", t.big as "integer")
          .addColumn("last_success_at", t.big as "integer")
          .addColumn("delivered", t.big as "integer", (c) => c.notNull().defaultTo(0))
          .addColumn("lease_holder", "text")
          .addColumn("lease_until", t.big as "integer")
          .addColumn("created_at", t.big as "integer", (c) => c.notNull())
          .execute();
        await db.schema
          .createTable("event_deliveries")
          .addColumn("id", t.bigId as "integer", (c) =>
            t.autoId ? c.primaryKey().autoIncrement() : c.primaryKey(),
          )
          .addColumn("endpoint", "text", (c) => c.notNull())
          .addColumn("first_event", t.big as "integer", (c) => c.notNull())
          .addColumn("last_event", t.big as "integer", (c) => c.notNull())
          .addColumn("events", "integer", (c) => c.notNull())
          .addColumn("status", "integer")
          .addColumn("error", "text")
          .addColumn("attempted_at", t.big as "integer", (c) => c.notNull())
          .addColumn("duration_ms", "integer", (c) => c.notNull())
          .execute();
        await db.schema
          .createIndex("event_deliveries_endpoint")
          .on("event_deliveries")
          .columns(["endpoint", "id"])
          .execute();
      },
    },
    // [adoption, issue 12] registry:2 link files: adoption state and the journal of link changes.
    "0005_distribution_links": {
      async up(db: Kysely<unknown>) {
        await distributionLinksUp(db, dialect);
      },
    },
    // [replicas, issue 10] values every replica must agree on, such as the token signing key.
    "0006_settings": {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable("settings")
          .addColumn("name", "text", (c) => c.primaryKey())
          .addColumn("value", "text", (c) => c.notNull())
          .addColumn("created_at", t.big as "integer", (c) => c.notNull())
          .execute();
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

/** The names of this code's migrations, in order. */
export function knownMigrations(): string[] {
  return Object.keys(migrations("sqlite")).sort();
}

/** Thrown when the database was migrated by a newer Berth than this one. */
export class SchemaTooNewError extends Error {
  constructor(unknown: string[]) {
    super(
      `the metadata database has a newer schema than this Berth understands (migrations ${unknown.join(", ")}); ` +
        "run the Berth version that migrated it, or a newer one",
    );
    this.name = "SchemaTooNewError";
  }
}

/** Migrations recorded in the database (none for a fresh one). */
export async function appliedMigrations(db: Kysely<unknown>): Promise<string[]> {
  const tables = await db.introspection.getTables({ withInternalKyselyTables: true });
  if (!tables.some((t) => t.name === "kysely_migration")) return [];
  const rows = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(db);
  return rows.rows.map((r) => r.name);
}

/** An arbitrary, fixed key for Berth's migration advisory lock (PostgreSQL). */
const MIGRATION_LOCK = 0x6265727468; // "berth"

/** The few calls of a better-sqlite3 connection that migrate() needs. */
export interface SqliteHandle {
  exec(sql: string): unknown;
  prepare(sql: string): { pluck(): { all(): unknown[] } };
  readonly inTransaction: boolean;
}

/**
 * Brings the schema up to date (or, with `apply: false`, only checks it), refusing a database that a
 * newer Berth has migrated; safe to call from several processes at once.
 *
 * SQLite (`sqlite`: the connection `db` runs on): the common case (nothing to do) is one read, with no
 * write lock taken. Otherwise the migration runs inside `BEGIN IMMEDIATE`, which waits for SQLite's single
 * write lock: the first process to take it migrates and commits, the others then find every migration
 * done; a failure or a crash rolls it all back.
 * PostgreSQL: the whole check-and-migrate runs under a session advisory lock held on a connection of its
 * own, so that ten processes starting at the same moment migrate once: the others wait, then find
 * nothing to do.
 */
export async function migrate(
  db: Kysely<unknown>,
  dialect: Dialect,
  options: { apply?: boolean; pool?: pg.Pool; sqlite?: SqliteHandle } = {},
): Promise<void> {
  const known = knownMigrations();
  if (dialect === "sqlite" && options.sqlite) {
    const sqlite = options.sqlite;
    if (upToDate(appliedSync(sqlite), known) || options.apply === false) return;
    sqlite.exec("BEGIN IMMEDIATE");
    try {
      if (!upToDate(appliedSync(sqlite), known)) await runMigrator(db, dialect, true);
      sqlite.exec("COMMIT");
    } catch (err) {
      if (sqlite.inTransaction) sqlite.exec("ROLLBACK");
      throw err;
    }
    return;
  }
  const lockClient = dialect === "postgres" && options.pool ? await options.pool.connect() : null;
  try {
    if (lockClient) await lockClient.query("select pg_advisory_lock($1)", [MIGRATION_LOCK]);
    if (upToDate(await appliedMigrations(db), known) || options.apply === false) return;
    await runMigrator(db, dialect, false);
  } finally {
    if (lockClient) {
      await lockClient.query("select pg_advisory_unlock($1)", [MIGRATION_LOCK]).catch(() => {});
      lockClient.release();
    }
  }
}

/** True when every known migration is applied; throws SchemaTooNewError when others are too. */
function upToDate(applied: string[], known: string[]): boolean {
  const knownSet = new Set(known);
  const unknown = applied.filter((name) => !knownSet.has(name));
  if (unknown.length > 0) throw new SchemaTooNewError(unknown);
  const done = new Set(applied);
  return known.every((name) => done.has(name));
}

/** The migrations recorded in a SQLite database, read synchronously (none when the table does not exist yet). */
function appliedSync(sqlite: SqliteHandle): string[] {
  try {
    return sqlite.prepare("select name from kysely_migration").pluck().all() as string[];
  } catch {
    return [];
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
