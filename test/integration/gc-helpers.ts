/**
 * Helpers for the garbage-collection and retention integration tests: real HTTP pushes and pulls
 * against a running Berth (monolithic POST ?digest= for blobs, PUT for manifests), and the CLI.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { CLI, databaseEnv } from "../helpers/server.js";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const ACCEPT = [OCI_MANIFEST, OCI_INDEX, "application/vnd.docker.distribution.manifest.v2+json"].join(", ");

export function sha256(data: Buffer): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** Deterministic bytes for a seed. */
export function bytes(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  let block = createHash("sha256").update(seed).digest();
  for (let i = 0; i < size; i += block.length) {
    block.copy(out, i, 0, Math.min(block.length, size - i));
    block = createHash("sha256").update(block).digest();
  }
  return out;
}

export interface Blob {
  data: Buffer;
  digest: string;
  size: number;
}

export function blob(data: Buffer): Blob {
  return { data, digest: sha256(data), size: data.length };
}

export interface Image {
  config: Blob;
  layers: Blob[];
  manifest: Buffer;
  digest: string;
  /** Config, layers and the manifest itself: every blob the image stores. */
  blobs: Blob[];
}

export function image(seed: string, layers: Blob[], extra: Record<string, unknown> = {}): Image {
  const config = blob(
    Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", config: { Env: [`SEED=${seed}`] } })),
  );
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
        mediaType: "application/vnd.oci.image.layer.v1.tar",
        digest: l.digest,
        size: l.size,
      })),
      ...extra,
    }),
  );
  return { config, layers, manifest, digest: sha256(manifest), blobs: [config, ...layers, blob(manifest)] };
}

export class HttpFailure extends Error {
  constructor(
    readonly what: string,
    readonly status: number,
    readonly body: string,
  ) {
    super(`${what}: HTTP ${status} ${body.slice(0, 300)}`);
  }

  get code(): string | undefined {
    try {
      return (JSON.parse(this.body) as { errors?: { code?: string }[] }).errors?.[0]?.code;
    } catch {
      return undefined;
    }
  }
}

async function expectStatus(res: Response, expected: number[], what: string): Promise<Response> {
  if (!expected.includes(res.status))
    throw new HttpFailure(what, res.status, await res.text().catch(() => ""));
  return res;
}

export async function pushBlob(base: string, repo: string, b: Blob): Promise<void> {
  const res = await fetch(`${base}/v2/${repo}/blobs/uploads/?digest=${encodeURIComponent(b.digest)}`, {
    method: "POST",
    headers: { "content-type": "application/octet-stream", "content-length": String(b.size) },
    body: b.data,
  });
  await expectStatus(res, [201], `POST ${repo} blob ${b.digest}`);
  await res.arrayBuffer();
}

export async function blobStatus(base: string, repo: string, digest: string): Promise<number> {
  const res = await fetch(`${base}/v2/${repo}/blobs/${digest}`, { method: "HEAD" });
  await res.arrayBuffer();
  return res.status;
}

/**
 * Pushes an image as real clients do: HEAD each blob, upload the missing ones, then PUT the manifest.
 * Returns the manifest digest the registry answered with.
 */
export async function pushImage(
  base: string,
  repo: string,
  ref: string,
  img: Image,
  options: { headFirst?: boolean } = {},
): Promise<string> {
  for (const b of [img.config, ...img.layers]) {
    if (options.headFirst !== false && (await blobStatus(base, repo, b.digest)) === 200) continue;
    await pushBlob(base, repo, b);
  }
  return putManifest(base, repo, ref, img.manifest, OCI_MANIFEST);
}

export async function putManifest(
  base: string,
  repo: string,
  ref: string,
  manifest: Buffer,
  mediaType = OCI_MANIFEST,
): Promise<string> {
  const res = await fetch(`${base}/v2/${repo}/manifests/${ref}`, {
    method: "PUT",
    headers: { "content-type": mediaType },
    body: manifest,
  });
  await expectStatus(res, [201], `PUT ${repo}:${ref}`);
  await res.arrayBuffer();
  return res.headers.get("docker-content-digest") ?? "";
}

export async function getManifest(
  base: string,
  repo: string,
  ref: string,
): Promise<{ status: number; bytes: Buffer; digest: string | null }> {
  const res = await fetch(`${base}/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT } });
  const data = Buffer.from(await res.arrayBuffer());
  return { status: res.status, bytes: data, digest: res.headers.get("docker-content-digest") };
}

export async function getBlob(
  base: string,
  repo: string,
  digest: string,
): Promise<{ status: number; bytes: Buffer }> {
  const res = await fetch(`${base}/v2/${repo}/blobs/${digest}`);
  return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
}

/** Pulls an image by tag or digest and checks every byte against its digest. Returns the manifest digest. */
export async function pullImage(
  base: string,
  repo: string,
  ref: string,
): Promise<{ digest: string; manifest: Buffer; blobs: string[] }> {
  const m = await getManifest(base, repo, ref);
  if (m.status !== 200) throw new HttpFailure(`GET manifest ${repo}:${ref}`, m.status, m.bytes.toString());
  const digest = sha256(m.bytes);
  if (ref.startsWith("sha256:") && digest !== ref)
    throw new Error(`manifest ${repo}@${ref} has digest ${digest}`);
  const json = JSON.parse(m.bytes.toString()) as {
    config?: { digest: string; size: number };
    layers?: { digest: string; size: number }[];
  };
  const descriptors = [...(json.config ? [json.config] : []), ...(json.layers ?? [])];
  for (const d of descriptors) {
    const b = await getBlob(base, repo, d.digest);
    if (b.status !== 200)
      throw new HttpFailure(`GET blob ${repo}@${d.digest} (of ${digest})`, b.status, b.bytes.toString());
    if (sha256(b.bytes) !== d.digest || b.bytes.length !== d.size)
      throw new Error(`blob ${d.digest} of ${repo}:${ref} came back corrupted`);
  }
  return { digest, manifest: m.bytes, blobs: descriptors.map((d) => d.digest) };
}

export async function deleteManifest(base: string, repo: string, ref: string): Promise<number> {
  const res = await fetch(`${base}/v2/${repo}/manifests/${ref}`, { method: "DELETE" });
  await res.arrayBuffer();
  return res.status;
}

export async function listTags(base: string, repo: string): Promise<string[]> {
  const res = await fetch(`${base}/v2/${repo}/tags/list`);
  if (res.status === 404) return [];
  await expectStatus(res, [200], `GET ${repo} tags`);
  return ((await res.json()) as { tags: string[] | null }).tags ?? [];
}

export async function catalog(base: string): Promise<string[]> {
  const res = await fetch(`${base}/v2/_catalog?n=1000`);
  await expectStatus(res, [200], "GET catalog");
  return ((await res.json()) as { repositories: string[] }).repositories;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `berth <args>` from dist/ and collects its output (on the test database of its --data-dir). */
export async function berth(
  args: string[],
  options: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<CliResult> {
  const dataDirAt = args.indexOf("--data-dir");
  const dbEnv = dataDirAt >= 0 && args[dataDirAt + 1] ? await databaseEnv(args[dataDirAt + 1]!) : {};
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...dbEnv, ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 120_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** `berth <args> --json` parsed, failing on a non-zero exit. */
export async function berthJson<T>(args: string[], env?: Record<string, string>): Promise<T> {
  const r = await berth([...args, "--json"], { env });
  if (r.code !== 0) throw new Error(`berth ${args.join(" ")} exited with ${r.code}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

export function writeConfig(dir: string, lines: string[]): string {
  const file = path.join(dir, "gc-test-config.yml");
  writeFileSync(file, `${lines.join("\n")}\n`);
  return file;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value. */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | null | undefined | false>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}
