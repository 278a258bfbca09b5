import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { inject } from "vitest";
import {
  initdbArgs,
  PG_USER,
  pgCommand,
  postgresOwner,
  serverArgs,
} from "../../scripts/postgres-cluster.mjs";
import { freePort } from "./server.js";

/**
 * A throwaway PostgreSQL 15 server for tests: initdb into a temporary folder, its own port on
 * 127.0.0.1 (and its unix socket in that folder), fsync off, trust authentication for the `berth`
 * superuser. PostgreSQL refuses to run as root, so when the tests run as root the folder is given
 * to the `postgres` system user and the server runs as that user.
 */

const BIN = process.env.BERTH_TEST_PG_BIN ?? "/usr/lib/postgresql/15/bin";
const USER = PG_USER;

export interface PostgresServer {
  port: number;
  /** The folder holding the cluster and its socket (removed by stop). */
  dir: string;
  /** postgres://berth@127.0.0.1:port/<database> */
  url(database: string): string;
  /** Creates a fresh, empty database and returns its URL. Names are made unique when not given. */
  createDatabase(name?: string): Promise<string>;
  dropDatabase(name: string): Promise<void>;
  /** Runs one statement on a database of the server (default: the maintenance database). */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[], database?: string): Promise<T[]>;
  /** Restarts the server (fast shutdown, then start on the same port): drops every connection. */
  restart(): Promise<void>;
  /** Fast shutdown, keeping the data (an outage); startServer brings it back on the same port. */
  stopServer(): Promise<void>;
  startServer(): Promise<void>;
  stop(): Promise<void>;
}

/** Runs a PostgreSQL binary, as the postgres user when we are root. */
const command = (binary: string, args: string[]) => pgCommand(BIN, binary, args);

let counter = 0;

export interface PostgresOptions {
  /** Extra server settings (`-c name=value`), e.g. ssl. */
  settings?: Record<string, string>;
  /** Files written into the cluster's folder before start, owned by the server's user, mode 0600. */
  files?: Record<string, string>;
  /** Replaces pg_hba.conf. */
  hba?: string;
}

export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresServer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "berth-pg-"));
  const owner = postgresOwner();
  if (owner) chownSync(dir, owner.uid, owner.gid);
  const data = path.join(dir, "data");
  const [initCmd, initArgs] = command("initdb", initdbArgs(data));
  execFileSync(initCmd, initArgs, { stdio: "pipe" });
  const extra: Record<string, string> = { ...options.files };
  if (options.hba !== undefined) extra["pg_hba.conf"] = options.hba;
  for (const [name, content] of Object.entries(extra)) {
    const file = path.join(data, name);
    writeFileSync(file, content, { mode: 0o600 });
    if (owner) chownSync(file, owner.uid, owner.gid);
  }
  const port = await freePort();
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  const logs: string[] = [];

  const launch = async () => {
    const [cmd, args] = command(
      "postgres",
      serverArgs(data, port, dir, {
        fsync: "off",
        synchronous_commit: "off",
        full_page_writes: "off",
        max_connections: 400,
        shared_buffers: "64MB",
        ...options.settings,
      }),
    );
    const proc = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    child = proc;
    const keep = (chunk: Buffer) => {
      logs.push(chunk.toString());
      if (logs.length > 200) logs.splice(0, logs.length - 200);
    };
    proc.stdout?.on("data", keep);
    proc.stderr?.on("data", keep);
    exited = new Promise((resolve) => proc.once("exit", () => resolve()));
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`postgres exited at start:\n${logs.join("")}`);
      try {
        const client = new pg.Client({ host: "127.0.0.1", port, user: USER, database: "postgres" });
        await client.connect();
        await client.end();
        return;
      } catch (err) {
        if (Date.now() > deadline)
          throw new Error(`postgres did not start: ${String(err)}\n${logs.join("")}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };

  /** Fast shutdown: SIGINT to the postmaster (whose pid runuser does not forward signals to). */
  const shutdown = async () => {
    if (!child || child.exitCode !== null) return;
    try {
      const pid = Number(readFileSync(path.join(data, "postmaster.pid"), "utf8").split("\n")[0]);
      process.kill(pid, "SIGINT");
    } catch {
      child.kill("SIGINT");
    }
    const timer = setTimeout(() => child?.kill("SIGKILL"), 20_000);
    await exited;
    clearTimeout(timer);
  };

  await launch();
  // A watchdog outside this process: should the test process die without stopping the server
  // (a killed worker, a crash), it stops the server and removes its folder within a few seconds.
  const watchdog = spawn(
    "sh",
    [
      "-c",
      'while kill -0 "$WATCH" 2>/dev/null; do sleep 2; done; ' +
        'pid=$(head -n1 "$DATA/postmaster.pid" 2>/dev/null) && kill -INT "$pid" 2>/dev/null; ' +
        'sleep 5; rm -rf "$DIR"',
    ],
    {
      env: { ...process.env, WATCH: String(process.pid), DATA: data, DIR: dir },
      detached: true,
      stdio: "ignore",
    },
  );
  watchdog.unref();
  const onExit = () => {
    try {
      const pid = Number(readFileSync(path.join(data, "postmaster.pid"), "utf8").split("\n")[0]);
      process.kill(pid, "SIGQUIT");
    } catch {}
  };
  process.once("exit", onExit);

  const url = (database: string) => `postgres://${USER}@127.0.0.1:${port}/${database}`;
  const query = async <T>(text: string, params: unknown[] = [], database = "postgres"): Promise<T[]> => {
    const client = new pg.Client({ connectionString: url(database) });
    await client.connect();
    try {
      return (await client.query(text, params)).rows as T[];
    } finally {
      await client.end();
    }
  };

  return {
    port,
    dir,
    url,
    query,
    async createDatabase(name) {
      const db = name ?? `t_${process.pid}_${++counter}_${Date.now().toString(36)}`;
      await query(`create database "${db}"`);
      return url(db);
    },
    async dropDatabase(name) {
      await query(`drop database if exists "${name}" with (force)`);
    },
    async restart() {
      await shutdown();
      await launch();
    },
    stopServer: shutdown,
    startServer: launch,
    async stop() {
      process.removeListener("exit", onExit);
      watchdog.kill("SIGKILL");
      await shutdown();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Database name for a data directory: a restart with the same directory finds the same database. */
export function databaseNameFor(dataDir: string): string {
  return `berth_${createHash("sha256").update(path.resolve(dataDir)).digest("hex").slice(0, 20)}`;
}

/** The base URL of the run's server started by test/helpers/postgres-global.ts, if any. */
export function sharedPostgresUrl(): string | undefined {
  if (process.env.BERTH_TEST_PG_URL) return process.env.BERTH_TEST_PG_URL;
  try {
    return inject("berthPostgresUrl") || undefined;
  } catch {
    return undefined;
  }
}

/** Creates `database` on the server at `baseUrl` unless it exists; returns its URL. */
export async function ensureDatabase(baseUrl: string, database: string): Promise<string> {
  const client = new pg.Client({ connectionString: baseUrl });
  await client.connect();
  try {
    const found = await client.query("select 1 from pg_database where datname = $1", [database]);
    if (found.rowCount === 0) {
      try {
        await client.query(`create database "${database}"`);
      } catch (err) {
        // Two files racing to create the same database: the other one won.
        if ((err as { code?: string }).code !== "42P04") throw err;
      }
    }
  } finally {
    await client.end();
  }
  const u = new URL(baseUrl);
  u.pathname = `/${database}`;
  return u.toString();
}
