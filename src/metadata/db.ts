import { mkdirSync } from "node:fs";
import path from "node:path";
import SQLite from "better-sqlite3";
import { Kysely, SqliteDialect } from "kysely";
import { type Dialect, migrate } from "./migrations.js";
import type { Database } from "./schema.js";

export interface MetadataDb {
  db: Kysely<Database>;
  dialect: Dialect;
  close(): Promise<void>;
}

/** Where the embedded SQLite database lives inside the data directory. */
export function sqlitePath(dataDir: string): string {
  return path.join(dataDir, "berth", "berth.db");
}

/** Opens (and migrates, unless told not to) the embedded SQLite database in WAL mode. */
export async function openSqlite(dataDir: string, options: { migrate?: boolean } = {}): Promise<MetadataDb> {
  const file = sqlitePath(dataDir);
  mkdirSync(path.dirname(file), { recursive: true });
  const sqlite = new SQLite(file, { timeout: 15_000 });
  sqlite.pragma("journal_mode = WAL");
  // FULL: a commit is on disk before the client hears 201.
  sqlite.pragma("synchronous = FULL");
  sqlite.pragma("foreign_keys = OFF");
  sqlite.pragma("cache_size = -32000");
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
  if (options.migrate !== false) await migrate(db as Kysely<unknown>, "sqlite");
  return {
    db,
    dialect: "sqlite",
    async close() {
      await db.destroy();
    },
  };
}
