import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { freePort, portOpen, tempDir } from "./server.js";

/**
 * A round-robin load balancer in front of several `berth serve` replicas: Debian's nginx, started with a
 * configuration of its own in a temporary folder (one process, in the foreground, no root files). Bodies
 * stream both ways, unbuffered and unlimited, as deploy/nginx does for a single Berth. Each request goes
 * to the next upstream in turn: nginx opens a new upstream connection per request (no upstream
 * keep-alive), so a client's consecutive requests land on different replicas even over one connection.
 * A replica that refuses connections is skipped (the request was not sent, so even a PATCH moves on).
 * With `requestBuffering`, nginx reads each body whole before it sends the request on (its default), and
 * then, as by default, resends an idempotent request (a PUT) that a dead upstream cut off to the next.
 */
export interface Balancer {
  url: string;
  port: number;
  dir: string;
  process: ChildProcess;
  /** nginx's error log, for a failed test's message. */
  errors(): string;
  stop(): Promise<void>;
}

export async function startBalancer(
  upstreams: string[],
  options: { requestBuffering?: boolean } = {},
): Promise<Balancer> {
  const port = await freePort();
  const dir = tempDir("berth-nginx-");
  for (const sub of ["body", "proxy", "fastcgi", "uwsgi", "scgi"]) mkdirSync(path.join(dir, sub));
  const conf = path.join(dir, "nginx.conf");
  writeFileSync(
    conf,
    [
      "daemon off;",
      "master_process off;",
      "worker_processes 1;",
      `pid ${path.join(dir, "nginx.pid")};`,
      `error_log ${path.join(dir, "error.log")} warn;`,
      "events { worker_connections 1024; }",
      "http {",
      "  access_log off;",
      `  client_body_temp_path ${path.join(dir, "body")};`,
      `  proxy_temp_path ${path.join(dir, "proxy")};`,
      `  fastcgi_temp_path ${path.join(dir, "fastcgi")};`,
      `  uwsgi_temp_path ${path.join(dir, "uwsgi")};`,
      `  scgi_temp_path ${path.join(dir, "scgi")};`,
      "  upstream berth {",
      // No failure accounting: a replica that is down refuses the connection and the next one is
      // tried at once; one that answers before reading a whole body is not taken for dead.
      ...upstreams.map((u) => `    server ${u} max_fails=0;`),
      "  }",
      "  server {",
      `    listen 127.0.0.1:${port};`,
      "    client_max_body_size 0;",
      "    chunked_transfer_encoding on;",
      "    location / {",
      "      proxy_pass http://berth;",
      "      proxy_http_version 1.1;",
      "      proxy_set_header Host $http_host;",
      "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
      "      proxy_set_header X-Forwarded-Proto $scheme;",
      `      proxy_request_buffering ${options.requestBuffering ? "on" : "off"};`,
      "      proxy_buffering off;",
      "      proxy_read_timeout 900s;",
      "      proxy_send_timeout 900s;",
      "    }",
      "  }",
      "}",
      "",
    ].join("\n"),
  );
  const child = spawn("nginx", ["-p", dir, "-c", conf, "-e", path.join(dir, "error.log")], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  const errors = () => {
    try {
      return stderr + readFileSync(path.join(dir, "error.log"), "utf8");
    } catch {
      return stderr;
    }
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${errors()}`);
    if (await portOpen(port)) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`nginx did not listen on ${port}: ${errors()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    dir,
    process: child,
    errors,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGQUIT");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
