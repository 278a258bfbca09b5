// Upstreams for the pull-through cache tests: a Berth in token mode (Docker Hub's Bearer dance) and
// Distribution 2.8 (docker-registry) with htpasswd behind TLS.
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { type Blob, blobOf, OCI_MANIFEST, RegistryClient, sha256 } from "../helpers/registry.js";
import { type Berth, freePort, portOpen, startBerth, tempDir } from "../helpers/server.js";
import { basic, htpasswdText } from "./auth-fixtures.js";

/** Starts a Berth in token mode: `mirror` may pull everything, `admin` push. */
export async function startTokenUpstream(port?: number, dataDir?: string): Promise<Berth> {
  const dir = tempDir("berth-upstream-conf-");
  const htpasswd = path.join(dir, "htpasswd");
  fs.writeFileSync(htpasswd, htpasswdText({ mirror: "mirror-pw", admin: "admin-pw" }));
  const config = path.join(dir, "config.yml");
  fs.writeFileSync(
    config,
    [
      "auth:",
      "  htpasswd:",
      `    path: ${htpasswd}`,
      "  token:",
      "    service: up-registry",
      "    issuer: up-issuer",
      "  throttle:",
      "    enabled: false",
      "  access:",
      "    admins: { users: [admin] }",
      '    rules: [{ repository: "*", users: [mirror], actions: [pull] }]',
      "",
    ].join("\n"),
  );
  return startBerth({ args: ["--config", config], port, dataDir, workers: 1 });
}

export async function adminClient(upstream: Berth, repo: string): Promise<RegistryClient> {
  const res = await fetch(
    `${upstream.url}/auth/token?service=up-registry&scope=${encodeURIComponent(`repository:${repo}:pull,push`)}`,
    { headers: { authorization: basic("admin", "admin-pw") } },
  );
  const { token } = (await res.json()) as { token: string };
  return new RegistryClient(upstream.url, { authorization: `Bearer ${token}` });
}

/**
 * Requests for a path in the upstream's access log (only those answered `status`, when given). The
 * log line is written after the response, so the count is taken once the log has been quiet a moment.
 */
export async function upstreamRequests(
  upstream: Berth,
  method: string,
  pathPart: string,
  status?: number,
): Promise<number> {
  let lines = -1;
  while (lines !== upstream.logs.length) {
    lines = upstream.logs.length;
    await new Promise((r) => setTimeout(r, 300));
  }
  return countRequests(upstream, method, pathPart, status);
}

function countRequests(upstream: Berth, method: string, pathPart: string, status?: number): number {
  let n = 0;
  for (const line of upstream.logs) {
    if (!line.includes(pathPart)) continue;
    try {
      const entry = JSON.parse(line) as { msg?: string; method?: string; path?: string; status?: number };
      if (entry.msg !== "request" || entry.method !== method || !entry.path?.includes(pathPart)) continue;
      if (status === undefined || entry.status === status) n++;
    } catch {}
  }
  return n;
}

export const DISTRIBUTION_BIN = process.env.BENCH_DISTRIBUTION_BIN ?? "/usr/bin/docker-registry";

export interface Distribution {
  url: string;
  port: number;
  dataDir: string;
  logs: string[];
  stop(): Promise<void>;
}

/** Starts Distribution (docker-registry serve) on a free loopback port; TLS and htpasswd when given. */
export async function startDistribution(
  options: { dataDir?: string; tls?: { cert: string; key: string }; htpasswd?: string; port?: number } = {},
): Promise<Distribution> {
  const port = options.port ?? (await freePort());
  const dataDir = options.dataDir ?? tempDir("berth-distribution-");
  const config = path.join(tempDir("berth-distribution-conf-"), "config.yml");
  fs.writeFileSync(
    config,
    [
      "version: 0.1",
      "log:",
      "  level: info",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${dataDir}`,
      "  delete:",
      "    enabled: true",
      "http:",
      `  addr: 127.0.0.1:${port}`,
      ...(options.tls
        ? ["  tls:", `    certificate: ${options.tls.cert}`, `    key: ${options.tls.key}`]
        : []),
      ...(options.htpasswd
        ? ["auth:", "  htpasswd:", "    realm: upstream", `    path: ${options.htpasswd}`]
        : []),
      "",
    ].join("\n"),
  );
  const child: ChildProcess = spawn(DISTRIBUTION_BIN, ["serve", config], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: string[] = [];
  const keep = (c: Buffer) => logs.push(...c.toString().split("\n").filter(Boolean));
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (await portOpen(port)) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`docker-registry did not start:\n${logs.slice(-20).join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `${options.tls ? "https" : "http"}://127.0.0.1:${port}`,
    port,
    dataDir,
    logs,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

/** Pushes an image the way Distribution 2.8 takes it (chunked blob uploads; it ignores POST ?digest=). */
export async function pushToDistribution(
  url: string,
  name: string,
  tag: string,
  layers: Blob[],
): Promise<{ digest: string; manifest: Buffer; layers: Blob[]; config: Blob }> {
  const client = new RegistryClient(url);
  const config = blobOf(
    JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }),
  );
  for (const blob of [config, ...layers]) await client.pushBlobChunked(name, blob, 1 << 20);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: {
        mediaType: "application/vnd.oci.image.config.v1+json",
        digest: config.digest,
        size: config.size,
      },
      layers: layers.map((l) => ({
        mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
        digest: l.digest,
        size: l.size,
      })),
    }),
  );
  const res = await client.putManifest(name, tag, manifest, OCI_MANIFEST);
  if (res.status !== 201) throw new Error(`put manifest: ${res.status} ${await res.text()}`);
  return { digest: sha256(manifest), manifest, layers, config };
}

/**
 * A small registry on loopback that answers pulls from what the test puts in it (blobs and manifests per
 * repository), records every request, and lets a test answer some requests its own way (`override`:
 * return true when it answered).
 */
export interface FakeUpstream {
  url: string;
  host: string;
  requests: { method: string; path: string; authorization?: string }[];
  override: ((req: http.IncomingMessage, res: http.ServerResponse) => boolean) | null;
  addBlob(repository: string, data: Buffer): string;
  addManifest(repository: string, tag: string, manifest: Buffer): string;
  count(method: string, pathPart: string): number;
  close(): Promise<void>;
}

export async function startFakeUpstream(): Promise<FakeUpstream> {
  const blobs = new Map<string, Buffer>();
  const manifests = new Map<string, Buffer>();
  const fake: FakeUpstream = {
    url: "",
    host: "",
    requests: [],
    override: null,
    addBlob(repository, data) {
      const digest = sha256(data);
      blobs.set(`${repository}@${digest}`, data);
      return digest;
    },
    addManifest(repository, tag, manifest) {
      const digest = sha256(manifest);
      manifests.set(`${repository}:${tag}`, manifest);
      manifests.set(`${repository}:${digest}`, manifest);
      return digest;
    },
    count(method, pathPart) {
      return fake.requests.filter((r) => r.method === method && r.path.includes(pathPart)).length;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const server = http.createServer((req, res) => {
    const url = req.url ?? "/";
    fake.requests.push({ method: req.method ?? "", path: url, authorization: req.headers.authorization });
    if (fake.override?.(req, res)) return;
    const blob = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url);
    const manifest = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url);
    const found = blob
      ? blobs.get(`${blob[1]}@${blob[2]}`)
      : manifest
        ? manifests.get(`${manifest[1]}:${manifest[2]}`)
        : undefined;
    if (!found) {
      res.writeHead(404, { "content-type": "application/json" });
      res.end('{"errors":[{"code":"NOT_FOUND","message":"unknown"}]}');
      return;
    }
    res.writeHead(200, {
      "content-type": blob ? "application/octet-stream" : OCI_MANIFEST,
      "content-length": found.length,
      "docker-content-digest": sha256(found),
    });
    res.end(req.method === "HEAD" ? undefined : found);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  fake.host = `127.0.0.1:${port}`;
  fake.url = `http://${fake.host}`;
  return fake;
}

/** An OCI image manifest naming `config` and `layers` (a descriptor's size as given, true or not). */
export function imageManifest(
  config: { digest: string; size: number },
  layers: { digest: string; size: number }[],
): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
      layers: layers.map((l) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...l })),
    }),
  );
}

/**
 * Log entries of `berth` (JSON lines) that `match`, once `atLeast` of them have been written (or 5 s
 * have passed): a request's log lines may come after its response.
 */
export async function loggedEntries(
  berth: Berth,
  match: (entry: Record<string, unknown>) => boolean,
  atLeast = 1,
): Promise<Record<string, unknown>[]> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const found = berth.logs
      .map((line) => {
        try {
          return JSON.parse(line) as Record<string, unknown>;
        } catch {
          return {};
        }
      })
      .filter(match);
    if (found.length >= atLeast || Date.now() > deadline) return found;
    await new Promise((r) => setTimeout(r, 100));
  }
}
