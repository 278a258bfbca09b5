#!/usr/bin/env node
/**
 * The `berth` command. Everything but one case goes to src/cli/main.ts (commander, ES modules).
 *
 * That case is the supervisor of `berth serve`, a process that runs as long as the registry does: when
 * the command line holds nothing but `serve` (or no command: serve is the default) and serve's own
 * options, this file starts the supervisor (src/cli/supervisor.cts) itself, in CommonJS, without
 * commander or Node's ES module loader, about 2 MB less resident for the life of the process. Any other
 * command line, help, a flag this file does not know, an odd form of one, goes to main.ts, which
 * parses it with commander as always, and so do the workers (the supervisor forks them with this file
 * and the same arguments) and `--workers 1` (one process that serves by itself).
 * The supervisor reads only --workers and --addr (and REGISTRY_HTTP_WORKERS); the workers read the rest.
 */
import cluster from "node:cluster";
import { knownWorkers } from "./supervisor.cjs";

/** serve's options that take a value (src/cli/commands.ts and tls-flags.ts). */
const VALUE_OPTIONS = new Set([
  "--addr",
  "--data-dir",
  "-c",
  "--config",
  "--workers",
  "--tls-cert",
  "--tls-key",
  "--log-level",
  "--acme-host",
  "--acme-email",
  "--acme-directory",
  "--acme-http-addr",
]);
/** serve's options without a value. */
const SWITCHES = new Set(["--read-only"]);

/**
 * The values of --addr and --workers when `args` is a plain `berth serve` command line, or undefined
 * when commander must read it (anything else, including what commander would refuse).
 */
export function plainServe(args: string[]): { addr?: string; workers?: string } | undefined {
  const flags: { addr?: string; workers?: string } = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === "serve" && i === 0) continue;
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    let value: string | undefined;
    if (SWITCHES.has(name) && eq < 0) continue;
    if (!VALUE_OPTIONS.has(name)) return undefined;
    if (eq > 0) value = arg.slice(eq + 1);
    else {
      value = args[++i];
      if (value === undefined || value.startsWith("-")) return undefined;
    }
    if (name === "--addr") flags.addr = value;
    if (name === "--workers") flags.workers = value;
  }
  return flags;
}

function main(): void {
  const flags = cluster.isPrimary ? plainServe(process.argv.slice(2)) : undefined;
  if (flags && (flags.addr === undefined || flags.addr.trim() !== "") && knownWorkers(flags) !== 1) {
    (require("./supervisor.cjs") as typeof import("./supervisor.cjs")).supervise();
    return;
  }
  import("./main.js").catch((err: unknown) => {
    process.stderr.write(`berth: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}

if (require.main === module) main();
