import { type Kysely, sql } from "kysely";
import type { Dialect } from "./migrations.js";
import type { Database } from "./schema.js";

/**
 * Tables for a data directory shared with registry:2 (issue 12).
 *
 * `distribution_state` (one row, id 1) remembers whether the directory's registry:2 repositories were
 * adopted, and whether Berth keeps Distribution's link files in step with its own rows.
 *
 * `distribution_journal` is filled by triggers, in the same transaction as the change itself, with
 * every (repository, kind, key) whose link file may have to change: a tag, a manifest revision or a
 * repository's blob link, or a whole repository. After the transaction commits, the journal is applied to
 * the link files and emptied (src/registry/distribution-sync.ts). A crash between the two leaves the rows
 * behind, and they are applied at the next start, so the link files never stay behind the database.
 * The triggers write only while `links` is on, so a directory without link files pays nothing.
 */
export interface DistributionStateTable {
  id: number;
  /** null (never adopted), "running" (started, not finished: run again), "done". */
  adoption: string | null;
  /** "off", "exporting" (being switched on: every link is being written), "on". */
  links: string;
  adopted_at: number | null;
  /** JSON of the adoption's summary. */
  report: string | null;
  updated_at: number;
}

export interface DistributionJournalTable {
  id: number;
  repository: string;
  /** "tag", "revision", "layer" or "repository". */
  kind: string;
  key: string;
}

export interface DistributionDatabase extends Database {
  distribution_state: DistributionStateTable;
  distribution_journal: DistributionJournalTable;
}

const ACTIVE = `(select links from distribution_state where id = 1) in ('on', 'exporting')`;

/** Which changes journal which link: table, events, kind, the key column and the row alias. */
const TRIGGERS: { table: string; event: string; row: "new" | "old"; kind: string; key: string }[] = [
  { table: "tags", event: "insert", row: "new", kind: "tag", key: "name" },
  { table: "tags", event: "update of digest", row: "new", kind: "tag", key: "name" },
  { table: "tags", event: "delete", row: "old", kind: "tag", key: "name" },
  { table: "manifests", event: "insert", row: "new", kind: "revision", key: "digest" },
  { table: "manifests", event: "delete", row: "old", kind: "revision", key: "digest" },
  { table: "repository_blobs", event: "insert", row: "new", kind: "layer", key: "digest" },
  { table: "repository_blobs", event: "delete", row: "old", kind: "layer", key: "digest" },
];

export async function distributionLinksUp(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const pg = dialect === "postgres";
  const big = pg ? "bigint" : "integer";
  // Repository names and keys sort by byte on PostgreSQL too, as the other tables' text keys do.
  const text = pg ? sql`text collate "C"` : sql`text`;
  await db.schema
    .createTable("distribution_state")
    .addColumn("id", "integer", (c) => c.primaryKey())
    .addColumn("adoption", "text")
    .addColumn("links", "text", (c) => c.notNull())
    .addColumn("adopted_at", big as "integer")
    .addColumn("report", "text")
    .addColumn("updated_at", big as "integer", (c) => c.notNull())
    .execute();
  await db.schema
    .createTable("distribution_journal")
    // bigserial is PostgreSQL's own auto-increment (a journal grows without end); AUTOINCREMENT is SQLite's.
    .addColumn("id", pg ? "bigserial" : "integer", (c) =>
      pg ? c.primaryKey() : c.primaryKey().autoIncrement(),
    )
    .addColumn("repository", text, (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("key", text, (c) => c.notNull())
    .execute();
  if (pg) return postgresTriggers(db);
  for (const t of TRIGGERS) {
    const name = `distribution_${t.table}_${t.event.replace(/ /g, "_")}`;
    const repo = `(select name from repositories where id = ${t.row}.repository_id)`;
    await sql
      .raw(
        `create trigger ${name} after ${t.event} on ${t.table} when ${ACTIVE} and ${repo} is not null ` +
          `begin insert into distribution_journal (repository, kind, key) ` +
          `values (${repo}, '${t.kind}', ${t.row}.${t.key}); end`,
      )
      .execute(db);
  }
  await sql
    .raw(
      `create trigger distribution_repositories_delete after delete on repositories when ${ACTIVE} ` +
        `begin insert into distribution_journal (repository, kind, key) values (old.name, 'repository', ''); end`,
    )
    .execute(db);
}

/**
 * The same journal rows on PostgreSQL, from PL/pgSQL trigger functions. A trigger's WHEN cannot read
 * another table there, so each function tests whether links are on itself. Inserts and deletes journal
 * once per statement from its transition table (an adoption writes hundreds of thousands of rows while
 * links are off: one test per statement, not one per row); a tag's new digest, once per row (transition
 * tables cannot go with a column list such as UPDATE OF digest). Rows an ON CONFLICT skips are in no
 * transition table and fire no row trigger, as on SQLite.
 */
async function postgresTriggers(db: Kysely<unknown>): Promise<void> {
  const kinds = new Map<string, { kind: string; key: string }>();
  for (const t of TRIGGERS) kinds.set(t.table, { kind: t.kind, key: t.key });
  for (const [table, { kind, key }] of kinds) {
    await sql
      .raw(
        `create function distribution_journal_${table}() returns trigger language plpgsql as $$ begin ` +
          `if ${ACTIVE} then ` +
          `insert into distribution_journal (repository, kind, key) ` +
          `select r.name, '${kind}', c.${key} from changed c join repositories r on r.id = c.repository_id; ` +
          "end if; return null; end $$",
      )
      .execute(db);
  }
  await sql
    .raw(
      "create function distribution_journal_tag_row() returns trigger language plpgsql as $$ " +
        "declare repo text; begin " +
        `if ${ACTIVE} then ` +
        "select name into repo from repositories where id = new.repository_id; " +
        "if repo is not null then " +
        "insert into distribution_journal (repository, kind, key) values (repo, 'tag', new.name); " +
        "end if; end if; return null; end $$",
    )
    .execute(db);
  await sql
    .raw(
      "create function distribution_journal_repositories() returns trigger language plpgsql as $$ begin " +
        `if ${ACTIVE} then ` +
        "insert into distribution_journal (repository, kind, key) select c.name, 'repository', '' from changed c; " +
        "end if; return null; end $$",
    )
    .execute(db);
  for (const t of TRIGGERS) {
    const name = `distribution_${t.table}_${t.event.replace(/ /g, "_")}`;
    const body = t.event.startsWith("update")
      ? "for each row execute function distribution_journal_tag_row()"
      : `referencing ${t.row} table as changed for each statement execute function distribution_journal_${t.table}()`;
    await sql.raw(`create trigger ${name} after ${t.event} on ${t.table} ${body}`).execute(db);
  }
  await sql
    .raw(
      "create trigger distribution_repositories_delete after delete on repositories " +
        "referencing old table as changed for each statement execute function distribution_journal_repositories()",
    )
    .execute(db);
}

export function distributionDb(db: Kysely<Database>): Kysely<DistributionDatabase> {
  return db as unknown as Kysely<DistributionDatabase>;
}
