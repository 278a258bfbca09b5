// Shared by the ops-* integration tests: run `berth` from dist/ with a given environment, either to
// its exit (configuration errors) or as a server without --data-dir (so that REGISTRY_* decide).
import { type ChildProcess, spawn } from "node:child_process";
import { CLI, freePort, portOpen, tempDir } from "../helpers/server.js";

export interface Exited {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `berth <args>` to completion (30 s at most). */
export function runBerth(args: string[], env: Record<string, string> = {}, cwd = tempDir()): Promise<Exited> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd,
      env: { ...cleanEnv(), ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`berth ${args.join(" ")} did not exit:\n${stdout}\n${stderr}`));
    }, 30_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** process.env without REGISTRY_* variables of the machine running the tests. */
export function cleanEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env))
    if (v !== undefined && !k.startsWith("REGISTRY_")) out[k] = v;
  return out;
}

export interface Served {
  url: string;
  port: number;
  process: ChildProcess;
  logs: string[];
  stop(): Promise<void>;
}

/**
 * `berth serve --addr 127.0.0.1:<free port> --workers N` with `env` and no --data-dir, waiting until
 * the port answers. The working directory is a fresh temp dir.
 */
export async function serveWithEnv(
  env: Record<string, string>,
  options: { args?: string[]; workers?: number; cwd?: string } = {},
): Promise<Served> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      CLI,
      "serve",
      "--addr",
      `127.0.0.1:${port}`,
      "--workers",
      String(options.workers ?? 1),
      ...(options.args ?? []),
    ],
    {
      cwd: options.cwd ?? tempDir(),
      env: { ...cleanEnv(), ...env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    },
  );
  const logs: string[] = [];
  const keep = (c: Buffer) => logs.push(...c.toString().split("\n").filter(Boolean));
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && child.exitCode === null) {
    if (await portOpen(port)) {
      return {
        url: `http://127.0.0.1:${port}`,
        port,
        process: child,
        logs,
        async stop() {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
          const timer = setTimeout(() => {
            try {
              process.kill(-child.pid!, "SIGKILL");
            } catch {}
          }, 15_000);
          await exited;
          clearTimeout(timer);
        },
      };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  try {
    process.kill(-child.pid!, "SIGKILL");
  } catch {}
  throw new Error(`berth did not start:\n${logs.slice(-40).join("\n")}`);
}

/** Parses Prometheus text: `name{labels}` → value. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^(\S+?(?:\{.*\})?)\s+(\S+)$/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/** The sum of every series of a metric whose labels include all of `labels`. */
export function metricSum(
  metrics: Map<string, number>,
  name: string,
  labels: Record<string, string> = {},
): number {
  let sum = 0;
  for (const [key, value] of metrics) {
    const brace = key.indexOf("{");
    const metric = brace < 0 ? key : key.slice(0, brace);
    if (metric !== name) continue;
    const labelText = brace < 0 ? "" : key.slice(brace);
    if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) sum += value;
  }
  return sum;
}
