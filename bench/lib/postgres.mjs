// A throwaway PostgreSQL 15 server for the PostgreSQL rows: initdb into a folder under the run's work
// directory, its own loopback port (and unix socket in that folder), fsync on as a production server
// would run it, trust authentication for the `berth` role. PostgreSQL refuses to run as root, so when
// the bench runs as root the folder is handed to the `postgres` system user and the server runs as it.
import { spawn } from "node:child_process";
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import {
  pgCommand as clusterCommand,
  initdbArgs,
  PG_USER,
  postgresOwner,
  serverArgs,
} from "../../scripts/postgres-cluster.mjs";
import { registerCleanup } from "./servers.mjs";
import { freePort, log, run, sleep } from "./util.mjs";

export const PG_BIN = process.env.BENCH_PG_BIN ?? "/usr/lib/postgresql/15/bin";
const USER = PG_USER;

/** Why PostgreSQL rows cannot run here, or null when they can. */
export function postgresUnavailable() {
  for (const bin of ["initdb", "postgres", "pg_isready", "createdb"]) {
    if (!existsSync(path.join(PG_BIN, bin)))
      return `PostgreSQL binaries not found (${path.join(PG_BIN, bin)}; apt-get install postgresql-15, or set BENCH_PG_BIN)`;
  }
  return null;
}

/** [cmd, args] running a PostgreSQL binary, as the postgres user when we are root. */
const pgCommand = (binary, args) => clusterCommand(PG_BIN, binary, args);

function postmasterPid(data) {
  try {
    return Number(readFileSync(path.join(data, "postmaster.pid"), "utf8").split("\n")[0]);
  } catch {
    return null;
  }
}

/**
 * Starts the server. Returns { port, url(db), createDatabase(name), stop() }. It is stopped by
 * stop(), by the bench's cleanup on exit, and by a watchdog shell should the bench die.
 */
export async function startPostgres(workDir) {
  const dir = path.join(workDir, "postgres");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const who = postgresOwner();
  if (who) chownSync(dir, who.uid, who.gid);
  const data = path.join(dir, "data");
  const [initCmd, initArgs] = pgCommand("initdb", initdbArgs(data));
  await run(initCmd, initArgs, { timeoutMs: 120_000 });
  const port = await freePort();
  const [cmd, args] = pgCommand(
    "postgres",
    serverArgs(data, port, dir, { max_connections: 400, shared_buffers: "128MB" }),
  );
  const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "ignore"] });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const kill = (signal) => {
    const pid = postmasterPid(data);
    try {
      if (pid) process.kill(pid, signal);
      else child.kill(signal);
    } catch {
      // Gone.
    }
  };
  const unregister = registerCleanup(() => kill("SIGQUIT"));
  // Should the bench be killed outright, the watchdog stops the server a few seconds later.
  const watchdog = spawn(
    "sh",
    [
      "-c",
      'while kill -0 "$WATCH" 2>/dev/null; do sleep 2; done; pid=$(head -n1 "$DATA/postmaster.pid" 2>/dev/null) && kill -INT "$pid" 2>/dev/null',
    ],
    { env: { ...process.env, WATCH: String(process.pid), DATA: data }, detached: true, stdio: "ignore" },
  );
  watchdog.unref();
  const [readyCmd, readyArgs] = pgCommand("pg_isready", ["-h", "127.0.0.1", "-p", String(port), "-q"]);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`postgres exited at start (code ${child.exitCode})`);
    if ((await run(readyCmd, readyArgs, { allowFailure: true })).code === 0) break;
    if (Date.now() > deadline) {
      kill("SIGQUIT");
      throw new Error("postgres did not accept connections within 30 s");
    }
    await sleep(100);
  }
  log(`postgres ready on 127.0.0.1:${port} (postmaster pid ${postmasterPid(data)})`);
  const url = (db) => `postgres://${USER}@127.0.0.1:${port}/${db}`;
  return {
    port,
    url,
    async createDatabase(name) {
      const [c, a] = pgCommand("createdb", ["-h", "127.0.0.1", "-p", String(port), "-U", USER, name]);
      await run(c, a);
      return url(name);
    },
    async stop() {
      watchdog.kill("SIGKILL");
      kill("SIGINT");
      const timer = setTimeout(() => kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(timer);
      unregister();
      rmSync(dir, { recursive: true, force: true });
      log("postgres stopped");
    },
  };
}
