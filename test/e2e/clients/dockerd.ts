/**
 * A private dockerd for the docker CLI: vfs storage, no iptables, no bridge, its own data root,
 * exec root, pid file, config file and unix socket. dockerd starts (and on SIGTERM stops) its own
 * managed containerd below the exec root; stop() makes sure both are gone.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { tempDir } from "../../helpers/server.js";
import { alive, cmdline, removeTree, track, trackDir, untrack } from "./cleanup.js";
import { type RunOptions, type RunResult, requireTool, run, sleep, waitFor } from "./exec.js";

export interface Dockerd {
  dir: string;
  socket: string;
  /** DOCKER_HOST value. */
  host: string;
  process: ChildProcess;
  logs: string[];
  /** Runs the docker CLI against this daemon (own DOCKER_CONFIG, so no host credentials). */
  docker(args: string[], options?: RunOptions): Promise<RunResult>;
  stop(): Promise<void>;
}

function ping(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request({ socketPath: socket, path: "/_ping", method: "GET", timeout: 2_000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode === 200));
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}

export interface DockerdOptions {
  /** dockerd's storage driver; default vfs (works everywhere, copies every layer in full). */
  storageDriver?: string;
}

/**
 * `daemon`: the daemon.json settings (for example `registry-mirrors`); none by default. Containers it runs
 * reach the host through published ports (docker-proxy), not the outside world (no masquerading).
 */
export async function startDockerd(
  daemon: Record<string, unknown> = {},
  options: DockerdOptions = {},
): Promise<Dockerd> {
  const bin = requireTool("dockerd");
  // E2E_DOCKER_CLI picks another docker CLI binary (several may be installed); PATH decides otherwise.
  const cli = requireTool(process.env.E2E_DOCKER_CLI || "docker");
  const dir = tempDir("berth-e2e-dockerd-");
  trackDir(dir);
  const socket = path.join(dir, "docker.sock");
  const execRoot = path.join(dir, "exec");
  const cliConfig = path.join(dir, "cli");
  mkdirSync(cliConfig, { recursive: true });
  writeFileSync(path.join(cliConfig, "config.json"), "{}");
  const daemonJson = path.join(dir, "daemon.json");
  writeFileSync(daemonJson, JSON.stringify(daemon));
  const args = [
    "--config-file",
    daemonJson,
    "--iptables=false",
    "--ip6tables=false",
    "--ip-masq=false",
    "--ip-forward=false",
    "--bridge=none",
    `--storage-driver=${options.storageDriver ?? "vfs"}`,
    "--data-root",
    path.join(dir, "data"),
    "--exec-root",
    execRoot,
    "--pidfile",
    path.join(dir, "docker.pid"),
    "-H",
    `unix://${socket}`,
    "--exec-opt",
    "native.cgroupdriver=cgroupfs",
  ];
  const child = spawn(bin, args, {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
    env: { ...process.env, DOCKER_CONFIG: cliConfig },
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
  track(child.pid, "dockerd");
  const host = `unix://${socket}`;
  const docker = (cmd: string[], options: RunOptions = {}) =>
    run(cli, cmd, {
      ...options,
      env: { DOCKER_HOST: host, DOCKER_CONFIG: cliConfig, DOCKER_CONTEXT: undefined, ...options.env },
    });

  // The managed containerd writes its pid here; remember it so that stop() can make sure it is gone.
  let containerdPid: number | undefined;
  const readContainerdPid = () => {
    try {
      const pid = Number(readFileSync(path.join(execRoot, "containerd", "containerd.pid"), "utf8").trim());
      if (pid > 0 && pid !== containerdPid) {
        containerdPid = pid;
        track(pid, "dockerd's containerd", false, execRoot);
      }
    } catch {}
  };

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    readContainerdPid();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const done = await Promise.race([exited.then(() => true), sleep(20_000).then(() => false)]);
      if (!done) {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {}
        await Promise.race([exited, sleep(5_000)]);
      }
    }
    // The managed containerd normally exits with dockerd; if it is still ours and alive, kill it.
    if (containerdPid && alive(containerdPid) && cmdline(containerdPid).includes(execRoot)) {
      await waitFor("managed containerd to exit", () => !alive(containerdPid!), 5_000).catch(() => {
        try {
          process.kill(containerdPid!, "SIGKILL");
        } catch {}
      });
    }
    await sleep(100);
    if (child.pid && alive(child.pid)) throw new Error(`dockerd (pid ${child.pid}) would not exit`);
    untrack(containerdPid, false);
    await removeTree(dir);
  };

  try {
    await waitFor(
      `dockerd on ${socket}`,
      async () => {
        if (child.exitCode !== null) return true;
        return ping(socket);
      },
      60_000,
      200,
    );
    if (child.exitCode !== null) throw new Error(`dockerd exited with ${child.exitCode}`);
    readContainerdPid();
  } catch (e) {
    await stop().catch(() => {});
    throw new Error(`${String(e)}\n${logs.slice(-40).join("\n")}`);
  }
  return { dir, socket, host, process: child, logs, docker, stop };
}
