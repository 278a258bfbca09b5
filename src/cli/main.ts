#!/usr/bin/env node
import { readFileSync } from "node:fs";
import { Command } from "commander";
import { registerConfigCommand, registerMaintenanceCommands, registerServeCommand } from "./commands.js";

const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
  version: string;
};

const program = new Command()
  .name("berth")
  .description(
    "Berth: a self-hosted container registry (OCI distribution API, users and permissions, web UI, garbage collection)",
  )
  .version(pkg.version);

// Commands whose modules load more than commander (the configuration schema, the database, the htpasswd
// editor) are declared only when they are asked for, or for the command list of `berth --help`: `berth serve`
// (the supervisor and every worker, which run this file too) never loads them.
const command = process.argv.slice(2).find((arg) => !arg.startsWith("-"));
const listing = command === "help" || (command === undefined && /^(-h|--help)$/.test(process.argv[2] ?? ""));
const wanted = (name: string) => listing || command === name;
registerServeCommand(program);
registerConfigCommand(program); // [ops wiring, issue 4]
if (wanted("user")) (await import("./user.js")).registerUserCommand(program); // [auth wiring, issue 3]
registerMaintenanceCommands(program); // [gc wiring, issue 6]
if (wanted("tls")) (await import("./tls.js")).registerTlsCommand(program); // [tls, issue 15] berth tls init|trust
if (wanted("events")) (await import("./events.js")).registerEventsCommand(program); // [events, issue 14]
if (wanted("db")) (await import("./db.js")).registerDbCommands(program); // [postgres wiring, issue 10]
// [adoption, issue 12] declared here; its code is loaded only when it runs.
program
  .command("import [source]")
  .description(
    "adopt registry:2 data in place (berth serve also does this at start-up): a directory, s3://BUCKET[/ROOTDIRECTORY] " +
      "(endpoint and keys from storage.s3), or, with no argument, the configured store",
  )
  .option("--dry-run", "read and check everything, write nothing")
  .option("--json", "print the report as JSON")
  .option("--data-dir <dir>", "where the database is, for a bucket (storage.filesystem.rootdirectory)")
  .option("-c, --config <file>", "YAML configuration file (default /etc/berth/config.yml when present)")
  .action(
    async (
      source: string | undefined,
      flags: { dryRun?: boolean; json?: boolean; config?: string; dataDir?: string },
    ) => (await import("./import.js")).runImport(source, flags),
  );

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`berth: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
