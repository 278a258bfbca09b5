import { type Kysely, type Migration, type MigrationProvider, Migrator, sql } from "kysely";
import { distributionLinksUp } from "./distribution-schema.js";

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
    // [adoption, issue 12] registry:2 link files: adoption state and the journal of link changes.
    "0003_distribution_links": {
      async up(db: Kysely<unknown>) {
        await distributionLinksUp(db, dialect);
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

/** Brings the schema up to date; safe to call from several processes (the loser waits on the lock). */
export async function migrate(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const migrator = new Migrator({ db, provider: new InlineProvider(dialect) });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === "Error");
    throw new Error(`database migration ${failed?.migrationName ?? ""} failed: ${String(error)}`);
  }
}
