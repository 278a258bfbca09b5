/**
 * A tiny OCI push client over fetch, for the web UI's API and browser tests: monolithic blob uploads
 * (POST ?digest=) and manifest PUTs, plus builders for realistic image configs, indexes and referrers.
 */
import { createCipheriv, createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import path from "node:path";
import bcrypt from "bcryptjs";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip";
export const OCI_EMPTY = "application/vnd.oci.empty.v1+json";

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** Deterministic pseudo-random bytes (AES-CTR keyed by the seed), so that one seed makes one (shared) blob. */
export function bytes(seed: string, size: number): Buffer {
  const key = createHash("sha256").update(seed).digest();
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

export interface Client {
  base: string;
  /** An Authorization header value, or none. */
  authorization?: string;
}

export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}

function headers(client: Client, extra: Record<string, string> = {}): Record<string, string> {
  return client.authorization ? { Authorization: client.authorization, ...extra } : extra;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
  annotations?: Record<string, string>;
  artifactType?: string;
}

export async function pushBlob(
  client: Client,
  repo: string,
  data: Buffer,
  mediaType = OCI_LAYER,
): Promise<Descriptor> {
  const digest = sha256(data);
  const res = await fetch(`${client.base}/v2/${repo}/blobs/uploads/?digest=${digest}`, {
    method: "POST",
    headers: headers(client, {
      "Content-Type": "application/octet-stream",
      "Content-Length": String(data.length),
    }),
    body: data,
  });
  if (res.status !== 201) throw new Error(`blob push to ${repo} failed: ${res.status} ${await res.text()}`);
  return { mediaType, digest, size: data.length };
}

export async function pushManifest(
  client: Client,
  repo: string,
  reference: string,
  manifest: object,
  mediaType: string,
): Promise<Descriptor> {
  const body = Buffer.from(JSON.stringify(manifest));
  const res = await fetch(`${client.base}/v2/${repo}/manifests/${reference}`, {
    method: "PUT",
    headers: headers(client, { "Content-Type": mediaType }),
    body,
  });
  if (res.status !== 201)
    throw new Error(`manifest push to ${repo}:${reference} failed: ${res.status} ${await res.text()}`);
  return { mediaType, digest: sha256(body), size: body.length };
}

export interface ImageSpec {
  /** Layer contents: seeds and sizes (same seed and size = same blob). */
  layers: Array<{ seed: string; size: number }>;
  os?: string;
  architecture?: string;
  variant?: string;
  created?: string;
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
  workingDir?: string;
  exposedPorts?: string[];
  user?: string;
  labels?: Record<string, string>;
  /** created_by per history entry; entries beyond the layers are marked empty_layer. */
  history?: Array<{ created_by: string; empty_layer?: boolean }>;
  annotations?: Record<string, string>;
}

export interface PushedImage extends Descriptor {
  config: Descriptor;
  layers: Descriptor[];
  /** Config + layers + manifest bytes. */
  totalSize: number;
}

/** A Dockerfile-like history for an image of `layers` layers, as BuildKit writes it. */
export function buildkitHistory(): Array<{ created_by: string; empty_layer?: boolean }> {
  return [
    { created_by: "/bin/sh -c #(nop) ADD file:5b1d2c7e0a8f in / " },
    { created_by: '/bin/sh -c #(nop)  CMD ["/bin/sh"]', empty_layer: true },
    { created_by: "WORKDIR /app", empty_layer: true },
    { created_by: "ENV NODE_ENV=production", empty_layer: true },
    { created_by: "RUN /bin/sh -c apk add --no-cache curl ca-certificates # buildkit" },
    { created_by: "COPY . . # buildkit" },
    { created_by: "EXPOSE map[8080/tcp:{}]", empty_layer: true },
    { created_by: "USER app", empty_layer: true },
    { created_by: 'ENTRYPOINT ["node" "server.js"]', empty_layer: true },
  ];
}

/** Pushes the config and layers of an image and its manifest (under `tag`, or by digest when null). */
export async function pushImage(
  client: Client,
  repo: string,
  tag: string | null,
  spec: ImageSpec,
): Promise<PushedImage> {
  const layers: Descriptor[] = [];
  for (const l of spec.layers) layers.push(await pushBlob(client, repo, bytes(l.seed, l.size)));
  const config = {
    created: spec.created ?? "2024-05-01T12:00:00Z",
    architecture: spec.architecture ?? "amd64",
    os: spec.os ?? "linux",
    ...(spec.variant ? { variant: spec.variant } : {}),
    config: {
      ...(spec.user ? { User: spec.user } : {}),
      ...(spec.exposedPorts
        ? { ExposedPorts: Object.fromEntries(spec.exposedPorts.map((p) => [p, {}])) }
        : {}),
      Env: spec.env ?? ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
      ...(spec.entrypoint ? { Entrypoint: spec.entrypoint } : {}),
      ...(spec.cmd ? { Cmd: spec.cmd } : {}),
      ...(spec.workingDir ? { WorkingDir: spec.workingDir } : {}),
      Labels: spec.labels ?? {},
    },
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.digest) },
    history: (spec.history ?? spec.layers.map((l) => ({ created_by: `/bin/sh -c echo ${l.seed}` }))).map(
      (h) => ({
        created: spec.created ?? "2024-05-01T12:00:00Z",
        ...h,
      }),
    ),
  };
  const configDesc = await pushBlob(client, repo, Buffer.from(JSON.stringify(config)), OCI_CONFIG);
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: configDesc,
    layers,
    ...(spec.annotations ? { annotations: spec.annotations } : {}),
  };
  const pushed = await pushManifest(
    client,
    repo,
    tag ?? sha256(JSON.stringify(manifest)),
    manifest,
    OCI_MANIFEST,
  );
  const distinct = new Map(layers.map((l) => [l.digest, l.size]));
  distinct.set(configDesc.digest, configDesc.size);
  const totalSize = [...distinct.values()].reduce((a, b) => a + b, 0) + pushed.size;
  return {
    ...pushed,
    platform: {
      os: config.os,
      architecture: config.architecture,
      ...(spec.variant ? { variant: spec.variant } : {}),
    },
    config: configDesc,
    layers,
    totalSize,
  };
}

/** Pushes an index over already pushed images (plus optional extra entries such as attestations). */
export async function pushIndex(
  client: Client,
  repo: string,
  tag: string,
  children: Descriptor[],
  annotations?: Record<string, string>,
): Promise<Descriptor> {
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: children.map((c) => ({
      mediaType: c.mediaType,
      digest: c.digest,
      size: c.size,
      ...(c.platform ? { platform: c.platform } : {}),
      ...(c.annotations ? { annotations: c.annotations } : {}),
      ...(c.artifactType ? { artifactType: c.artifactType } : {}),
    })),
    ...(annotations ? { annotations } : {}),
  };
  return pushManifest(client, repo, tag, manifest, OCI_INDEX);
}

/** A BuildKit-style attestation manifest for `subject`, to list in an index with platform unknown/unknown. */
export async function pushAttestation(
  client: Client,
  repo: string,
  subject: Descriptor,
): Promise<Descriptor & { totalSize: number }> {
  const statement = await pushBlob(
    client,
    repo,
    Buffer.from(JSON.stringify({ _type: "https://in-toto.io/Statement/v0.1", subject: [] })),
    "application/vnd.in-toto+json",
  );
  const config = await pushBlob(
    client,
    repo,
    Buffer.from(
      JSON.stringify({
        architecture: "unknown",
        os: "unknown",
        config: {},
        rootfs: { type: "layers", diff_ids: [] },
      }),
    ),
    OCI_CONFIG,
  );
  const manifest = { schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [statement] };
  const pushed = await pushManifest(client, repo, sha256(JSON.stringify(manifest)), manifest, OCI_MANIFEST);
  return {
    ...pushed,
    totalSize: pushed.size + config.size + statement.size,
    platform: { os: "unknown", architecture: "unknown" },
    annotations: {
      "vnd.docker.reference.type": "attestation-manifest",
      "vnd.docker.reference.digest": subject.digest,
    },
  };
}

/** An OCI 1.1 artifact (an SBOM, a signature) whose subject is `subject`. */
export async function pushReferrer(
  client: Client,
  repo: string,
  subject: Descriptor,
  artifactType: string,
  content: object,
  annotations: Record<string, string> = {},
): Promise<Descriptor> {
  const empty = await pushBlob(client, repo, Buffer.from("{}"), OCI_EMPTY);
  const layer = await pushBlob(client, repo, Buffer.from(JSON.stringify(content)), artifactType);
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType,
    config: empty,
    layers: [{ ...layer, annotations: { "org.opencontainers.image.title": "sbom.json" } }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations: { "org.opencontainers.image.created": "2024-05-02T08:00:00Z", ...annotations },
  };
  const pushed = await pushManifest(client, repo, sha256(JSON.stringify(manifest)), manifest, OCI_MANIFEST);
  return { ...pushed, artifactType };
}

/** GET a JSON API path; returns status, headers and parsed body. */
/**
 * /api/v1/usage once the usage job has run after `since` (ms since the epoch): its registry-wide totals
 * come from that job (ui.usageinterval), never from the request.
 */
export async function usageAfter(client: Client, path: string, since: number, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await getJson(client, path);
    if ((res.body?.computedAt ?? 0) >= since || Date.now() > deadline) return res;
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function getJson<T = any>(
  client: Client,
  path: string,
  extraHeaders: Record<string, string> = {},
) {
  const res = await fetch(`${client.base}${path}`, { headers: headers(client, extraHeaders) });
  const text = await res.text();
  let body: T;
  try {
    body = JSON.parse(text) as T;
  } catch {
    body = text as unknown as T;
  }
  return { status: res.status, headers: res.headers, body };
}

export async function del(client: Client, path: string) {
  const res = await fetch(`${client.base}${path}`, { method: "DELETE", headers: headers(client) });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as any) : null };
}

/**
 * An htpasswd file and a config with access rules: `admin` may do anything, anonymous callers pull
 * public/*, `reader` pulls team/*, `editor` pulls, pushes and deletes in team/*.
 */
export function writeAuthConfig(dir: string, users: Record<string, string>, extra: string[] = []): string {
  const htpasswd = path.join(dir, "htpasswd");
  writeFileSync(
    htpasswd,
    Object.entries(users)
      .map(([u, pw]) => `${u}:${bcrypt.hashSync(pw, 4).replace(/^\$2b\$/, "$2y$")}`)
      .join("\n")
      .concat("\n"),
  );
  const config = path.join(dir, "config.yml");
  writeFileSync(
    config,
    [
      "auth:",
      "  htpasswd:",
      "    realm: Berth UI test",
      `    path: ${htpasswd}`,
      "  throttle:",
      "    enabled: false",
      "  access:",
      "    admins:",
      "      users: [admin]",
      "    anonymous:",
      '      pull: ["public/*"]',
      "    rules:",
      '      - repositories: ["team/*"]',
      "        users: [reader]",
      "        actions: [pull]",
      '      - repositories: ["team/*"]',
      "        users: [editor]",
      '        actions: ["pull", "push", "delete"]',
      ...extra,
      "",
    ].join("\n"),
  );
  return config;
}
