// Upstreams for the pull-through cache tests: a Berth in token mode (Docker Hub's Bearer dance) and
// Distribution 2.8 (docker-registry) with htpasswd behind TLS.
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
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
