import type { TestProject } from "vitest/node";
import { startPostgres } from "./postgres.js";

declare module "vitest" {
  interface ProvidedContext {
    /** Base URL (maintenance database) of the run's PostgreSQL server; "" when there is none. */
    berthPostgresUrl: string;
  }
}

/**
 * Vitest global setup of the `postgres` project (vitest.config.ts): one PostgreSQL server for the
 * whole run. Each `berth serve` a test starts gets a fresh database on it (test/helpers/server.ts);
 * the contract suite creates its own databases there too. Stopped and removed at the end.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await startPostgres();
  project.provide("berthPostgresUrl", server.url("postgres"));
  return async () => {
    await server.stop();
  };
}
