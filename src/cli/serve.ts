import cluster, { type Worker } from "node:cluster";
import type { ConfigInput } from "../config/schema.js";
import { ACME_FLAG_NAMES, type AcmeFlags, acmeFlagsToConfig } from "./tls-flags.js";

export { parseAddr } from "../config/addr.js";

import { type LineLogger, type LogFormat, lineLogger } from "./log-line.js";

/**
 * `berth serve`: a supervisor that forks worker processes (src/cli/worker.ts), or, with
 * `--workers 1`, one process that serves by itself.
 *
 * The supervisor stays small and starts fast: it loads no configuration, HTTP, logging or database
 * code (this module imports node:cluster and a line writer, nothing else). The first worker it forks
 * (the lead) reads and checks the configuration and reports it; the supervisor then forks the other
 * workers at once, while the lead is still opening the database, so that they start side by side.
 * A worker that fails before it ever listened (an invalid configuration, a busy port, an address
 * that is not host:port) stops the whole process with its message and exit code 1, instead of being
 * restarted for ever; a worker that dies after it served is replaced.
 */

export interface ServeFlags extends AcmeFlags {
  addr?: string;
  dataDir?: string;
  config?: string;
  workers?: string;
  readOnly?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  logLevel?: string;
}

/** Which flag set which key, for `config check` and error messages. */
export const FLAG_NAMES: Record<string, string> = {
  "http.addr": "--addr",
  "storage.filesystem.rootdirectory": "--data-dir",
  "http.workers": "--workers",
  "storage.maintenance.readonly.enabled": "--read-only",
  "http.tls.certificate": "--tls-cert",
  "http.tls.key": "--tls-key",
  "log.level": "--log-level",
  ...ACME_FLAG_NAMES, // [tls, issue 15]
};

export function flagsToConfig(flags: ServeFlags): ConfigInput {
  const input: Record<string, Record<string, unknown>> = {};
  const set = (section: string, key: string, value: unknown) => {
    input[section] ??= {};
    (input[section] as Record<string, unknown>)[key] = value;
  };
  if (flags.addr) set("http", "addr", flags.addr);
  if (flags.workers !== undefined) set("http", "workers", Number(flags.workers));
  if (flags.dataDir) set("storage", "filesystem", { rootdirectory: flags.dataDir });
  if (flags.readOnly) set("storage", "maintenance", { readonly: { enabled: true } });
  if (flags.tlsCert || flags.tlsKey) set("http", "tls", { certificate: flags.tlsCert, key: flags.tlsKey });
  if (flags.logLevel) set("log", "level", flags.logLevel);
  const letsencrypt = acmeFlagsToConfig(flags); // [tls, issue 15]
  if (letsencrypt) set("http", "tls", { ...(input.http?.tls as object), letsencrypt });
  return input as ConfigInput;
}

/** Messages from workers to the supervisor (over the cluster IPC channel). */
export const WORKER_MESSAGE = {
  config: "berth:worker:config",
  ready: "berth:worker:ready",
  fatal: "berth:worker:fatal",
} as const;

export interface MetricsEndpointInfo {
  where: "main" | "own" | "off";
  addr?: string;
  path: string;
}

export type WorkerMessage =
  | {
      type: typeof WORKER_MESSAGE.config;
      workers: number;
      addr: string;
      dataDir: string;
      /** Where the metadata lives (no password), for the start-up line. */
      metadata: string;
      drainMs: number;
      log: { level: string; format: LogFormat; fields: Record<string, unknown> };
      metrics: MetricsEndpointInfo;
    }
  | { type: typeof WORKER_MESSAGE.ready; port?: number }
  | { type: typeof WORKER_MESSAGE.fatal; message: string };

/** The worker count when flags or environment settle it without reading the file (they win over it). */
function knownWorkers(flags: ServeFlags): number | undefined {
  const value = flags.workers ?? process.env.REGISTRY_HTTP_WORKERS;
  if (value === undefined || value.trim() === "") return undefined;
  const n = Number(value);
  return Number.isInteger(n) && n >= 0 ? n : undefined;
}

type WorkerModule = typeof import("./worker.js");

/**
 * The worker's code: the one-file bundle of it that `npm run build` makes (scripts/bundle-worker.mjs)
 * when it is there and not older than the compiled worker.js, else dist/ file by file.
 * BERTH_BUNDLE=0 forces the latter.
 */
async function loadWorker(): Promise<WorkerModule> {
  const bundle = new URL("./worker.bundle.mjs", import.meta.url);
  if (process.env.BERTH_BUNDLE !== "0" && bundle.protocol === "file:") {
    try {
      const { statSync } = await import("node:fs");
      const compiled = new URL("./worker.js", import.meta.url);
      if (statSync(bundle).mtimeMs >= statSync(compiled).mtimeMs)
        return (await import(bundle.href)) as WorkerModule;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" && code !== "ERR_MODULE_NOT_FOUND") throw err;
    }
  }
  return import("./worker.js");
}

export async function serve(flags: ServeFlags): Promise<void> {
  if (cluster.isWorker) {
    await (await loadWorker()).runWorker(flags, true);
    return;
  }
  if (flags.addr !== undefined && flags.addr.trim() === "") throw new Error("--addr is empty");
  if (knownWorkers(flags) === 1) {
    await (await loadWorker()).runWorker(flags, false);
    return;
  }
  await supervise();
}

function supervise(): Promise<void> {
  return new Promise<void>(() => {
    const states = new Map<number, { ready: boolean; fatal?: string }>();
    let log: LineLogger = lineLogger({ level: "info", format: "json", base: { pid: process.pid } });
    let settings: Extract<WorkerMessage, { type: typeof WORKER_MESSAGE.config }> | undefined;
    let started = false; // every worker listened once: from now on a dead worker is replaced
    let announced = false;
    let stopping = false;
    let failedRestarts = 0;
    let metricsPrimary: Promise<{ close(): Promise<void> }> | undefined;

    // A young generation of 4 MB per semi-space instead of V8's default of up to 16: an idle worker keeps
    // several MB less resident, and blob bytes live outside the JS heap anyway. 1 MB saved a few MB more
    // but cost about 30% of manifest GETs per second (more frequent scavenges on the hot path); 4 MB costs
    // none measurably. A flag of the user's own (NODE_OPTIONS or node's command line) wins.
    // One V8 helper thread per worker instead of four: a worker runs one per core already, and each thread
    // holds a stack and malloc memory of its own.
    // glibc gives each thread that allocates an arena of its own (up to 8 per core), kept for the life of
    // the process; two are plenty for a worker whose threads (V8's helpers, libuv's pool) allocate little.
    // Together: about 3 MB less per idle worker (67-69 -> 65-66 MB, two runs each on a loaded machine),
    // and no difference in pulls or manifest GETs per second that the machine's noise would show.
    // The user's own flags and MALLOC_ARENA_MAX win.
    const ownFlags = `${process.execArgv.join(" ")} ${process.env.NODE_OPTIONS ?? ""}`;
    const workerFlags = [
      /semi[-_]space/.test(ownFlags) ? [] : ["--max-semi-space-size=4"],
      /v8[-_]pool[-_]size/.test(ownFlags) ? [] : ["--v8-pool-size=1"],
    ].flat();
    if (workerFlags.length > 0) cluster.setupPrimary({ execArgv: [...process.execArgv, ...workerFlags] });
    const workerEnv = process.env.MALLOC_ARENA_MAX === undefined ? { MALLOC_ARENA_MAX: "2" } : {};
    const fork = (env: Record<string, string> = {}): Worker => {
      // Workers ask the supervisor for the metrics of all workers when /metrics is scraped.
      const worker = cluster.fork({ BERTH_METRICS_PRIMARY: "1", ...workerEnv, ...env });
      states.set(worker.id, { ready: false });
      return worker;
    };

    const exitAll = (code: number) => {
      const live = () => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
      for (const worker of live()) worker.process.kill("SIGTERM");
      const deadline = Date.now() + (settings?.drainMs ?? 30_000) + 5_000;
      const check = setInterval(() => {
        if (live().length === 0 || Date.now() > deadline) {
          for (const worker of live()) worker.process.kill("SIGKILL");
          clearInterval(check);
          process.exit(code);
        }
      }, 50);
    };

    const fail = (message: string) => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`berth: ${message}\n`);
      exitAll(1);
    };

    cluster.on("message", (worker, raw: unknown) => {
      const message = raw as WorkerMessage | undefined;
      const state = states.get(worker.id);
      if (!message || typeof message !== "object" || !state) return;
      if (message.type === WORKER_MESSAGE.fatal) {
        state.fatal = message.message;
      } else if (message.type === WORKER_MESSAGE.config && !settings) {
        settings = message;
        log = lineLogger({
          level: message.log.level,
          format: message.log.format,
          base: { pid: process.pid, ...message.log.fields },
        });
        if (message.metrics.where !== "off") {
          const endpoint = message.metrics;
          metricsPrimary = import("../http/metrics-primary.js").then((m) =>
            m.startPrimaryMetrics(endpoint, log),
          );
          metricsPrimary.catch((err: Error) => fail(`metrics: ${err.message}`));
        }
        for (let i = 1; i < message.workers; i++) fork();
      } else if (message.type === WORKER_MESSAGE.ready) {
        state.ready = true;
        failedRestarts = 0;
        if (!announced && settings) {
          announced = true;
          log.info(
            {
              addr: settings.addr,
              port: message.port,
              dataDir: settings.dataDir,
              workers: settings.workers,
              metadata: settings.metadata,
            },
            `berth listening on ${settings.addr}, data in ${settings.dataDir}`,
          );
        }
        if (!started && settings && [...states.values()].filter((s) => s.ready).length >= settings.workers) {
          started = true;
        }
      }
    });

    cluster.on("exit", (worker, code, signal) => {
      const state = states.get(worker.id);
      states.delete(worker.id);
      if (stopping) return;
      const why = state?.fatal ?? `a worker exited with ${signal ?? `code ${code}`} while starting`;
      if (!state?.ready) {
        if (!started) return fail(why);
        // A replacement failed before it listened; the others still serve. Try again, more slowly.
        failedRestarts++;
        const delay = Math.min(60_000, 500 * 2 ** failedRestarts);
        log.error(
          { worker: worker.process.pid, code, signal, retryMs: delay },
          `worker failed to start: ${why}`,
        );
        setTimeout(() => !stopping && fork(), delay);
        return;
      }
      log.error({ worker: worker.process.pid, code, signal }, "worker exited; starting another");
      setTimeout(() => !stopping && fork(), 500);
    });

    fork({ BERTH_LEAD: "1" });

    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, "stopping: finishing requests in flight");
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill("SIGTERM");
      const deadline = setTimeout(
        () => {
          for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill("SIGKILL");
          process.exit(1);
        },
        (settings?.drainMs ?? 30_000) + 5_000,
      );
      deadline.unref();
      const check = setInterval(() => {
        if (Object.keys(cluster.workers ?? {}).length === 0) {
          clearInterval(check);
          log.info({}, "stopped");
          process.exit(0);
        }
      }, 50);
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
  });
}
