/**
 * A private containerd for `ctr`: its own root, state, socket and config (CRI plugin disabled),
 * started by the test and stopped (then killed if it must be) in afterAll.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { tempDir } from "../../helpers/server.js";
import { alive, removeTree, track, trackDir, untrack } from "./cleanup.js";
import { type RunOptions, type RunResult, requireTool, run, sleep, waitFor } from "./exec.js";

export interface Containerd {
  dir: string;
  socket: string;
  namespace: string;
  process: ChildProcess;
  logs: string[];
  /** Runs `ctr -a SOCKET -n NAMESPACE ...args`. */
  ctr(args: string[], options?: RunOptions): Promise<RunResult>;
  /** Stops containerd (SIGTERM, then SIGKILL) and removes its directory. Safe to call twice. */
  stop(): Promise<void>;
}

export async function startContainerd(): Promise<Containerd> {
  const bin = requireTool("containerd");
  const ctrBin = requireTool("ctr");
  const dir = tempDir("berth-e2e-containerd-");
  trackDir(dir);
  const socket = path.join(dir, "containerd.sock");
  const config = path.join(dir, "config.toml");
  const q = (s: string) => JSON.stringify(s);
  writeFileSync(
    config,
    [
      "version = 2",
      `root = ${q(path.join(dir, "root"))}`,
      `state = ${q(path.join(dir, "state"))}`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      "",
      "[grpc]",
      `  address = ${q(socket)}`,
      "",
      "[ttrpc]",
      `  address = ${q(`${socket}.ttrpc`)}`,
      "",
      "[debug]",
      '  address = ""',
      '  level = "info"',
      "",
      "[metrics]",
      '  address = ""',
      "",
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = ${q(path.join(dir, "opt"))}`,
      "",
    ].join("\n"),
  );
  const child = spawn(bin, ["--config", config], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const logs: string[] = [];
  const keep = (chunk: Buffer) => {
    logs.push(...chunk.toString().split("\n").filter(Boolean));
    if (logs.length > 5_000) logs.splice(0, logs.length - 5_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((resolve) =>
    child.on("exit", () => {
      untrack(child.pid);
      resolve();
    }),
  );
  track(child.pid, "containerd");
  const namespace = "berth-e2e";
  const ctr = (args: string[], options: RunOptions = {}) =>
    run(ctrBin, ["-a", socket, "-n", namespace, ...args], options);

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const done = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!done) {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {}
        await Promise.race([exited, sleep(5_000)]);
      }
    }
    if (child.pid && alive(child.pid)) throw new Error(`containerd (pid ${child.pid}) would not exit`);
    await removeTree(dir);
  };

  try {
    await waitFor(
      `containerd on ${socket}`,
      async () => {
        if (child.exitCode !== null) return true;
        const r = await ctr(["version"], { allowFailure: true, timeoutMs: 5_000 });
        return r.code === 0;
      },
      30_000,
      200,
    );
    if (child.exitCode !== null) throw new Error(`containerd exited with ${child.exitCode}`);
  } catch (e) {
    await stop().catch(() => {});
    throw new Error(`${String(e)}\n${logs.slice(-30).join("\n")}`);
  }
  return { dir, socket, namespace, process: child, logs, ctr, stop };
}

export interface CtrImage {
  ref: string;
  type: string;
  digest: string;
  size: string;
  platforms: string[];
}

/** Parses `ctr images ls` (columns: REF TYPE DIGEST SIZE PLATFORMS LABELS; SIZE has a space). */
export function parseCtrImages(stdout: string): CtrImage[] {
  const rows: CtrImage[] = [];
  for (const line of stdout.split("\n").slice(1)) {
    const m = /^(\S+)\s+(\S+)\s+(sha256:[0-9a-f]{64})\s+(\S+ \S+)\s+(\S+)/.exec(line.trim());
    if (m) rows.push({ ref: m[1]!, type: m[2]!, digest: m[3]!, size: m[4]!, platforms: m[5]!.split(",") });
  }
  return rows;
}
