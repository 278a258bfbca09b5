import { mkdirSync } from "node:fs";
import path from "node:path";
import SQLite from "better-sqlite3";
import { type CompiledQuery, Kysely, SqliteDialect } from "kysely";
import { type Dialect, migrate } from "./migrations.js";
import type { Database } from "./schema.js";

export interface MetadataDb {
  db: Kysely<Database>;
  dialect: Dialect;
  /**
   * Runs a compiled read-only query on a connection of its own with a cached prepared statement:
   * the hot read paths (manifest GET, blob HEAD) skip query building and statement preparation,
   * and never read inside another request's open transaction.
   */
  read<T>(query: CompiledQuery, parameters: readonly unknown[]): Promise<T | undefined>;
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
  if (options.migrate !== false) await migrate(db as Kysely<unknown>, "sqlite", sqlite);
  const reader = new SQLite(file, { timeout: 15_000, readonly: true });
  const statements = new Map<string, SQLite.Statement>();
  return {
    db,
    dialect: "sqlite",
    async read<T>(query: CompiledQuery, parameters: readonly unknown[]) {
      let statement = statements.get(query.sql);
      if (!statement) {
        statement = reader.prepare(query.sql);
        statements.set(query.sql, statement);
      }
      return statement.get(...parameters) as T | undefined;
    },
    async close() {
      reader.close();
      await db.destroy();
    },
  };
}
