import { type PostgresServer, startPostgres } from "./postgres.js";

/**
 * Vitest global setup: with BERTH_TEST_DB=postgres, one PostgreSQL server for the whole run. Its
 * base URL goes to the test processes in BERTH_TEST_PG_URL; each `berth serve` that a test starts
 * gets a database of its own on it (test/helpers/server.ts).
 */
export default async function setup(): Promise<(() => Promise<void>) | undefined> {
  if (process.env.BERTH_TEST_DB !== "postgres" || process.env.BERTH_TEST_PG_URL) return undefined;
  const server: PostgresServer = await startPostgres();
  process.env.BERTH_TEST_PG_URL = server.url("postgres");
  return async () => {
    await server.stop();
  };
}
