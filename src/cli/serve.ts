import cluster from "node:cluster";
import os from "node:os";
import type { Command } from "commander";
import pino, { type Logger } from "pino";
import { loadConfig } from "../config/load.js";
import { type Config, type ConfigInput, dataDirOf } from "../config/schema.js";
import { ACME_FLAG_NAMES, type AcmeFlags, acmeFlagsToConfig, addAcmeOptions } from "./tls-flags.js";

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

/** "0.0.0.0:5000", ":5000", "[::]:5000", "localhost:5000" -> host and port. */
export function parseAddr(addr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(addr.trim());
  if (!m)
    throw new Error(`invalid address ${JSON.stringify(addr)}: expected host:port, for example 0.0.0.0:5000`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`invalid port in ${JSON.stringify(addr)}`);
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

/** Which flag set which key, for `config check` and error messages. */
const FLAG_NAMES: Record<string, string> = {
  "http.addr": "--addr",
  "storage.filesystem.rootdirectory": "--data-dir",
  "http.workers": "--workers",
  "storage.maintenance.readonly.enabled": "--read-only",
  "http.tls.certificate": "--tls-cert",
  "http.tls.key": "--tls-key",
  "log.level": "--log-level",
  ...ACME_FLAG_NAMES, // [tls, issue 15]
};

function flagsToConfig(flags: ServeFlags): ConfigInput {
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

export function makeLogger(config: Config): Logger {
  return pino({
    level: config.log.level,
    base: { pid: process.pid, ...(config.log.fields ?? {}) },
    redact: {
      paths: ["req.headers.authorization", "headers.authorization", "password", "*.password"],
      censor: "[redacted]",
    },
  });
}

function workerCount(config: Config): number {
  return config.http.workers > 0 ? config.http.workers : os.availableParallelism();
}

export function registerServeCommand(program: Command): void {
  const command = program
    .command("serve", { isDefault: true })
    .description("run the registry (the OCI distribution API, the web UI and Berth's API on one port)")
    .option("--addr <host:port>", "address to listen on (http.addr)", undefined)
    .option(
      "--data-dir <dir>",
      "where blobs and the database live (storage.filesystem.rootdirectory); with storage.s3, the database and scratch only",
      undefined,
    )
    .option("-c, --config <file>", "YAML configuration file (default /etc/berth/config.yml when present)")
    .option("--workers <n>", "worker processes; 0 means one per core (http.workers)")
    .option("--read-only", "refuse pushes and deletes, keep serving pulls (storage.maintenance.readonly)")
    .option(
      "--tls-cert <file>",
      "PEM certificate chain; serves HTTPS with HTTP/1.1 and HTTP/2 (http.tls.certificate)",
    )
    .option("--tls-key <file>", "PEM private key (http.tls.key)")
    .option("--log-level <level>", "trace, debug, info, warn or error (log.level)");
  addAcmeOptions(command) // [tls, issue 15]
    .action(async (flags: ServeFlags) => {
      await serve(flags);
    });
}

export async function serve(flags: ServeFlags): Promise<void> {
  const { config, warnings } = loadConfig({
    file: flags.config,
    flags: flagsToConfig(flags),
    flagNames: FLAG_NAMES,
  });
  const log = makeLogger(config);
  const workers = workerCount(config);
  if (cluster.isPrimary) {
    for (const warning of warnings) log.warn(warning);
    const dataDir = dataDirOf(config);
    // [auth wiring, issue 3] htpasswd/rules/token key checked (and key generated) once, before any worker.
    (await import("../auth/preflight.js")).checkAuth(config, dataDir);
    // [ops wiring, issue 4] before any fork: metrics.addr listener and aggregation of every worker's metrics.
    await (await import("../http/metrics.js")).startPrimaryMetrics(config, log);
    if (workers <= 1) {
      await runWorker(config, log, { dataDir, workers: 1 }, true);
      return;
    }
    await runPrimary(config, log, dataDir, workers);
    return;
  }
  await runWorker(config, log, null, process.env.BERTH_MIGRATE === "1");
}

async function runPrimary(config: Config, log: Logger, dataDir: string, workers: number): Promise<void> {
  // The primary only supervises: it loads no HTTP or database code, so that it stays small.
  // The first worker migrates the database; the others start once it listens.
  let stopping = false;
  let announced = false;
  const fork = (env: Record<string, string> = {}) => cluster.fork(env);
  cluster.on("listening", (_worker, address) => {
    if (announced) return;
    announced = true;
    for (let i = 1; i < workers; i++) fork();
    log.info(
      { addr: config.http.addr, port: address.port, dataDir, workers },
      `berth listening on ${config.http.addr}, data in ${dataDir}`,
    );
  });
  cluster.on("exit", (worker, code, signal) => {
    if (stopping) return;
    log.error({ worker: worker.process.pid, code, signal }, "worker exited; starting another");
    setTimeout(() => fork(announced ? {} : { BERTH_MIGRATE: "1" }), 500);
  });
  fork({ BERTH_MIGRATE: "1" });
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "stopping: finishing requests in flight");
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill("SIGTERM");
    const deadline = setTimeout(() => {
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill("SIGKILL");
      process.exit(1);
    }, config.http.draintimeout + 5_000);
    deadline.unref();
    const check = setInterval(() => {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        clearInterval(check);
        log.info("stopped");
        process.exit(0);
      }
    }, 50);
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

async function runWorker(
  config: Config,
  log: Logger,
  single: { dataDir: string; workers: number } | null,
  migrate: boolean,
): Promise<void> {
  const { openRuntime } = await import("./runtime.js");
  const { buildApp } = await import("../http/app.js");
  const runtime = await openRuntime(config, { migrate });
  const { tlsServerOptions, watchTls, managedTlsMode } = await import("../http/tls.js"); // [auth wiring, issue 3]
  const fileTls = tlsServerOptions(config);
  // [tls, issue 15] ACME or the private CA of `berth tls init`; loaded only when one is in use.
  const tlsMode = fileTls ? undefined : managedTlsMode(config, runtime.dataDir);
  const managedTls = tlsMode
    ? await (await import("../http/managed-tls.js")).openManagedTls(tlsMode, config, runtime, log)
    : undefined;
  const app = await buildApp(
    {
      config,
      dataDir: runtime.dataDir,
      registry: runtime.registry,
      metadata: runtime.metadata,
      storage: runtime.storage,
      log,
    },
    managedTls?.serverOptions ?? fileTls ?? {},
  );
  managedTls?.registerRoutes(app); // [tls, issue 15] /ca.crt
  const { host, port } = parseAddr(config.http.addr);
  await app.listen({ host, port });
  const stopManagedTls = managedTls ? await managedTls.start(app) : async () => {}; // [tls, issue 15]
  const stopTlsWatch = watchTls(app, config, log); // [auth wiring, issue 3] reload cert/key on change
  const stopJobs = (await import("../registry/jobs.js")).startBackgroundJobs(runtime, config, log); // [gc wiring, issue 6] gc, retention, upload purging (one process at a time, by lease)
  if (single) {
    log.info(
      { addr: config.http.addr, port, dataDir: single.dataDir, workers: 1 },
      `berth listening on ${config.http.addr}, data in ${single.dataDir}`,
    );
  }
  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    if (single) log.info({ signal }, "stopping: finishing requests in flight");
    const timer = setTimeout(() => {
      log.warn("drain timeout reached; closing remaining connections");
      process.exit(1);
    }, config.http.draintimeout);
    timer.unref();
    try {
      stopTlsWatch();
      await stopManagedTls(); // [tls, issue 15]
      await stopJobs(); // [gc wiring, issue 6] the running job stops after its current batch
      await app.close();
      await runtime.registry.flushPulls();
      await runtime.close();
    } finally {
      if (single) log.info("stopped");
      process.exit(0);
    }
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}
