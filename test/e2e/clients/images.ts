/**
 * Builds real OCI images in memory, without network or a container engine: tar layers written here,
 * gzip from node:zlib, configs and manifests as the image spec describes them. Because every byte is
 * ours, each test knows the exact digests a correct registry and client must reproduce.
 */
import { createCipheriv, createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";

export const MT = {
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  ociLayerTar: "application/vnd.oci.image.layer.v1.tar",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayer: "application/vnd.docker.image.rootfs.diff.tar.gzip",
} as const;

export const REF_NAME = "org.opencontainers.image.ref.name";

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
}

export interface Blob extends Descriptor {
  data: Buffer;
}

export interface Image {
  kind: "image";
  platform: Platform;
  /** The manifest as pushed; its descriptor carries the platform (as an index entry would). */
  manifest: Blob;
  config: Blob;
  layers: Blob[];
  /** sha256 of each uncompressed layer tar, as in config.rootfs.diff_ids. */
  diffIds: string[];
}

export interface Index {
  kind: "index";
  index: Blob;
  images: Image[];
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

export function hex(digest: string): string {
  return digest.replace(/^sha256:/, "");
}

function blob(mediaType: string, data: Buffer): Blob {
  return { mediaType, digest: sha256(data), size: data.length, data };
}

export function descriptor(b: Descriptor): Descriptor {
  const d: Descriptor = { mediaType: b.mediaType, digest: b.digest, size: b.size };
  if (b.platform) d.platform = b.platform;
  if (b.annotations) d.annotations = b.annotations;
  return d;
}

/** Deterministic, incompressible bytes (AES-128-CTR keystream keyed by the seed). */
export function pseudoRandom(seed: string, size: number): Buffer {
  const key = createHash("sha256").update(`key:${seed}`).digest().subarray(0, 16);
  const iv = createHash("sha256").update(`iv:${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv("aes-128-ctr", key, iv);
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

// ---------------------------------------------------------------------------------------------
// tar (POSIX ustar)

export interface TarEntry {
  /** Path inside the layer, without a leading slash; directories may end in "/". */
  path: string;
  type?: "file" | "dir" | "symlink";
  data?: Buffer | string;
  mode?: number;
  linkname?: string;
}

const MTIME = Math.floor(Date.parse("2024-01-01T00:00:00Z") / 1000);

function writeString(buf: Buffer, offset: number, length: number, value: string): void {
  const bytes = Buffer.from(value, "utf8");
  if (bytes.length > length) throw new Error(`tar: "${value}" does not fit in ${length} bytes`);
  bytes.copy(buf, offset);
}

function writeOctal(buf: Buffer, offset: number, length: number, value: number): void {
  writeString(buf, offset, length, `${value.toString(8).padStart(length - 1, "0")}\0`);
}

function splitName(name: string): { prefix: string; name: string } {
  if (Buffer.byteLength(name) <= 100) return { prefix: "", name };
  for (let i = name.lastIndexOf("/", name.length - 2); i > 0; i = name.lastIndexOf("/", i - 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(rest) <= 100) return { prefix, name: rest };
  }
  throw new Error(`tar: path too long: ${name}`);
}

function tarHeader(entry: TarEntry, size: number): Buffer {
  const h = Buffer.alloc(512);
  const type = entry.type ?? "file";
  let name = entry.path.replace(/^\/+/, "");
  if (type === "dir" && !name.endsWith("/")) name += "/";
  const parts = splitName(name);
  writeString(h, 0, 100, parts.name);
  writeOctal(h, 100, 8, entry.mode ?? (type === "dir" ? 0o755 : type === "symlink" ? 0o777 : 0o644));
  writeOctal(h, 108, 8, 0);
  writeOctal(h, 116, 8, 0);
  writeOctal(h, 124, 12, size);
  writeOctal(h, 136, 12, MTIME);
  h.fill(0x20, 148, 156);
  h.write(type === "dir" ? "5" : type === "symlink" ? "2" : "0", 156, "ascii");
  if (entry.linkname) writeString(h, 157, 100, entry.linkname);
  writeString(h, 257, 6, "ustar\0");
  writeString(h, 263, 2, "00");
  writeString(h, 265, 32, "root");
  writeString(h, 297, 32, "root");
  writeOctal(h, 329, 8, 0);
  writeOctal(h, 337, 8, 0);
  writeString(h, 345, 155, parts.prefix);
  let sum = 0;
  for (const byte of h) sum += byte;
  writeString(h, 148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
  return h;
}

/** A tar archive of the entries, parents first as given; ends with the two zero blocks. */
export function tar(entries: readonly TarEntry[]): Buffer {
  const chunks: Buffer[] = [];
  for (const entry of entries) {
    const type = entry.type ?? "file";
    const data =
      type === "file"
        ? typeof entry.data === "string"
          ? Buffer.from(entry.data)
          : (entry.data ?? Buffer.alloc(0))
        : null;
    chunks.push(tarHeader(entry, data?.length ?? 0));
    if (data && data.length > 0) {
      chunks.push(data);
      const pad = (512 - (data.length % 512)) % 512;
      if (pad) chunks.push(Buffer.alloc(pad));
    }
  }
  chunks.push(Buffer.alloc(1024));
  return Buffer.concat(chunks);
}

/** Adds directory entries for every parent of the given paths that is not listed yet. */
export function withParents(entries: readonly TarEntry[]): TarEntry[] {
  const out: TarEntry[] = [];
  const seen = new Set<string>();
  for (const entry of entries) {
    const clean = entry.path.replace(/^\/+|\/+$/g, "");
    const parts = clean.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (!seen.has(dir)) {
        seen.add(dir);
        out.push({ path: dir, type: "dir" });
      }
    }
    if (entry.type === "dir") {
      if (seen.has(clean)) continue;
      seen.add(clean);
    }
    out.push({ ...entry, path: clean });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// images

export interface ImageSpec {
  platform: Platform;
  /** One entry list per layer, bottom first. */
  layers: TarEntry[][];
  labels?: Record<string, string>;
  /** Docker schema 2 media types instead of OCI (manifest, config and layers). */
  docker?: boolean;
  annotations?: Record<string, string>;
}

const CREATED = "2024-01-01T00:00:00Z";

export function buildImage(spec: ImageSpec): Image {
  const layers: Blob[] = [];
  const diffIds: string[] = [];
  for (const entries of spec.layers) {
    const raw = tar(withParents(entries));
    diffIds.push(sha256(raw));
    layers.push(blob(spec.docker ? MT.dockerLayer : MT.ociLayerGzip, gzipSync(raw, { level: 6 })));
  }
  const config = {
    created: CREATED,
    architecture: spec.platform.architecture,
    os: spec.platform.os,
    ...(spec.platform.variant ? { variant: spec.platform.variant } : {}),
    config: {
      Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
      Entrypoint: ["/bin/busybox"],
      Cmd: ["sh"],
      WorkingDir: "/",
      Labels: { "org.opencontainers.image.title": "berth-e2e", ...spec.labels },
    },
    rootfs: { type: "layers", diff_ids: diffIds },
    history: spec.layers.map((_, i) => ({ created: CREATED, created_by: `berth-e2e layer ${i + 1}` })),
  };
  const configBlob = blob(spec.docker ? MT.dockerConfig : MT.ociConfig, Buffer.from(JSON.stringify(config)));
  const manifest = {
    schemaVersion: 2,
    mediaType: spec.docker ? MT.dockerManifest : MT.ociManifest,
    config: descriptor(configBlob),
    layers: layers.map(descriptor),
    ...(spec.annotations ? { annotations: spec.annotations } : {}),
  };
  const manifestBlob = blob(manifest.mediaType, Buffer.from(JSON.stringify(manifest, null, 2)));
  manifestBlob.platform = { ...spec.platform };
  return {
    kind: "image",
    platform: spec.platform,
    manifest: manifestBlob,
    config: configBlob,
    layers,
    diffIds,
  };
}

export function buildIndex(images: Image[], annotations?: Record<string, string>): Index {
  const index = {
    schemaVersion: 2,
    mediaType: MT.ociIndex,
    manifests: images.map((img) => descriptor(img.manifest)),
    ...(annotations ? { annotations } : {}),
  };
  return { kind: "index", index: blob(MT.ociIndex, Buffer.from(JSON.stringify(index, null, 2))), images };
}

export function topDescriptor(artifact: Image | Index): Descriptor {
  return artifact.kind === "image" ? descriptor(artifact.manifest) : descriptor(artifact.index);
}

export function topDigest(artifact: Image | Index): string {
  return artifact.kind === "image" ? artifact.manifest.digest : artifact.index.digest;
}

/** Every blob of an image or index, manifests included, without duplicates. */
export function blobsOf(artifact: Image | Index): Blob[] {
  const all = new Map<string, Blob>();
  const addImage = (img: Image) => {
    for (const b of [img.manifest, img.config, ...img.layers]) all.set(b.digest, b);
  };
  if (artifact.kind === "image") addImage(artifact);
  else {
    all.set(artifact.index.digest, artifact.index);
    for (const img of artifact.images) addImage(img);
  }
  return [...all.values()];
}

// ---------------------------------------------------------------------------------------------
// the standard test content

let busyboxCache: Buffer | undefined;

/** The static busybox binary (busybox-static); a missing one is an error, never a skip. */
export function busybox(): Buffer {
  if (!busyboxCache) {
    try {
      busyboxCache = readFileSync("/bin/busybox");
    } catch (e) {
      throw new Error(`e2e: /bin/busybox is missing (apt-get install -y busybox-static): ${String(e)}`);
    }
  }
  return busyboxCache;
}

/** The base layer every test image shares: busybox and a few applet links. */
export function busyboxLayer(): TarEntry[] {
  return [
    { path: "bin/busybox", data: busybox(), mode: 0o755 },
    { path: "bin/sh", type: "symlink", linkname: "busybox" },
    { path: "bin/ls", type: "symlink", linkname: "busybox" },
    { path: "bin/cat", type: "symlink", linkname: "busybox" },
    { path: "tmp", type: "dir", mode: 0o1777 },
  ];
}

/**
 * Five layers, a few MB in all: busybox (shared by every image), a small text file, 1.5 MiB of
 * incompressible bytes (several upload chunks for clients that chunk), 120 small files, and a
 * compressible text file that replaces the one from layer 2.
 */
export function fiveLayers(seed: string): TarEntry[][] {
  const many: TarEntry[] = [];
  for (let i = 0; i < 120; i++) {
    many.push({
      path: `data/many/f${String(i).padStart(3, "0")}.txt`,
      data: `${seed} file ${i}\n`.repeat(1 + (i % 7)),
    });
  }
  const lines: string[] = [];
  for (let i = 0; i < 20_000; i++) lines.push(`${seed} line ${i} ${"abcdefghij".repeat(i % 5)}`);
  return [
    busyboxLayer(),
    [{ path: "etc/berth-e2e/release", data: `seed=${seed}\nlayer=2\n` }],
    [{ path: "data/random.bin", data: pseudoRandom(seed, 1536 * 1024) }],
    many,
    [
      { path: "etc/berth-e2e/release", data: `seed=${seed}\nlayer=5\n` },
      { path: "data/text.txt", data: `${lines.join("\n")}\n` },
    ],
  ];
}

export const AMD64: Platform = { architecture: "amd64", os: "linux" };
export const ARM64: Platform = { architecture: "arm64", os: "linux", variant: "v8" };

/** The ~5-layer test image for the host platform (linux/amd64). */
export function testImage(seed: string, options: { docker?: boolean; platform?: Platform } = {}): Image {
  return buildImage({
    platform: options.platform ?? AMD64,
    layers: fiveLayers(seed),
    labels: { "berth.e2e.seed": seed },
    docker: options.docker,
  });
}

/** An OCI index of two small images (linux/amd64 and linux/arm64/v8) sharing the busybox layer. */
export function testMultiArch(seed: string): Index {
  const images = [AMD64, ARM64].map((platform) =>
    buildImage({
      platform,
      layers: [
        busyboxLayer(),
        [{ path: "etc/berth-e2e/arch", data: `seed=${seed}\narch=${platform.architecture}\n` }],
        [{ path: "data/arch.bin", data: pseudoRandom(`${seed}-${platform.architecture}`, 256 * 1024) }],
      ],
      labels: { "berth.e2e.seed": seed, "berth.e2e.arch": platform.architecture },
    }),
  );
  return buildIndex(images, { "org.opencontainers.image.description": `berth e2e multi-arch ${seed}` });
}

// ---------------------------------------------------------------------------------------------
// OCI image layouts on disk

/** The files of an OCI image layout holding the artifacts, each tagged with its ref name. */
export function layoutFiles(
  refs: Record<string, Image | Index>,
  annotate?: (ref: string) => Record<string, string>,
): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  files.set("oci-layout", Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" })));
  const manifests: Descriptor[] = [];
  for (const [ref, artifact] of Object.entries(refs)) {
    for (const b of blobsOf(artifact)) files.set(`blobs/sha256/${hex(b.digest)}`, b.data);
    const d = topDescriptor(artifact);
    manifests.push({ ...d, annotations: { ...d.annotations, ...annotate?.(ref), [REF_NAME]: ref } });
  }
  files.set("index.json", Buffer.from(JSON.stringify({ schemaVersion: 2, manifests }, null, 2)));
  return files;
}

/** Writes an OCI image layout directory (see layoutFiles). */
export function writeOciLayout(dir: string, refs: Record<string, Image | Index>): void {
  for (const [name, data] of layoutFiles(refs)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), data);
  }
}

/** An OCI image layout as one tar archive (what `ctr images import` and `docker load` read). */
export function ociArchive(
  refs: Record<string, Image | Index>,
  annotate?: (ref: string) => Record<string, string>,
): Buffer {
  const entries: TarEntry[] = [];
  for (const [name, data] of layoutFiles(refs, annotate)) entries.push({ path: name, data });
  return tar(withParents(entries));
}

/** The descriptor an OCI layout's index.json gives for a ref name (or its only entry). */
export function layoutRef(dir: string, ref?: string): Descriptor {
  const index = JSON.parse(readFileSync(path.join(dir, "index.json"), "utf8")) as { manifests: Descriptor[] };
  const found = ref ? index.manifests.filter((m) => m.annotations?.[REF_NAME] === ref) : index.manifests;
  if (found.length !== 1) {
    throw new Error(`layout ${dir}: expected one entry for ${ref ?? "(any)"}, found ${found.length}`);
  }
  return found[0]!;
}

export function layoutBlob(dir: string, digest: string): Buffer {
  return readFileSync(path.join(dir, "blobs", "sha256", hex(digest)));
}
