import SQLite from "better-sqlite3";
import { type CompiledQuery, Kysely, PostgresDialect, SqliteDialect } from "kysely";
import type pg from "pg";
import { makePrivateFile } from "../storage/private-files.js";
import { markConnectionError } from "./dialect.js";
import { type Dialect, migrate } from "./migrations.js";
import { HotReads } from "./pg-batch.js";
import type { Database } from "./schema.js";
import { sqlitePath } from "./target.js";

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

/** Where the metadata lives: the embedded SQLite file (the default) or a PostgreSQL server. */
export type DatabaseTarget = { kind: "sqlite" } | { kind: "postgres"; pool: pg.PoolConfig };

export interface OpenOptions {
  /** Bring the schema up to date (default); false only checks that it is not newer than this code. */
  migrate?: boolean;
}

/** Opens the metadata database named by `target` (SQLite inside `dataDir`, or PostgreSQL). */
export function openMetadata(target: DatabaseTarget, dataDir: string, options: OpenOptions = {}) {
  return target.kind === "postgres" ? openPostgres(target.pool, options) : openSqlite(dataDir, options);
}

export { sqlitePath };

/**
 * Switches a connection to WAL. On a new database file, several processes starting at once race to
 * switch it, and SQLite answers the losers SQLITE_BUSY at once, without waiting on its busy timeout:
 * try again for a few seconds (by then the winner has switched the file, and the pragma is a read).
 */
async function enterWal(sqlite: SQLite.Database): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      sqlite.pragma("journal_mode = WAL");
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== "SQLITE_BUSY" || attempt >= 200) throw err;
      await new Promise((r) => setTimeout(r, 10 + Math.random() * 20));
    }
  }
}

/** Opens (and migrates, unless told not to) the embedded SQLite database in WAL mode. */
export async function openSqlite(dataDir: string, options: OpenOptions = {}): Promise<MetadataDb> {
  const file = sqlitePath(dataDir);
  // The database holds the token signing key: created 0600 in a 0700 folder, before SQLite opens it,
  // so that the -wal and -shm it creates get the same mode.
  makePrivateFile(file);
  const sqlite = new SQLite(file, { timeout: 15_000 });
  await enterWal(sqlite);
  // FULL: a commit is on disk before the client hears 201.
  sqlite.pragma("synchronous = FULL");
  sqlite.pragma("foreign_keys = OFF");
  sqlite.pragma("cache_size = -32000");
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
  try {
    await migrate(db as Kysely<unknown>, "sqlite", { apply: options.migrate !== false, sqlite });
  } catch (err) {
    await db.destroy();
    throw err;
  }
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

const INT8 = 20;
const NUMERIC = 1700;

/**
 * Type parsers for this pool only: bigint (sizes, times, counts) and numeric (sums) come back as
 * numbers, as they do from SQLite; every value Berth stores is far below 2^53.
 */
function typesOf(pgModule: typeof pg): pg.CustomTypesConfig {
  return {
    getTypeParser(oid: number, format?: "text" | "binary") {
      if (oid === INT8 || oid === NUMERIC) return (value: string) => Number(value);
      // biome-ignore lint/suspicious/noExplicitAny: pg's overloads do not accept the union
      return pgModule.types.getTypeParser(oid, format as any);
    },
  } as pg.CustomTypesConfig;
}

/**
 * Opens a pool on a PostgreSQL database and migrates it under an advisory lock, so that any number of
 * processes starting at once migrate it exactly once. Connections that break (a database restart, a
 * network cut) are dropped from the pool; the next query opens a new one.
 */
export async function openPostgres(config: pg.PoolConfig, options: OpenOptions = {}): Promise<MetadataDb> {
  // Loaded here, not at start-up: registries on SQLite never need the driver.
  const pgModule = (await import("pg")).default;
  const pool = new pgModule.Pool({ ...config, max: Math.max(2, config.max ?? 10), types: typesOf(pgModule) });
  // A connection that the server closes (a restart, a failover, pg_terminate_backend) emits 'error':
  // on the pool when it is idle (the pool has already discarded it), on the client itself when it is
  // in use. Without listeners that would end the process; the query in flight fails on its own
  // (and its request answers 503), and the pool does not reuse the broken client.
  pool.on("error", () => {});
  pool.on("connect", (client) => {
    client.on("error", markConnectionError);
  });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  try {
    await migrate(db as Kysely<unknown>, "postgres", { apply: options.migrate !== false, pool });
  } catch (err) {
    await db.destroy();
    throw err;
  }
  const hot = new HotReads(pool);
  return {
    db,
    dialect: "postgres",
    read<T>(query: CompiledQuery, parameters: readonly unknown[]) {
      return hot.read<T>(query.sql, parameters);
    },
    async close() {
      await db.destroy();
    },
  };
}
