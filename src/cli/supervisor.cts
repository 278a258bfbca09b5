/**
 * The supervisor of `berth serve`: it forks the worker processes (src/cli/worker.ts), hears from them
 * over the cluster IPC channel, replaces a worker that dies after it served and stops them all on
 * SIGTERM or SIGINT.
 *
 * CommonJS, and loading nothing but node:cluster, the line writer and (when metrics are on) the
 * metrics relay, all CommonJS: the `berth` command (src/cli/berth.cts) runs it without Node's ES module
 * loader or commander, about 2 MB less resident than an ES module entry with commander.
 * The ES module path (`node dist/cli/main.js serve`, src/cli/serve.ts) runs the same code.
 *
 * The first worker it forks (the lead) reads and checks the configuration and reports it; the
 * supervisor then forks the other workers at once, while the lead is still opening the database, so
 * that they start side by side. A worker that fails before it ever listened (an invalid configuration,
 * a busy port, an address that is not host:port) stops the whole process with its message and exit
 * code 1, instead of being restarted for ever; a worker that dies after it served is replaced.
 */
import cluster, { type Worker } from "node:cluster";
import {
  memoryAddonFile,
  nativeRelease,
  releaseWhenIdle,
  SERVING_BUDGET_ENV,
  STARTUP_INTERRUPT_BUDGET,
  V8_INTERRUPT_BUDGET,
} from "../http/idle-memory.cjs";
import { type LineLogger, type LogFormat, lineLogger } from "./log-line.cjs";

type MetricsPrimaryModule = typeof import("../http/metrics-primary.cjs");

/** Messages from workers to the supervisor (over the cluster IPC channel). */
export const WORKER_MESSAGE = {
  config: "berth:worker:config",
  ready: "berth:worker:ready",
  fatal: "berth:worker:fatal",
  /** A worker asks for the checked configuration (answered with SUPERVISOR_MESSAGE.config). */
  wantConfig: "berth:worker:want-config",
  /** The configuration process's answer: the configuration as checked, and its warnings. */
  checked: "berth:worker:checked",
} as const;

/** Messages from the supervisor to workers. */
export const SUPERVISOR_MESSAGE = { config: "berth:supervisor:config" } as const;

/**
 * Set in the environment of the process that reads and checks the configuration (and then exits), so
 * that no worker loads the configuration schema (zod).
 */
export const CONFIG_CHECK_ENV = "BERTH_CONFIG_CHECK";

/** The configuration as checked, passed from the configuration process to every worker. */
export interface CheckedConfig {
  /** The configuration (src/config/schema.ts), as JSON. */
  config: unknown;
  warnings: string[];
}

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
  | { type: typeof WORKER_MESSAGE.fatal; message: string }
  | { type: typeof WORKER_MESSAGE.wantConfig }
  | ({ type: typeof WORKER_MESSAGE.checked } & CheckedConfig);

/** The worker count when flags or environment settle it without reading the file (they win over it). */
export function knownWorkers(flags: { workers?: string }): number | undefined {
  const value = flags.workers ?? process.env.REGISTRY_HTTP_WORKERS;
  if (value === undefined || value.trim() === "") return undefined;
  const n = Number(value);
  return Number.isInteger(n) && n >= 0 ? n : undefined;
}

export function supervise(): Promise<void> {
  return new Promise<void>(() => {
    const states = new Map<number, { ready: boolean; fatal?: string }>();
    let log: LineLogger = lineLogger({ level: "info", format: "json", base: { pid: process.pid } });
    let settings: Extract<WorkerMessage, { type: typeof WORKER_MESSAGE.config }> | undefined;
    let started = false; // every worker listened once: from now on a dead worker is replaced
    let announced = false;
    let stopping = false;
    let failedRestarts = 0;
    let metricsPrimary: Promise<{ close(): Promise<void> }> | undefined;
    // Memory back to the system once the supervisor rests after start-up and after its workers' messages
    // (src/http/idle-memory.cts): about 0.5 MB here, where the rest is Node's own.
    const idle = releaseWhenIdle(() => nativeRelease(memoryAddonFile(__dirname))?.(), undefined, false);

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
    const ownBudget = /interrupt[-_]budget(=|\s|$)/.test(ownFlags);
    const workerFlags = [
      /semi[-_]space/.test(ownFlags) ? [] : ["--max-semi-space-size=4"],
      ownBudget ? [] : [`--interrupt-budget=${STARTUP_INTERRUPT_BUDGET}`],
      /v8[-_]pool[-_]size/.test(ownFlags) ? [] : ["--v8-pool-size=1"],
    ].flat();
    if (workerFlags.length > 0) cluster.setupPrimary({ execArgv: [...process.execArgv, ...workerFlags] });
    const workerEnv: Record<string, string> = {
      ...(process.env.MALLOC_ARENA_MAX === undefined ? { MALLOC_ARENA_MAX: "2" } : {}),
      // Set back by the worker at its first connection (src/http/idle-memory.cts).
      ...(ownBudget ? {} : { [SERVING_BUDGET_ENV]: String(V8_INTERRUPT_BUDGET) }),
    };
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

    // The configuration is read and checked once, by a process of its own that then exits, forked
    // beside the lead worker; workers ask for it (WORKER_MESSAGE.wantConfig) and get it as JSON, so
    // that no worker loads the configuration schema (zod: about 4 MB of heap in every worker).
    let checked: CheckedConfig | undefined;
    let checkFatal: string | undefined;
    let waiting: Worker[] = [];
    const answer = (worker: Worker, config: CheckedConfig) => {
      if (worker.isConnected()) worker.send({ type: SUPERVISOR_MESSAGE.config, ...config });
    };
    const checker = cluster.fork({ ...workerEnv, [CONFIG_CHECK_ENV]: "1" });
    checker.on("message", (raw: unknown) => {
      const message = raw as WorkerMessage | undefined;
      if (message?.type === WORKER_MESSAGE.fatal) checkFatal = message.message;
      else if (message?.type === WORKER_MESSAGE.checked && !checked) {
        checked = { config: message.config, warnings: message.warnings };
        for (const worker of waiting) answer(worker, checked);
        waiting = [];
      }
    });
    checker.on("exit", (code, signal) => {
      // Its messages may still be in the channel when it exits: decide once the channel is closed.
      const decide = () =>
        checked || fail(checkFatal ?? `checking the configuration failed (exit ${signal ?? `code ${code}`})`);
      if (checker.isConnected()) checker.once("disconnect", decide);
      else decide();
    });

    cluster.on("message", (worker, raw: unknown) => {
      idle.arm();
      const message = raw as WorkerMessage | undefined;
      const state = states.get(worker.id);
      if (!message || typeof message !== "object" || !state) return;
      if (message.type === WORKER_MESSAGE.wantConfig) {
        if (checked) answer(worker, checked);
        else waiting.push(worker);
        return;
      }
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
          // require(), not import(): an import() would start Node's ES module loader in this process.
          metricsPrimary = new Promise<MetricsPrimaryModule>((resolve) =>
            resolve(require("../http/metrics-primary.cjs") as MetricsPrimaryModule),
          ).then((m) => m.startPrimaryMetrics(endpoint, log));
          metricsPrimary.catch((err: Error) => fail(`metrics: ${err.message}`));
        }
        for (let i = 1; i < message.workers; i++) fork();
      } else if (message.type === WORKER_MESSAGE.ready) {
        state.ready = true;
        failedRestarts = 0;
        // One line for the whole tree, once every worker listens (workers log no line of their own).
        const allReady = settings && [...states.values()].filter((s) => s.ready).length >= settings.workers;
        if (!announced && settings && allReady) {
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
      if (worker === checker) return; // its own handler above
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
      idle.stop();
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
