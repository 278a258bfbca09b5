import type { Command } from "commander";

/**
 * `berth db`: metadata database commands (issue 10). Registration is cheap; the work (and the
 * database drivers) load only when a subcommand runs.
 */
export function registerDbCommands(program: Command): void {
  const db = program.command("db").description("metadata database commands");
  db.command("migrate-to")
    .description(
      "copy the SQLite metadata database of a data directory into an empty PostgreSQL database " +
        "(all tables in one transaction), verify row counts, and print the configuration to use. " +
        "Stop Berth (or run it --read-only) first: it refuses while a berth serve that takes pushes " +
        "uses the database. Blobs stay where they are.",
    )
    .argument("<url>", "the target database, postgres://user:password@host:5432/dbname")
    .option("-c, --config <file>", "YAML configuration file (default /etc/berth/config.yml when present)")
    .option("--data-dir <dir>", "where blobs and the SQLite database live (storage.filesystem.rootdirectory)")
    .option("--json", "print the result as JSON")
    .action(async (url: string, flags: { config?: string; dataDir?: string; json?: boolean }) => {
      const { migrateToPostgres } = await import("./db-migrate.js");
      await migrateToPostgres(url, flags);
    });
}
