import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { randomBlob } from "../helpers/registry.js";
import { type Berth, CLI, freePort, startBerth, tempDir } from "../helpers/server.js";

const started: Berth[] = [];
afterEach(async () => {
  for (const b of started.splice(0)) await b.cleanup().catch(() => {});
});

function parsed(lines: string[]): Record<string, unknown>[] {
  return lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

describe("berth serve", () => {
  it("logs a start-up line and one JSON line per request", async () => {
    const berth = await startBerth();
    started.push(berth);
    await fetch(`${berth.url}/v2/`, { headers: { "x-request-id": "test-req-1" } });
    await new Promise((r) => setTimeout(r, 200));
    const logs = parsed(berth.logs);
    const startup = logs.find(
      (l) => typeof l.msg === "string" && (l.msg as string).startsWith("berth listening"),
    );
    expect(startup).toMatchObject({ addr: berth.host, dataDir: berth.dataDir });
    const line = logs.find((l) => l.reqId === "test-req-1");
    expect(line).toMatchObject({ method: "GET", path: "/v2/", status: 200, bytes: 2 });
    expect(typeof line?.ms).toBe("number");
    expect(logs.filter((l) => l.reqId === "test-req-1")).toHaveLength(1);
  });

  it("finishes an upload in flight on SIGTERM, then exits 0", async () => {
    const berth = await startBerth({ workers: 2 });
    started.push(berth);
    const blob = randomBlob(2 * 1024 * 1024);
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        `${berth.url}/v2/drain/app/blobs/uploads/?digest=${blob.digest}`,
        {
          method: "POST",
          headers: { "content-length": blob.size, "content-type": "application/octet-stream" },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on("error", reject);
      // Send half, stop the server, then send the rest.
      req.write(blob.data.subarray(0, blob.size / 2));
      setTimeout(() => {
        berth.process.kill("SIGTERM");
        setTimeout(() => req.end(blob.data.subarray(blob.size / 2)), 500);
      }, 300);
    });
    expect(status).toBe(201);
    expect(await berth.stop()).toBe(0);
  });

  it("refuses to start on an invalid address with a clear message", async () => {
    await expect(startBerth({ args: ["--addr", "nonsense"] })).rejects.toThrow(/invalid address/);
  });
});

describe("http.prefix", () => {
  it("serves the API under the prefix, with the prefix in Location and Link headers", async () => {
    const { RegistryClient } = await import("../helpers/registry.js");
    const berth = await startBerth({ env: { REGISTRY_HTTP_PREFIX: "/registry/" } });
    started.push(berth);
    const client = new RegistryClient(`${berth.url}/registry`);
    expect((await client.fetch("/v2/")).status).toBe(200);
    expect((await fetch(`${berth.url}/v2/`)).status).toBe(404);
    const img = await client.pushImage("pre/app", "v1");
    const start = await client.fetch("/v2/pre/app/blobs/uploads/", { method: "POST" });
    expect(start.headers.get("location")).toContain("/registry/v2/pre/app/blobs/uploads/");
    await client.putManifest("pre/app", "v2", img.manifest);
    const page = await client.fetch("/v2/pre/app/tags/list?n=1");
    expect(page.headers.get("link")).toBe('</registry/v2/pre/app/tags/list?n=1&last=v1>; rel="next"');
  });
});

describe("http.prefix with token auth", () => {
  it("points the Bearer realm under the prefix and serves tokens there", async () => {
    const { writeFileSync } = await import("node:fs");
    const { tempDir } = await import("../helpers/server.js");
    const dir = tempDir();
    writeFileSync(`${dir}/htpasswd`, "");
    const berth = await startBerth({
      env: {
        REGISTRY_HTTP_PREFIX: "/registry/",
        REGISTRY_AUTH_HTPASSWD_PATH: `${dir}/htpasswd`,
        REGISTRY_AUTH_TOKEN_SERVICE: "berth-test",
      },
    });
    started.push(berth);
    const challenge = (await fetch(`${berth.url}/registry/v2/`)).headers.get("www-authenticate") ?? "";
    const realm = /realm="([^"]+)"/.exec(challenge)?.[1];
    expect(realm).toBe(`${berth.url}/registry/auth/token`);
    const token = await fetch(`${realm}?service=berth-test`);
    expect(token.status).toBe(200);
    expect(((await token.json()) as { token: string }).token).toMatch(/^ey/);
  });
});

/** Runs `berth serve` with the given arguments and waits for it to exit (or fails after `ms`). */
function runToExit(
  args: string[],
  ms = 20_000,
  env: Record<string, string> = {},
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, "serve", ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (c: Buffer) => {
      output += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      output += c.toString();
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`still running after ${ms} ms (restarting workers?):\n${output.slice(-2000)}`));
    }, ms);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe("start-up errors under the supervisor (several workers)", () => {
  it("exits 1 with the message when --addr is not host:port, instead of restarting workers", async () => {
    const dir = tempDir();
    try {
      const { code, output } = await runToExit(["--workers", "2", "--addr", "nonsense", "--data-dir", dir]);
      expect(code).toBe(1);
      expect(output).toMatch(/invalid address "nonsense"/);
      expect(output).not.toMatch(/starting another/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("exits 1 with the message when http.addr in the file is not host:port", async () => {
    const dir = tempDir();
    try {
      const file = path.join(dir, "config.yml");
      writeFileSync(file, "version: 0.1\nhttp:\n  addr: 'localhost'\n");
      const { code, output } = await runToExit(["--workers", "0", "-c", file, "--data-dir", dir]);
      expect(code).toBe(1);
      expect(output).toMatch(/http\.addr.*invalid address "localhost"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("exits 1 with the message when the port is already in use", async () => {
    const dir = tempDir();
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const { port } = blocker.address() as net.AddressInfo;
    try {
      const { code, output } = await runToExit([
        "--workers",
        "2",
        "--addr",
        `127.0.0.1:${port}`,
        "--data-dir",
        dir,
      ]);
      expect(code).toBe(1);
      expect(output).toMatch(/EADDRINUSE/);
      expect(output).not.toMatch(/starting another/);
    } finally {
      blocker.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("starts every worker and restarts one that dies after it served", async () => {
    const berth = await startBerth({ workers: 2 });
    started.push(berth);
    // The supervisor logs "berth listening" once every worker listens.
    await waitFor(() => berth.logs.some((l) => l.includes("berth listening")));
    // Issue 22: one line for the tree, none per worker and address (Fastify's "Server listening at").
    expect(berth.logs.filter((l) => l.includes("listening"))).toHaveLength(1);
    const workers = childPids(berth.process.pid!);
    expect(workers).toHaveLength(2);
    process.kill(workers[0]!, "SIGKILL");
    await waitFor(() => berth.logs.some((l) => l.includes("starting another")));
    // The replacement runs beside the survivor, and the registry answers on every connection.
    await waitFor(() => {
      const now = childPids(berth.process.pid!);
      return now.length === 2 && !now.includes(workers[0]!);
    });
    for (let i = 0; i < 10; i++) expect((await fetch(`${berth.url}/v2/`)).status).toBe(200);
  });
});

/** The live child processes of pid, from the parent pid in /proc/<n>/stat (field 4). */
function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === pid && fields[0] !== "Z") out.push(Number(entry));
    } catch {}
  }
  return out;
}

async function waitFor(check: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts `berth serve -c <file>` (one process) and collects its output; stop() sends SIGTERM. */
function spawnServe(args: string[]) {
  const child = spawn(process.execPath, [CLI, "serve", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (c: Buffer) => {
    output += c.toString();
  });
  child.stderr.on("data", (c: Buffer) => {
    output += c.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return {
    output: () => output,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      return exited;
    },
  };
}

function getOverSocket(socketPath: string, urlPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: urlPath, method: "GET" }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => {
        body += c.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("http.net, log.formatter and http.secret", () => {
  it("listens on the unix socket named by http.addr when http.net is unix, and replaces a stale one", async () => {
    const dir = tempDir();
    const socketPath = path.join(dir, "berth.sock");
    const file = path.join(dir, "config.yml");
    writeFileSync(file, `version: 0.1\nhttp:\n  net: unix\n  addr: ${socketPath}\n`);
    // A socket file left by a process that is gone (killed: nothing unlinked it).
    const owner = spawn(process.execPath, [
      "-e",
      `require("node:net").createServer().listen(${JSON.stringify(socketPath)}, () => console.log("up"))`,
    ]);
    await new Promise((resolve) => owner.stdout.once("data", resolve));
    owner.kill("SIGKILL");
    await new Promise((resolve) => owner.once("exit", resolve));
    expect(existsSync(socketPath)).toBe(true);
    for (const workers of ["1", "2"]) {
      const berth = spawnServe(["-c", file, "--data-dir", dir, "--workers", workers]);
      try {
        await waitFor(() => berth.output().includes("berth listening"));
        const res = await getOverSocket(socketPath, "/v2/");
        expect(res).toEqual({ status: 200, body: "{}" });
      } finally {
        expect(await berth.stop()).toBe(0);
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("writes text lines with log.formatter text, JSON lines by default", async () => {
    const dir = tempDir();
    const file = path.join(dir, "config.yml");
    const port = await freePort();
    writeFileSync(file, `version: 0.1\nlog:\n  formatter: text\nhttp:\n  addr: 127.0.0.1:${port}\n`);
    const berth = spawnServe(["-c", file, "--data-dir", dir, "--workers", "2"]);
    try {
      await waitFor(() => berth.output().includes("berth listening"));
      await fetch(`http://127.0.0.1:${port}/v2/`, { headers: { "x-request-id": "text-log-1" } });
      await waitFor(() => berth.output().includes("text-log-1"));
    } finally {
      await berth.stop();
    }
    const lines = berth.output().trim().split("\n");
    expect(lines.length).toBeGreaterThan(2);
    for (const line of lines) {
      expect(line.startsWith("{")).toBe(false);
      expect(line).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (TRACE|DEBUG|INFO |WARN |ERROR|FATAL) /);
    }
    expect(lines.find((l) => l.includes("text-log-1"))).toMatch(
      /INFO {2}request .*method=GET path=\/v2\/ status=200/,
    );
    expect(lines.find((l) => l.includes("berth listening"))).toMatch(/workers=2/);
    rmSync(dir, { recursive: true, force: true });
  });

  it("warns by name about log.formatter logstash and writes JSON", async () => {
    const dir = tempDir();
    const file = path.join(dir, "config.yml");
    const port = await freePort();
    writeFileSync(file, `version: 0.1\nlog:\n  formatter: logstash\nhttp:\n  addr: 127.0.0.1:${port}\n`);
    const berth = spawnServe(["-c", file, "--data-dir", dir, "--workers", "1"]);
    try {
      await waitFor(() => berth.output().includes("berth listening"));
    } finally {
      await berth.stop();
    }
    const records = parsed(berth.output().trim().split("\n"));
    expect(records.length).toBeGreaterThan(1);
    expect(records.find((r) => String(r.msg).includes("log.formatter: logstash"))).toMatchObject({
      level: 40,
    });
    rmSync(dir, { recursive: true, force: true });
  });

  it("says at start-up what it does with http.secret (nothing), without logging the secret", async () => {
    const dir = tempDir();
    const file = path.join(dir, "config.yml");
    const port = await freePort();
    writeFileSync(file, `version: 0.1\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: s3cr3t-value\n`);
    const berth = spawnServe(["-c", file, "--data-dir", dir, "--workers", "2"]);
    try {
      await waitFor(() => berth.output().includes("berth listening"));
    } finally {
      await berth.stop();
    }
    const records = parsed(berth.output().trim().split("\n"));
    const note = records.filter((r) => String(r.msg).startsWith("http.secret"));
    expect(note).toHaveLength(1);
    expect(String(note[0]?.msg)).toMatch(/upload state in its database/);
    expect(berth.output()).not.toContain("s3cr3t-value");
    rmSync(dir, { recursive: true, force: true });
  });
});
