import { spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import path from "node:path";

/** Debian packages that provide each tool the e2e suite runs (used in error messages). */
const PACKAGE_OF: Record<string, string> = {
  skopeo: "skopeo",
  podman: "podman",
  buildah: "buildah",
  ctr: "containerd",
  containerd: "containerd",
  docker: "docker.io",
  dockerd: "docker.io",
  "docker-registry": "docker-registry",
  busybox: "busybox-static",
};

/** Where the suite looks for executables: PATH first, then the sbin directories a non-login root shell may lack. */
function searchPath(): string[] {
  const dirs = (process.env.PATH ?? "").split(path.delimiter).filter(Boolean);
  for (const extra of ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]) {
    if (!dirs.includes(extra)) dirs.push(extra);
  }
  return dirs;
}

/** Absolute path of an executable, or null. */
export function findTool(name: string): string | null {
  if (name.includes("/")) return isExecutable(name) ? name : null;
  for (const dir of searchPath()) {
    const candidate = path.join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Absolute path of a tool the test needs. A missing tool is a failure, never a skip: CI installs
 * everything, so a missing client means the environment is broken and the test must say so.
 */
export function requireTool(name: string): string {
  const found = findTool(name);
  if (!found) {
    const pkg = PACKAGE_OF[name] ?? name;
    throw new Error(
      `e2e: required tool "${name}" is not installed (apt-get install -y ${pkg}); searched ${searchPath().join(":")}`,
    );
  }
  return found;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Kill the command (SIGKILL) after this long; default 120 s. */
  timeoutMs?: number;
  input?: string | Buffer;
  /** Resolve with the result instead of throwing when the command exits non-zero. */
  allowFailure?: boolean;
}

export interface RunResult {
  command: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export class CommandError extends Error {
  constructor(readonly result: RunResult) {
    super(
      `command failed (exit ${result.code ?? result.signal}) after ${result.ms} ms: ${result.command}\n` +
        `--- stderr ---\n${tail(result.stderr)}\n--- stdout ---\n${tail(result.stdout)}`,
    );
    this.name = "CommandError";
  }
}

function tail(text: string, max = 6000): string {
  const trimmed = text.trimEnd();
  return trimmed.length > max ? `...${trimmed.slice(-max)}` : trimmed;
}

/** Shell-ish rendering of a command line, for messages only. */
export function renderCommand(cmd: string, args: readonly string[]): string {
  return [cmd, ...args]
    .map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`))
    .join(" ");
}

/** Runs a command to completion, capturing output. Throws CommandError on a non-zero exit unless allowFailure. */
export function run(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const command = renderCommand(cmd, args);
  const started = Date.now();
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...options.env })) if (v !== undefined) env[k] = v;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: options.cwd, env, stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, options.timeoutMs ?? 120_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${command}: ${e.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const result: RunResult = {
        command,
        code,
        signal,
        stdout: Buffer.concat(out).toString(),
        stderr:
          Buffer.concat(err).toString() +
          (timedOut ? `\n[e2e: killed after ${options.timeoutMs ?? 120_000} ms]` : ""),
        ms: Date.now() - started,
      };
      if ((code !== 0 || timedOut) && !options.allowFailure) reject(new CommandError(result));
      else resolve(result);
    });
    child.stdin.on("error", () => {});
    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | null | undefined | false> | T | null | undefined | false,
  timeoutMs = 30_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      lastError = e;
    }
    await sleep(intervalMs);
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ""}`,
  );
}
