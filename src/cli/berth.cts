#!/usr/bin/env node
/**
 * The `berth` command. Everything but one case goes to src/cli/main.ts (commander, ES modules).
 *
 * That case is the supervisor of `berth serve`, a process that runs as long as the registry does: when
 * the command line holds nothing but `serve` (or no command: serve is the default) and serve's own
 * options, this file starts the supervisor (src/cli/supervisor.cts) itself, in CommonJS, without
 * commander or Node's ES module loader, about 2 MB less resident for the life of the process. It knows
 * serve's options from src/cli/serve-options.cts, the list commander's serve is built from too. Any other
 * command line, help, a flag this file does not know, an odd form of one, goes to main.ts, which
 * parses it with commander as always. The workers (the supervisor forks them with this file and the
 * same arguments) and `--workers 1` (one process that serves by itself) get the flags read here, as
 * commander would give them, and go to src/cli/serve.ts without commander either.
 * The supervisor reads only --workers and --addr (and REGISTRY_HTTP_WORKERS); the workers read the rest.
 */
import cluster from "node:cluster";
import { optionNames, SERVE_OPTIONS } from "./serve-options.cjs";
import { knownWorkers } from "./supervisor.cjs";

/** serve's options that take a value, those without, and those commander collects into a list. */
const VALUE_OPTIONS = new Set<string>();
const SWITCHES = new Set<string>();
const LISTS = new Set<string>();
for (const option of SERVE_OPTIONS) {
  const { names, value } = optionNames(option);
  for (const name of names) {
    (value ? VALUE_OPTIONS : SWITCHES).add(name);
    if (option.list) LISTS.add(name);
  }
}

/** What commander gives serve's action for a command line: --data-dir as dataDir, -c as config. */
export type PlainServeFlags = Record<string, string | string[] | true>;

function flagKey(name: string): string {
  if (name === "-c") return "config";
  return name.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/**
 * serve's flags as commander would give them to its action when `args` is a plain `berth serve` command
 * line, or undefined when commander must read it (anything else, including what commander would refuse).
 */
export function plainServe(args: string[]): PlainServeFlags | undefined {
  const flags: PlainServeFlags = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === "serve" && i === 0) continue;
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    let value: string | undefined;
    if (SWITCHES.has(name) && eq < 0) {
      flags[flagKey(name)] = true;
      continue;
    }
    if (!VALUE_OPTIONS.has(name)) return undefined;
    if (eq > 0) value = arg.slice(eq + 1);
    else {
      value = args[++i];
      if (value === undefined || value.startsWith("-")) return undefined;
    }
    const key = flagKey(name);
    if (LISTS.has(name)) {
      const list = (flags[key] as string[] | undefined) ?? [];
      flags[key] = [
        ...list,
        ...value
          .split(",")
          .map((v) => v.trim())
          .filter(Boolean),
      ];
    } else flags[key] = value;
  }
  return flags;
}

function main(): void {
  const flags = plainServe(process.argv.slice(2));
  const addr = flags?.addr as string | undefined;
  const workers = flags?.workers as string | undefined;
  if (
    flags &&
    cluster.isPrimary &&
    (addr === undefined || addr.trim() !== "") &&
    knownWorkers({ workers }) !== 1
  ) {
    (require("./supervisor.cjs") as typeof import("./supervisor.cjs")).supervise();
    return;
  }
  // A worker (forked by the supervisor with this file and the same arguments), or `--workers 1`: serve
  // without loading commander, which would stay in the process's memory for nothing.
  const entry = flags ? import("./serve.js").then((m) => m.serve(flags)) : import("./main.js");
  entry.catch((err: unknown) => {
    process.stderr.write(`berth: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}

if (require.main === module) main();
