// Starting and stopping the two registries under test.
//
// Berth:        node dist/cli/berth.cjs serve --addr 127.0.0.1:PORT --data-dir DIR   (one worker per core)
// Distribution: docker-registry serve config.yml   (filesystem storage, delete enabled, quiet logs)
//
// Each server's stdout/stderr goes to a log file under the run's work directory; nothing is
// printed to the terminal, so logging costs both servers about the same (a write to a file).
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { request } from "./http.mjs";
import { processTree } from "./proc.mjs";
import { freePort, log, sleep } from "./util.mjs";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const BERTH_MAIN = path.join(REPO_ROOT, "dist", "cli", "berth.cjs");
export const DISTRIBUTION_BIN = process.env.BENCH_DISTRIBUTION_BIN ?? "/usr/bin/docker-registry";

const live = new Set();

/** Labels used in tables and JSON. */
export const SERVER_KEYS = ["berth", "distribution"];
export const SERVER_LABELS = { berth: "Berth", distribution: "Distribution" };

/**
 * The configuration both servers get (Distribution's YAML dialect, which Berth reads too): the
 * same storage, quiet logs, no access log, no upload purging, no auth. Berth is given the file
 * explicitly so that no configuration found on the host (/etc/berth/config.yml, REGISTRY_*
 * variables) changes what is measured.
 */
function registryConfig({ addr, dataDir, cache, htpasswd, extraConfig = [], s3, redirect }) {
  const storage = s3
    ? [
        "  s3:",
        `    region: ${s3.region}`,
        `    regionendpoint: ${s3.endpoint}`,
        `    bucket: ${s3.bucket}`,
        `    accesskey: ${s3.accessKey}`,
        `    secretkey: ${s3.secretKey}`,
        "    forcepathstyle: true",
        "    secure: false",
        // Berth streams unless a storage.redirect section asks otherwise; registry:2 redirects
        // unless told not to: say it explicitly for both.
        "  redirect:",
        `    disable: ${redirect ? "false" : "true"}`,
      ]
    : ["  filesystem:", `    rootdirectory: ${dataDir}`];
  return [
    "version: 0.1",
    "log:",
    "  level: error",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    ...(cache ? ["  cache:", "    blobdescriptor: inmemory"] : []),
    ...storage,
    "  delete:",
    "    enabled: true",
    "  maintenance:",
    "    uploadpurging:",
    "      enabled: false",
    "http:",
    `  addr: ${addr}`,
    ...(htpasswd ? ["auth:", "  htpasswd:", "    realm: bench", `    path: ${htpasswd}`] : []),
    ...extraConfig,
    "",
  ].join("\n");
}

/**
 * Starts one registry.
 *   key:       "berth" | "distribution" (what it is reported as)
 *   impl:      "berth" | "distribution" (what actually runs; a Distribution stand-in for Berth is
 *              handy while Berth does not work yet: `--berth-impl distribution`)
 *   dataDir:   storage directory (created if missing)
 *   workDir:   where config and log files go
 *   extraArgs: more command-line arguments for Berth
 *   extraConfig: more lines of YAML for both servers' configuration (top-level keys)
 *   berthConfig: more lines of YAML for Berth only (e.g. its `database:` section)
 *   s3:        { endpoint, bucket, accessKey, secretKey, region }: blobs on S3 instead of dataDir
 *              (Berth still gets --data-dir, for its scratch and, without a database URL, SQLite)
 *   redirect:  with s3, blob GETs answer 307 to a presigned URL (registry:2's default; without it
 *              both servers stream blobs themselves: `storage.redirect.disable: true`)
 */
export async function startServer({
  key,
  impl = key,
  dataDir,
  workDir,
  extraArgs = [],
  readyTimeoutMs = 30_000,
  htpasswd,
  extraConfig = [],
  berthConfig = [],
  s3,
  redirect = false,
  pollMs = 100,
}) {
  mkdirSync(dataDir, { recursive: true });
  mkdirSync(workDir, { recursive: true });
  const port = await freePort();
  const addr = `127.0.0.1:${port}`;
  let cmd;
  let args;
  const configFile = path.join(workDir, `${key}-${impl}.yml`);
  if (impl === "distribution") {
    writeFileSync(
      configFile,
      registryConfig({ addr, dataDir, cache: true, htpasswd, extraConfig, s3, redirect }),
    );
    cmd = DISTRIBUTION_BIN;
    args = ["serve", configFile];
  } else if (impl === "berth") {
    if (!existsSync(BERTH_MAIN)) throw new Error(`${BERTH_MAIN} is missing: run "npm run build" first`);
    // Berth keeps blob descriptors in its database and warns about storage.cache: leave it out.
    writeFileSync(
      configFile,
      registryConfig({
        addr,
        dataDir,
        cache: false,
        htpasswd,
        extraConfig: [...extraConfig, ...berthConfig],
        s3,
        redirect,
      }),
    );
    cmd = process.execPath;
    args = [BERTH_MAIN, "serve", "--config", configFile, "--addr", addr, "--data-dir", dataDir, ...extraArgs];
  } else {
    throw new Error(`unknown server implementation "${impl}"`);
  }
  const logFile = path.join(workDir, `${key}.log`);
  const fd = openSync(logFile, "a");
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith("REGISTRY_")),
  );
  env.NODE_ENV = "production";
  // Distribution's AWS SDK stops at start-up when AWS_CA_BUNDLE is set (as it is on some hosts).
  if (impl === "distribution") delete env.AWS_CA_BUNDLE;
  const spawnedAt = performance.now();
  const child = spawn(cmd, args, { stdio: ["ignore", fd, fd], cwd: workDir, env });
  closeSync(fd);
  const server = {
    key,
    impl,
    label: SERVER_LABELS[key] ?? key,
    port,
    addr,
    baseUrl: `http://${addr}`,
    pid: child.pid,
    dataDir,
    logFile,
    configFile,
    command: [cmd, ...args].join(" "),
    exited: null,
    child,
    stop: () => stopServer(server),
    logTail: (lines = 20) => tail(logFile, lines),
  };
  const exitedPromise = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      server.exited = { code, signal };
      live.delete(server);
      resolve(server.exited);
    });
  });
  server.exitedPromise = exitedPromise;
  live.add(server);

  const deadline = Date.now() + readyTimeoutMs;
  let lastError = "no answer";
  while (Date.now() < deadline) {
    if (server.exited) {
      throw new Error(
        `${server.label} (${impl}) exited with ${server.exited.code ?? server.exited.signal} before answering /v2/:\n${server.logTail()}`,
      );
    }
    try {
      const res = await request(`${server.baseUrl}/v2/`, { timeoutMs: 2000 });
      if (res.status === 200 || res.status === 401) {
        // From spawn to the first answer to GET /v2/ (to within pollMs).
        server.readyMs = performance.now() - spawnedAt;
        server.children = processTree(server.pid).length - 1;
        log(
          `${server.label} (${impl}) ready on ${addr}, pid ${server.pid}, ${server.children} child process(es)`,
        );
        return server;
      }
      lastError = `HTTP ${res.status}`;
    } catch (err) {
      lastError = err.message;
    }
    await sleep(pollMs);
  }
  await stopServer(server);
  throw new Error(
    `${server.label} (${impl}) did not answer GET /v2/ within ${readyTimeoutMs} ms (${lastError}):\n${server.logTail()}`,
  );
}

function tail(file, lines) {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

function cmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return null;
  }
}

/**
 * SIGTERM to the server; if it (or any process it forked) is still there 15 s later, SIGKILL each
 * of them by pid, after checking that the pid still runs the same command line (no pid reuse).
 */
export async function stopServer(server) {
  if (server.exited) return;
  const tree = processTree(server.pid).map((pid) => ({ pid, cmd: cmdline(pid) }));
  try {
    process.kill(server.pid, "SIGTERM");
  } catch {
    // Already gone.
  }
  const deadline = Date.now() + 15_000;
  const alive = () => tree.filter((p) => p.cmd !== null && cmdline(p.pid) === p.cmd);
  while (Date.now() < deadline && alive().length > 0) await sleep(100);
  const left = alive();
  if (left.length > 0) {
    log(
      `${server.label}: pids ${left.map((p) => p.pid).join(", ")} still running 15 s after SIGTERM; sending SIGKILL`,
    );
    for (const p of left) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // Gone.
      }
    }
  }
  await Promise.race([server.exitedPromise, sleep(2000)]);
}

/** Stops every server this process started (used on exit and on Ctrl-C). */
export async function stopAll() {
  await Promise.all([...live].map((s) => stopServer(s)));
}

const cleanups = new Set();

/**
 * Registers a synchronous last-resort cleanup (stopping a database or S3 server the bench started)
 * run by killAllSync; returns a function that unregisters it.
 */
export function registerCleanup(fn) {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** Last-resort cleanup on an unexpected exit: SIGKILL each live server's processes by pid. */
export function killAllSync() {
  for (const fn of [...cleanups]) {
    try {
      fn();
    } catch {
      // Best effort.
    }
  }
  for (const server of live) {
    for (const pid of processTree(server.pid)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Gone.
      }
    }
  }
}
