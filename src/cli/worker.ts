import { existsSync, lstatSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pino, { type Logger } from "pino";
import { parseAddr } from "../config/addr.js";
import { dataDirOf } from "../config/data-dir.js";
import type { Config } from "../config/schema.js";
import { collectWhenIdle } from "../http/memory.js";
// Static: esbuild's bundle gives an import() of this CommonJS module no named exports. It is small.
import { metricsEndpoint, startPrimaryMetrics } from "../http/metrics-primary.cjs";
import { databaseTarget, describeTarget } from "../metadata/target.js";
import { textLine } from "./log-line.cjs";
import {
  type CheckedConfig,
  FLAG_NAMES,
  flagsToConfig,
  type ServeFlags,
  SUPERVISOR_MESSAGE,
  WORKER_MESSAGE,
  type WorkerMessage,
} from "./serve.js";

/**
 * One serving process of `berth serve`: gets the configuration, opens the stores, builds the HTTP app
 * and listens. Run under the supervisor (src/cli/supervisor.cts) or alone with `--workers 1`. Alone, it
 * reads and checks the configuration itself; supervised, it asks the supervisor, which has a process of
 * its own check it once (checkConfig), so that workers never load the schema (zod).
 *
 * The lead worker (the first one forked, or the only process) also does what must happen once:
 * it logs the configuration's warnings, checks the authentication set-up (and generates the token key
 * on first start), and tells the supervisor how many workers to start. Every worker migrates the
 * database if it must: migrations run under SQLite's write lock, so the first migrates and the others
 * find it done (src/metadata/migrations.ts).
 */

/**
 * What Fastify's listen() logs is replaced by this, which the logger drops: Fastify writes a "Server listening
 * at" line per worker and per address, where Berth logs one "berth listening on" line for the whole tree
 * (the supervisor, or the single process of --workers 1).
 */
export const QUIET_LISTEN_TEXT = "berth:listening:quiet";

export function makeLogger(config: Config): Logger {
  const options = {
    level: config.log.level,
    hooks: {
      logMethod(this: Logger, args: Parameters<Logger["info"]>, method: Logger["info"]) {
        if (args[0] !== QUIET_LISTEN_TEXT) method.apply(this, args);
      },
    },
    base: { pid: process.pid, ...(config.log.fields ?? {}) },
    redact: {
      paths: ["req.headers.authorization", "headers.authorization", "password", "*.password"],
      censor: "[redacted]",
    },
  };
  if (config.log.formatter !== "text") return pino(options);
  // pino writes one JSON line per call; text lines are made from it (pino has no text printer of its own).
  return pino(options, {
    write(line: string) {
      try {
        process.stdout.write(textLine(JSON.parse(line) as Record<string, unknown>));
      } catch {
        process.stdout.write(line);
      }
    },
  });
}

export function workerCount(config: Config): number {
  return config.http.workers > 0 ? config.http.workers : os.availableParallelism();
}

/** Where the metadata lives, for the start-up log line (no password). */
function metadataOf(config: Config, dataDir: string): string {
  return describeTarget(databaseTarget(config.database), dataDir);
}

function tell(message: WorkerMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

/**
 * A unix socket left behind by a process that is gone is removed; one that answers is in use and
 * makes the start fail, as a busy TCP port does.
 */
async function clearStaleSocket(file: string): Promise<void> {
  if (!existsSync(file)) return;
  if (!lstatSync(file).isSocket()) {
    throw new Error(`http.addr ${file} exists and is not a socket: refusing to replace it`);
  }
  const alive = await new Promise<boolean>((resolve) => {
    const socket = net.connect(file);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
  if (alive) throw new Error(`listen EADDRINUSE: ${file} is in use by another process`);
  rmSync(file, { force: true });
}

/** Reads and checks the configuration (zod, in src/config/): the file, the environment and the flags. */
async function readConfig(flags: ServeFlags): Promise<{ config: Config; warnings: string[] }> {
  const { loadConfig } = await import("../config/load.js");
  return loadConfig({ file: flags.config, flags: flagsToConfig(flags), flagNames: FLAG_NAMES });
}

/**
 * The supervisor's configuration process: reads and checks the configuration once, hands it to the
 * supervisor for the workers (src/cli/supervisor.cts) and exits; an invalid one stops `berth serve`
 * with its message.
 */
export async function checkConfig(flags: ServeFlags): Promise<void> {
  try {
    const { config, warnings } = await readConfig(flags);
    await tell({ type: WORKER_MESSAGE.checked, config, warnings });
    process.exit(0);
  } catch (err) {
    await tell({ type: WORKER_MESSAGE.fatal, message: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  }
}

/** A supervised worker's configuration: checked by the configuration process, passed on as JSON. */
function configFromSupervisor(): Promise<{ config: Config; warnings: string[] }> {
  return new Promise((resolve) => {
    const onMessage = (raw: unknown) => {
      const message = raw as ({ type?: string } & CheckedConfig) | undefined;
      if (message?.type !== SUPERVISOR_MESSAGE.config) return;
      process.off("message", onMessage);
      resolve({ config: message.config as Config, warnings: message.warnings });
    };
    process.on("message", onMessage);
    void tell({ type: WORKER_MESSAGE.wantConfig });
  });
}

/**
 * Runs a worker. `supervised`: forked by the supervisor, which hears about start-up errors as a
 * message (and stops) instead of restarting this worker for ever. Unsupervised, errors are thrown.
 */
export async function runWorker(flags: ServeFlags, supervised: boolean): Promise<void> {
  const lead = !supervised || process.env.BERTH_LEAD === "1";
  let log: Logger | undefined;
  try {
    const { config, warnings } = supervised ? await configFromSupervisor() : await readConfig(flags);
    log = makeLogger(config);
    await start(config, warnings, log, lead, supervised);
  } catch (err) {
    if (!supervised) throw err;
    const message = err instanceof Error ? err.message : String(err);
    await tell({ type: WORKER_MESSAGE.fatal, message });
    process.exit(1);
  }
}

/**
 * What a caller may change on this server, said once at start-up (by the lead): whether deletes are on
 * (off by default, as in registry:2), and a warning when no authentication is configured, with the
 * command that adds the first user.
 */
function logExposure(config: Config, dataDir: string, log: Logger): void {
  const readOnly = config.storage.maintenance.readonly.enabled;
  const deletes = config.storage.delete.enabled && !readOnly;
  if (readOnly) {
    log.info("read-only mode: pushes and deletes answer 405 UNSUPPORTED; pulls work");
  } else if (deletes) {
    log.info(
      "deletes are on (storage.delete.enabled): manifests, tags, blob links and repositories can be deleted by callers the auth rules grant delete",
    );
  } else {
    log.info(
      "deletes are off (storage.delete.enabled is false, the default, as in registry:2): every delete answers 405 UNSUPPORTED; set storage.delete.enabled: true or REGISTRY_STORAGE_DELETE_ENABLED=true to allow them",
    );
  }
  if (config.auth.htpasswd || config.auth.token) return;
  const may = readOnly ? "pull every repository" : deletes ? "pull, push and delete" : "pull and push";
  const file = path.join(dataDir, "htpasswd");
  log.warn(
    { addr: config.http.addr },
    `no authentication is configured: anyone who can reach ${config.http.addr} may ${may}. ` +
      `Add a user with "berth user add NAME --htpasswd ${file}", then start Berth with ` +
      `REGISTRY_AUTH_HTPASSWD_PATH=${file} (or auth.htpasswd.path in the configuration) to require logins`,
  );
}

async function start(
  config: Config,
  warnings: string[],
  log: Logger,
  lead: boolean,
  supervised: boolean,
): Promise<void> {
  const dataDir = dataDirOf(config);
  const unix = config.http.net === "unix";
  const listenOn = unix ? { path: config.http.addr } : parseAddr(config.http.addr);
  if (lead) {
    for (const warning of warnings) log.warn(warning);
    if (config.http.secret) {
      log.info(
        "http.secret is set but not needed: Berth keeps upload state in its database, not in signed " +
          "client-held state, so it signs nothing with it and replicas need only share the data",
      );
    }
    // [auth wiring, issue 3] htpasswd/rules/token key checked (and key generated) once, before other workers.
    (await import("../auth/preflight.js")).checkAuth(config, dataDir);
    logExposure(config, dataDir, log); // [trust, issue 21] once per server, by the lead
    // [trust, issue 21] secrets 0600 in 0700 folders, before the other workers open the database
    (await import("./private-data.js")).tightenDataDir(config, dataDir, log);

    if (unix) await clearStaleSocket(config.http.addr);
    if (supervised) {
      await tell({
        type: WORKER_MESSAGE.config,
        workers: workerCount(config),
        addr: config.http.addr,
        dataDir,
        metadata: metadataOf(config, dataDir),
        drainMs: config.http.draintimeout,
        log: {
          level: config.log.level,
          format: config.log.formatter === "text" ? "text" : "json",
          fields: config.log.fields ?? {},
        },
        metrics: metricsEndpoint(config),
      });
    } else {
      // [ops wiring, issue 4] a single process serves its own metrics on metrics.addr, if set.
      await startPrimaryMetrics(metricsEndpoint(config), log);
    }
  }
  const { openRuntime } = await import("./runtime.js");
  const { buildApp } = await import("../http/app.js");
  // [adoption, issue 12] the lead adopts a registry:2 directory; the other workers wait for it.
  const runtime = await openRuntime(config, { adopt: lead });
  const jobs = await import("../registry/jobs.js");
  // [trust, issue 21] held from before listening until stopped: `berth db migrate-to` refuses to copy under it
  const endServerLease = await jobs.holdServerLease(runtime.meta, {
    readOnly: config.storage.maintenance.readonly.enabled,
  });
  // [replicas, issue 10] a generated token key lives in the database, shared by every replica
  const tokenKey = await (await import("./token-key.js")).openTokenKey(
    config,
    runtime.metadata,
    runtime.dataDir,
    log,
  );
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
      metadata: runtime.meta,
      storage: runtime.storage,
      log,
      tokenKey,
    },
    managedTls?.serverOptions ?? fileTls ?? {},
  );
  managedTls?.registerRoutes(app); // [tls, issue 15] /ca.crt
  // [events, issue 14] before listening, so that a new endpoint's cursor starts before the first request
  const stopEvents = await (await import("../registry/event-dispatch.js")).startEventDispatcher(
    runtime.meta.events,
    runtime.registry.events,
    config,
    log,
    { readFile: (file) => readFileSync(file, "utf8") },
  );
  await app.listen({ ...listenOn, listenTextResolver: () => QUIET_LISTEN_TEXT });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : undefined;
  if (supervised) await tell({ type: WORKER_MESSAGE.ready, port });
  else {
    log.info(
      { addr: config.http.addr, port, dataDir, workers: 1, metadata: metadataOf(config, dataDir) },
      `berth listening on ${config.http.addr}, data in ${dataDir}`,
    );
  }
  // Signals are handled from here on, before the TLS watch and the jobs start, so that a SIGTERM
  // that arrives just after the server listens still drains.
  // A full garbage collection once the worker rests after start-up or after work (src/http/memory.ts).
  const stopIdleCollection = collectWhenIdle(app.server);
  let stopTlsWatch: () => void = () => {};
  let stopManagedTls: () => Promise<void> = async () => {};
  let stopJobs: () => Promise<void> = async () => {};
  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    if (!supervised) log.info({ signal }, "stopping: finishing requests in flight");
    const timer = setTimeout(() => {
      log.warn("drain timeout reached; closing remaining connections");
      process.exit(1);
    }, config.http.draintimeout);
    timer.unref();
    try {
      stopTlsWatch();
      stopIdleCollection();
      await stopManagedTls(); // [tls, issue 15]
      await stopJobs(); // [gc wiring, issue 6] the running job stops after its current batch
      await app.close();
      await runtime.registry.flushPulls();
      await stopEvents(); // [events, issue 14] pull events written, deliveries in flight finished, leases freed
      await endServerLease(); // [trust, issue 21]
      await runtime.close();
    } finally {
      if (!supervised) log.info("stopped");
      process.exit(0);
    }
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
  if (managedTls) stopManagedTls = await managedTls.start(app); // [tls, issue 15]
  stopTlsWatch = watchTls(app, config, log); // [auth wiring, issue 3] reload cert/key on change
  if (!stopping) stopJobs = jobs.startBackgroundJobs(runtime, config, log); // [gc wiring, issue 6] gc, retention, upload purging (one process at a time, by lease)
}
