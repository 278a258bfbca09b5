/**
 * The registry under test. E2E_TARGET=distribution runs the suite against Debian's Distribution
 * (docker-registry) as a reference; anything else (the default) runs it against Berth from dist/.
 * Both are started on a free loopback port with a fresh data directory, and have the same shape.
 * E2E_WORKERS=N starts Berth with N worker processes instead of 1.
 */
import { spawn } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { type Berth, freePort, startBerth, tempDir } from "../../helpers/server.js";
import { track, untrack } from "./cleanup.js";
import { requireTool, sleep } from "./exec.js";

export type TargetName = "berth" | "distribution";

export function targetName(): TargetName {
  const value = (process.env.E2E_TARGET ?? "berth").toLowerCase();
  if (value === "berth" || value === "") return "berth";
  if (value === "distribution" || value === "docker-registry") return "distribution";
  throw new Error(`E2E_TARGET must be "berth" or "distribution", got "${process.env.E2E_TARGET}"`);
}

export interface Registry extends Berth {
  target: TargetName;
}

/** Starts the selected registry. */
export async function startRegistry(): Promise<Registry> {
  const target = targetName();
  // E2E_WORKERS runs Berth with more worker processes (requests of one push then land on several).
  const workers = Number(process.env.E2E_WORKERS ?? 1);
  if (!Number.isInteger(workers) || workers < 1) throw new Error(`E2E_WORKERS must be a positive integer`);
  // Deletes enabled on both, as the client suites delete (skopeo delete).
  const server =
    target === "distribution"
      ? await startDistribution()
      : await startBerth({ workers, env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
  return Object.assign(server, { target });
}

export interface DistributionOptions {
  dataDir?: string;
  port?: number;
  /** Blobs in this bucket (registry:2's s3 driver) instead of the data directory. */
  s3?: { endpoint: string; bucket: string; accessKey: string; secretKey: string; rootdirectory?: string };
  /** storage.filesystem.rootdirectory; default `storage` in the data directory. */
  rootDirectory?: string;
}

/** Starts `docker-registry serve` (Distribution 2.8) with filesystem storage and deletes enabled. */
export async function startDistribution(options: DistributionOptions = {}): Promise<Berth> {
  const bin = requireTool("docker-registry");
  const port = options.port ?? (await freePort());
  const ownDir = !options.dataDir;
  const dataDir = options.dataDir ?? tempDir("berth-e2e-distribution-");
  const configPath = path.join(dataDir, "config.yml");
  writeFileSync(
    configPath,
    [
      "version: 0.1",
      "log:",
      "  level: info",
      "  accesslog:",
      "    disabled: false",
      "storage:",
      ...(options.s3
        ? [
            "  s3:",
            "    region: us-east-1",
            `    regionendpoint: ${options.s3.endpoint}`,
            `    bucket: ${options.s3.bucket}`,
            `    accesskey: ${options.s3.accessKey}`,
            `    secretkey: ${options.s3.secretKey}`,
            "    forcepathstyle: true",
            "    secure: false",
            "    chunksize: 5242880",
            ...(options.s3.rootdirectory ? [`    rootdirectory: ${options.s3.rootdirectory}`] : []),
          ]
        : ["  filesystem:", `    rootdirectory: ${options.rootDirectory ?? path.join(dataDir, "storage")}`]),
      "  delete:",
      "    enabled: true",
      "  maintenance:",
      "    uploadpurging:",
      "      enabled: false",
      "http:",
      `  addr: 127.0.0.1:${port}`,
      "  secret: berth-e2e-not-secret",
      "",
    ].join("\n"),
  );
  const child = spawn(bin, ["serve", configPath], {
    cwd: dataDir,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
    // With AWS_CA_BUNDLE set (as on these machines) its AWS SDK stops at start-up.
    env: { ...withoutCaBundle(process.env), OTEL_TRACES_EXPORTER: "none" },
  });
  const logs: string[] = [];
  const keep = (chunk: Buffer) => {
    logs.push(...chunk.toString().split("\n").filter(Boolean));
    if (logs.length > 20_000) logs.splice(0, logs.length - 20_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<number | null>((resolve) =>
    child.on("exit", (code) => {
      untrack(child.pid);
      resolve(code);
    }),
  );
  track(child.pid, "docker-registry");
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  let ready = false;
  while (Date.now() < deadline && child.exitCode === null) {
    try {
      const res = await fetch(`${url}/v2/`);
      await res.arrayBuffer();
      if (res.status === 200 || res.status === 401) {
        ready = true;
        break;
      }
    } catch {}
    await sleep(50);
  }
  const killGroup = () => {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {}
  };
  if (!ready) {
    killGroup();
    throw new Error(`docker-registry did not start on ${url}:\n${logs.slice(-40).join("\n")}`);
  }
  const server: Berth = {
    url,
    host: `127.0.0.1:${port}`,
    port,
    dataDir,
    process: child,
    logs,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
    async kill() {
      killGroup();
      await exited;
    },
    async cleanup() {
      const timer = setTimeout(killGroup, 15_000);
      await server.stop();
      clearTimeout(timer);
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

function withoutCaBundle(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { AWS_CA_BUNDLE: _, ...rest } = env;
  return rest;
}
