import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  databaseNameFor,
  ensureDatabase,
  type PostgresServer,
  sharedPostgresUrl,
  startPostgres,
} from "./postgres.js";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const CLI = path.join(ROOT, "dist/cli/berth.cjs");

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export function tempDir(prefix = "berth-test-"): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Which metadata database the integration tests give Berth: BERTH_TEST_DB=postgres, or SQLite. */
export const TEST_DB: "sqlite" | "postgres" =
  process.env.BERTH_TEST_DB === "postgres" ? "postgres" : "sqlite";

let ownPostgres: Promise<PostgresServer> | null = null;

/** The suite's PostgreSQL server (test/helpers/postgres-global.ts), or one of this file's own. */
async function postgresBase(): Promise<string> {
  const shared = sharedPostgresUrl();
  if (shared) return shared;
  ownPostgres ??= startPostgres();
  return (await ownPostgres).url("postgres");
}

/**
 * The environment that gives a berth process working on `dataDir` its metadata database: nothing on
 * SQLite (the file lives in the data directory); on PostgreSQL, REGISTRY_DATABASE_URL naming a
 * database of that directory's own, so that a restart on the same directory finds its data again.
 */
export async function databaseEnv(dataDir: string): Promise<Record<string, string>> {
  if (TEST_DB !== "postgres") return {};
  const url = await ensureDatabase(await postgresBase(), databaseNameFor(dataDir));
  return { REGISTRY_DATABASE_URL: url };
}

export interface StartOptions {
  /** Reuse a data directory (for restart tests); a fresh temp dir otherwise. */
  dataDir?: string;
  /** Extra `berth serve` arguments. */
  args?: string[];
  env?: Record<string, string>;
  /** Worker processes; tests default to 1 to keep the 2-core machine free. */
  workers?: number;
  port?: number;
  /** URL scheme to wait on (https when TLS flags are passed). */
  scheme?: "http" | "https";
  /** Name the data directory with REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY instead of --data-dir. */
  dataDirViaEnv?: boolean;
  /** Keep stdout/stderr lines here (logs are JSON). */
  captureLogs?: boolean;
  /** Run inside this network namespace (test/helpers/netns.ts), reached at its address. */
  netns?: { exec: string[]; address: string };
}

export interface Berth {
  url: string;
  host: string;
  port: number;
  dataDir: string;
  process: ChildProcess;
  logs: string[];
  /** SIGTERM and wait for exit. */
  stop(): Promise<number | null>;
  /** SIGKILL the whole process group (primary and workers), as a crash would. */
  kill(): Promise<void>;
  /** Stop and remove the data directory (unless it was given). */
  cleanup(): Promise<void>;
}

/** Starts a real `berth serve` from dist/ on a free loopback port and waits until /v2/ answers. */
export async function startBerth(options: StartOptions = {}): Promise<Berth> {
  const port = options.port ?? (await freePort());
  const ownDir = !options.dataDir;
  const dataDir = options.dataDir ?? tempDir();
  const args = [
    CLI,
    "serve",
    "--addr",
    `127.0.0.1:${port}`,
    ...(options.dataDirViaEnv ? [] : ["--data-dir", dataDir]),
    "--workers",
    String(options.workers ?? 1),
    ...(options.args ?? []),
  ];
  const storageEnv = await testStorageEnv(dataDir);
  const [command, ...prefix] = options.netns ? [...options.netns.exec, process.execPath] : [process.execPath];
  const child = spawn(command as string, [...prefix, ...args], {
    cwd: dataDir,
    env: {
      ...process.env,
      ...(await databaseEnv(dataDir)),
      ...storageEnv,
      ...(options.dataDirViaEnv ? { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dataDir } : {}),
      ...options.env,
    },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const logs: string[] = [];
  const keep = (chunk: Buffer) => {
    if (options.captureLogs !== false) logs.push(...chunk.toString().split("\n").filter(Boolean));
    if (logs.length > 20_000) logs.splice(0, logs.length - 20_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const scheme = options.scheme ?? "http";
  const address = options.netns?.address ?? "127.0.0.1";
  const url = `${scheme}://${address}:${port}`;
  const deadline = Date.now() + 30_000;
  let ready = false;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) break;
    if (await portOpen(port, address)) {
      ready = true;
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!ready) {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {}
    throw new Error(`berth did not start on ${url}:\n${logs.slice(-40).join("\n")}`);
  }
  const berth: Berth = {
    url,
    host: `${address}:${port}`,
    port,
    dataDir,
    process: child,
    logs,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
    async kill() {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {}
      await exited;
      // Give the kernel a moment to release the listening socket of the workers.
      await new Promise((r) => setTimeout(r, 100));
    },
    async cleanup() {
      const timer = setTimeout(() => {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {}
      }, 15_000);
      await berth.stop();
      clearTimeout(timer);
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return berth;
}

/** Whether something accepts TCP connections on `host:port`. */
export function portOpen(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Buckets made for data directories, so that a restart on the same directory finds its blobs again. */
const buckets = new Map<string, string>();

/**
 * BERTH_TEST_STORAGE=s3 runs every test server on the S3 store: one fresh bucket per data directory, on
 * the S3 server that the global setup (test/helpers/s3-global-setup.ts) started once for the run.
 */
async function testStorageEnv(dataDir: string): Promise<Record<string, string>> {
  if (process.env.BERTH_TEST_STORAGE !== "s3") return {};
  const endpoint = process.env.BERTH_TEST_S3_ENDPOINT;
  if (!endpoint)
    throw new Error("BERTH_TEST_STORAGE=s3 needs BERTH_TEST_S3_ENDPOINT (the global setup sets it)");
  let bucket = buckets.get(dataDir);
  if (!bucket) {
    const { createBucket } = await import("./s3.js");
    bucket = await createBucket(
      `t${path
        .basename(dataDir)
        .toLowerCase()
        .replace(/[^a-z0-9-]/g, "")}`,
    );
    buckets.set(dataDir, bucket);
  }
  return s3StorageEnv(bucket);
}

/** The environment that puts a berth process's blobs in `bucket` on the run's S3 server. */
export function s3StorageEnv(bucket: string): Record<string, string> {
  const endpoint = process.env.BERTH_TEST_S3_ENDPOINT;
  if (!endpoint)
    throw new Error("no BERTH_TEST_S3_ENDPOINT (the postgres-s3 project's global setup sets it)");
  return {
    REGISTRY_STORAGE: "s3",
    REGISTRY_STORAGE_S3_REGION: "us-east-1",
    REGISTRY_STORAGE_S3_REGIONENDPOINT: endpoint,
    REGISTRY_STORAGE_S3_BUCKET: bucket,
    REGISTRY_STORAGE_S3_ACCESSKEY: process.env.BERTH_TEST_S3_ACCESS_KEY ?? "test",
    REGISTRY_STORAGE_S3_SECRETKEY: process.env.BERTH_TEST_S3_SECRET_KEY ?? "testsecret",
    REGISTRY_STORAGE_S3_FORCEPATHSTYLE: "true",
    REGISTRY_STORAGE_S3_CHUNKSIZE: "5242880",
  };
}
