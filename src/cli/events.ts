import type { Command } from "commander";
import { loadConfig } from "../config/load.js";
import type { Config, ConfigInput } from "../config/schema.js";
import { dataDirOf } from "../config/schema.js";
import { parseDuration } from "../config/sections/core.js";
import { openMetadata } from "../metadata/db.js";
import { SqlMetadataStore } from "../metadata/store.js";
import { databaseTarget } from "../metadata/target.js";
import { type EventsStatus, eventsStatus, type RedeliverFrom, redeliver } from "../registry/event-status.js";

/**
 * `berth events` (issue 14): each notification endpoint's state, backlog and recent deliveries, and
 * `berth events redeliver`. Reads the same database as a running `berth serve`; a redelivery is
 * picked up by the server's dispatcher within a second.
 */

interface Flags {
  config?: string;
  dataDir?: string;
}

function common(cmd: Command): Command {
  return cmd
    .option("-c, --config <file>", "YAML configuration file (default /etc/berth/config.yml when present)")
    .option("--data-dir <dir>", "where blobs and the database live (storage.filesystem.rootdirectory)");
}

function load(flags: Flags): Config {
  const input: Record<string, unknown> = {};
  if (flags.dataDir) input.storage = { filesystem: { rootdirectory: flags.dataDir } };
  return loadConfig({
    file: flags.config,
    flags: input as ConfigInput,
    flagNames: { "storage.filesystem.rootdirectory": "--data-dir" },
  }).config;
}

async function withDb<T>(config: Config, fn: (store: SqlMetadataStore) => Promise<T>): Promise<T> {
  const metadata = await openMetadata(databaseTarget(config.database), dataDirOf(config));
  try {
    return await fn(new SqlMetadataStore(metadata));
  } finally {
    await metadata.close();
  }
}

function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

function ago(iso: string | null): string {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

export function renderStatus(status: EventsStatus): string[] {
  const lines: string[] = [];
  if (status.endpoints.length === 0) {
    lines.push("no notification endpoints are configured (notifications.endpoints)");
    return lines;
  }
  for (const e of status.endpoints) {
    const state = e.disabled ? "disabled" : e.failing ? `FAILING since ${e.failingSince}` : "ok";
    lines.push(`${e.name}  ${e.url}  [${e.format}]  ${state}`);
    lines.push(
      `  backlog ${e.backlog}  delivered ${e.delivered}  last success ${ago(e.lastSuccessAt)}  failures in a row ${e.failures}`,
    );
    if (e.lastError) lines.push(`  last error: ${e.lastError}`);
    if (e.nextAttemptAt) lines.push(`  next attempt ${e.nextAttemptAt}`);
  }
  if (status.deliveries.length > 0) {
    lines.push("", "recent deliveries (newest first):");
    for (const d of status.deliveries) {
      const result = d.ok
        ? `${d.status}`
        : d.status === null
          ? `FAILED ${d.error ?? ""}`
          : `FAILED ${d.status}`;
      lines.push(
        `  ${d.at}  ${d.endpoint}  events ${d.firstEvent}-${d.lastEvent} (${d.events})  ${result}  ${d.ms} ms`,
      );
    }
  }
  return lines;
}

export function registerEventsCommand(program: Command): void {
  const events = common(
    program
      .command("events")
      .description(
        "notification (webhook) endpoints: state, backlog and recent deliveries; `berth events redeliver` sends events again",
      ),
  )
    .option("--endpoint <name>", "only this endpoint")
    .option("--failures", "only failed deliveries")
    .option("--limit <n>", "how many deliveries to list", "20")
    .option("--json", "print JSON")
    .action(
      async (flags: Flags & { endpoint?: string; failures?: boolean; limit: string; json?: boolean }) => {
        const config = load(flags);
        const limit = Number(flags.limit);
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
          throw new Error("--limit: expected 1 to 1000");
        const status = await withDb(config, (m) =>
          eventsStatus(m.events, config, { limit, endpoint: flags.endpoint, failuresOnly: flags.failures }),
        );
        if (flags.json) out(JSON.stringify(status, null, 2));
        else for (const line of renderStatus(status)) out(line);
      },
    );

  events
    .command("redeliver <endpoint>")
    .description(
      "send an endpoint's kept events again, in order and with their original ids, from an event, a time, or all (takes -c and --data-dir like `berth events`)",
    )
    .option("--event <id>", "from this event (its id, as sent, or its number)")
    .option("--since <time>", 'from this time (ISO 8601) or this long ago ("1h")')
    .option("--all", "every kept event")
    .action(async (endpoint: string, _local: unknown, cmd: Command) => {
      // -c and --data-dir belong to `berth events` and may come before or after `redeliver`.
      const flags = cmd.optsWithGlobals<Flags & { event?: string; since?: string; all?: boolean }>();
      const chosen = [flags.event !== undefined, flags.since !== undefined, flags.all === true].filter(
        Boolean,
      );
      if (chosen.length !== 1) throw new Error("give exactly one of --event, --since and --all");
      let from: RedeliverFrom;
      if (flags.all) from = { all: true };
      else if (flags.event !== undefined) from = { event: flags.event };
      else {
        const text = flags.since as string;
        const at = Date.parse(text);
        const duration = parseDuration(text);
        if (Number.isNaN(at) && duration === null)
          throw new Error(`--since: expected a time (ISO 8601) or a duration such as "1h", got "${text}"`);
        from = { since: Number.isNaN(at) ? Date.now() - (duration as number) : at };
      }
      const config = load(flags);
      const result = await withDb(config, (m) => redeliver(m.events, config, endpoint, from));
      out(
        `${result.endpoint}: redelivering from event ${result.from}; ${result.backlog} event${result.backlog === 1 ? "" : "s"} waiting (a running berth serve sends them within a second)`,
      );
    });
}
