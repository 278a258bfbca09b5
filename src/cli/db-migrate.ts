import { existsSync } from "node:fs";
import SQLite from "better-sqlite3";
import { sql } from "kysely";
import { loadConfig } from "../config/load.js";
import { maskUrlPassword } from "../config/provenance.js";
import type { ConfigInput } from "../config/schema.js";
import { dataDirOf } from "../config/schema.js";
import { openPostgres, openSqlite, sqlitePath } from "../metadata/db.js";
import { type DistributionDatabase, distributionDb } from "../metadata/distribution-schema.js";
import { SqlMetadataStore } from "../metadata/store.js";
import { type ServerLease, serverLeases } from "../registry/jobs.js";

/**
 * Every table, parents first; each is copied whole, in rowid order. The registry:2 adoption state comes
 * last, after the rows its journal triggers watch: an adopted directory stays adopted (never imported
 * again) and keeps its link files, and the copy itself journals nothing.
 */
const TABLES: (keyof DistributionDatabase)[] = [
  "repositories",
  "blobs",
  "repository_blobs",
  "manifests",
  "manifest_blobs",
  "manifest_children",
  "tags",
  "uploads",
  "locks",
  "released_manifests",
  "events",
  "event_endpoints",
  "event_deliveries",
  "settings",
  "distribution_journal",
  "distribution_state",
];

const PAGE = 1000;

/** Stops the migration when a server writes (or wrote, during the copy) the source database. */
function refuseUnderServers(servers: ServerLease[], file: string, what: "is writing" | "wrote"): void {
  if (servers.length === 0) return;
  const list = servers.map((s) => `pid ${s.pid} on ${s.host}`).join(", ");
  throw new Error(
    what === "is writing"
      ? `berth serve is writing ${file} (${list}): stop every berth serve on this data directory (or restart it with --read-only), then run berth db migrate-to again (a copy taken now would miss what it writes afterwards)`
      : `berth serve wrote ${file} while it was copied (${list}); nothing was committed: stop every berth serve on this data directory (or restart it with --read-only) and run berth db migrate-to again`,
  );
}

export interface MigrateResult {
  source: string;
  target: string;
  rows: Record<string, number>;
}

/**
 * Copies the SQLite metadata of a data directory into an empty PostgreSQL database: the target's
 * schema is created by the usual migrations, then every row goes over in one PostgreSQL transaction,
 * read from one SQLite read transaction (a consistent snapshot); the repositories id sequence is
 * moved past the copied ids (and those of the event outbox, its delivery log and the link-file journal); the row counts of both sides must match before the commit.
 */
export async function migrateToPostgres(
  url: string,
  flags: { config?: string; dataDir?: string; json?: boolean },
): Promise<MigrateResult> {
  if (!/^postgres(ql)?:\/\//.test(url)) throw new Error(`not a PostgreSQL URL: ${maskUrlPassword(url)}`);
  const input: Record<string, unknown> = {};
  if (flags.dataDir) input.storage = { filesystem: { rootdirectory: flags.dataDir } };
  const { config } = loadConfig({
    file: flags.config,
    flags: input as ConfigInput,
    flagNames: { "storage.filesystem.rootdirectory": "--data-dir" },
  });
  const dataDir = dataDirOf(config);
  const file = sqlitePath(dataDir);
  if (!existsSync(file)) throw new Error(`no SQLite metadata database at ${file}`);
  // Bring the source to this version's schema (what `berth serve` would do), then read it raw.
  const sourceMeta = new SqlMetadataStore(await openSqlite(dataDir));
  // A server taking pushes would go on after the copy, and lose what it writes at the switch. One in
  // read-only mode may keep serving pulls (the pull times it records meanwhile are not copied).
  let idle: Set<string>;
  try {
    const servers = await serverLeases(sourceMeta);
    refuseUnderServers(
      servers.filter((s) => s.running && !s.readOnly),
      file,
      "is writing",
    );
    idle = new Set(servers.map((s) => s.name));
  } catch (err) {
    await sourceMeta.metadata.close();
    throw err;
  }
  const source = new SQLite(file, { readonly: true, timeout: 15_000 });
  const opened = await openPostgres({ connectionString: url, max: 2 });
  const target = { db: distributionDb(opened.db), close: () => opened.close() };
  const rows: Record<string, number> = {};
  try {
    for (const table of TABLES) {
      const count = await target.db
        .selectFrom(table)
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .executeTakeFirstOrThrow();
      if (Number(count.n) > 0)
        throw new Error(
          `the target database is not empty (${table} has ${count.n} rows); give an empty database`,
        );
    }
    const copyStart = Date.now();
    source.exec("begin"); // one snapshot of every table
    try {
      await target.db.transaction().execute(async (trx) => {
        for (const table of TABLES) {
          const page = source.prepare(
            `select rowid as _rowid, * from ${table} where rowid > ? order by rowid limit ${PAGE}`,
          );
          let copied = 0;
          for (let after = 0; ; ) {
            const batch = page.all(after) as Record<string, unknown>[];
            if (batch.length === 0) break;
            after = Number(batch[batch.length - 1]!._rowid);
            const values = batch.map(({ _rowid, ...row }) => row);
            // biome-ignore lint/suspicious/noExplicitAny: rows of any of the tables
            const inserted: any = values;
            await trx.insertInto(table).values(inserted).execute();
            copied += values.length;
          }
          const expected = (source.prepare(`select count(*) as n from ${table}`).get() as { n: number }).n;
          const got = await trx
            .selectFrom(table)
            .select((eb) => eb.fn.countAll<number>().as("n"))
            .executeTakeFirstOrThrow();
          if (copied !== expected || Number(got.n) !== expected)
            throw new Error(`${table}: ${expected} rows in SQLite, ${got.n} copied; nothing was committed`);
          rows[table] = expected;
        }
        for (const table of ["repositories", "events", "event_deliveries", "distribution_journal"])
          await sql`select setval(pg_get_serial_sequence(${table}, 'id'), coalesce((select max(id) from ${sql.table(table)}), 0) + 1, false)`.execute(
            trx,
          );
        // A server that started, or stopped, while the rows were read may have written after the snapshot.
        const during = (await serverLeases(sourceMeta)).filter(
          (s) => !s.readOnly && !idle.has(s.name) && (s.running || s.until >= copyStart),
        );
        refuseUnderServers(during, file, "wrote");
      });
    } finally {
      source.exec("commit");
    }
  } finally {
    source.close();
    await sourceMeta.metadata.close();
    await target.close();
  }
  const result: MigrateResult = { source: file, target: maskUrlPassword(url), rows };
  const out = (line = "") => process.stdout.write(`${line}\n`);
  if (flags.json) {
    out(JSON.stringify(result, null, 2));
    return result;
  }
  out(`copied ${file} into ${result.target}:`);
  for (const [table, n] of Object.entries(rows)) out(`  ${table.padEnd(18)} ${n} rows (counts match)`);
  out();
  out("Now point Berth at PostgreSQL, in the configuration file:");
  out();
  out("  database:");
  out(`    url: ${result.target}`);
  out();
  out(`or with REGISTRY_DATABASE_URL=${result.target} (put the real password back in either).`);
  out(
    `Blobs stay in ${dataDir}: keep storage.filesystem.rootdirectory pointing there (shared by every replica).`,
  );
  out(`The SQLite file is no longer used once Berth runs on PostgreSQL; keep it as a backup.`);
  return result;
}
