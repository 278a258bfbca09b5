import { CompiledQuery } from "kysely";
import { type MetadataDb, openPostgres, openSqlite } from "../../src/metadata/db.js";
import { databaseEnv, TEST_DB } from "./server.js";

/**
 * The metadata database of a test's Berth, whichever it is (SQLite in the data directory, or the
 * PostgreSQL database test/helpers/server.ts gave that directory), for tests that look at rows or
 * seed them directly. SQL is written once with `?` placeholders; on PostgreSQL they become $1, $2...
 */
export interface TestDb {
  meta: MetadataDb;
  all<T>(text: string, ...params: unknown[]): Promise<T[]>;
  get<T>(text: string, ...params: unknown[]): Promise<T | undefined>;
  /** Runs a statement; returns the number of rows it changed. */
  run(text: string, ...params: unknown[]): Promise<number>;
  close(): Promise<void>;
}

export async function openTestDb(dataDir: string): Promise<TestDb> {
  const meta =
    TEST_DB === "postgres"
      ? await openPostgres({ connectionString: (await databaseEnv(dataDir)).REGISTRY_DATABASE_URL, max: 4 })
      : await openSqlite(dataDir);
  const compile = (text: string, params: unknown[]) => {
    let n = 0;
    const sql = meta.dialect === "postgres" ? text.replace(/\?/g, () => `$${++n}`) : text;
    return CompiledQuery.raw(sql, params);
  };
  return {
    meta,
    async all<T>(text: string, ...params: unknown[]) {
      return (await meta.db.executeQuery<T>(compile(text, params))).rows;
    },
    async get<T>(text: string, ...params: unknown[]) {
      return (await meta.db.executeQuery<T>(compile(text, params))).rows[0];
    },
    async run(text: string, ...params: unknown[]) {
      const result = await meta.db.executeQuery(compile(text, params));
      return Number(result.numAffectedRows ?? 0);
    },
    close: () => meta.close(),
  };
}
