#!/usr/bin/env node
import { readFileSync } from "node:fs";
import { Command } from "commander";
import { registerServeCommand } from "./serve.js";

const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };

const program = new Command()
  .name("berth")
  .description("Berth: a self-hosted container registry (OCI distribution API, users and permissions, web UI, garbage collection)")
  .version(pkg.version);

registerServeCommand(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`berth: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
