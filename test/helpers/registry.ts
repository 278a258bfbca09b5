import { createHash, randomBytes } from "node:crypto";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

export interface Blob {
  data: Buffer;
  digest: string;
  size: number;
}

export function blobOf(data: Buffer | string): Blob {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
  return { data: buf, digest: sha256(buf), size: buf.length };
}

export function randomBlob(size: number): Blob {
  return blobOf(randomBytes(size));
}

/** A small HTTP client for the distribution API, for tests. */
export class RegistryClient {
  constructor(
    readonly base: string,
    readonly headers: Record<string, string> = {},
  ) {}

  fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const url = path.startsWith("http") ? path : `${this.base}${path}`;
    return fetch(url, { ...init, headers: { ...this.headers, ...(init.headers as Record<string, string>) } });
  }

  /** Monolithic push (POST ?digest=). */
  async pushBlob(name: string, blob: Blob): Promise<Response> {
    const res = await this.fetch(`/v2/${name}/blobs/uploads/?digest=${blob.digest}`, {
      method: "POST",
      body: blob.data,
      headers: { "content-type": "application/octet-stream" },
    });
    if (res.status !== 201) throw new Error(`push blob ${blob.digest}: ${res.status} ${await res.text()}`);
    return res;
  }

  /** Chunked push: POST, PATCH each chunk with Content-Range, PUT ?digest=. */
  async pushBlobChunked(name: string, blob: Blob, chunkSize: number): Promise<Response> {
    let res = await this.fetch(`/v2/${name}/blobs/uploads/`, { method: "POST" });
    if (res.status !== 202) throw new Error(`start upload: ${res.status} ${await res.text()}`);
    let location = res.headers.get("location")!;
    for (let offset = 0; offset < blob.size; offset += chunkSize) {
      const chunk = blob.data.subarray(offset, offset + chunkSize);
      res = await this.fetch(location, {
        method: "PATCH",
        body: chunk,
        headers: {
          "content-type": "application/octet-stream",
          "content-range": `${offset}-${offset + chunk.length - 1}`,
        },
      });
      if (res.status !== 202) throw new Error(`patch: ${res.status} ${await res.text()}`);
      location = res.headers.get("location")!;
    }
    res = await this.fetch(`${location}${location.includes("?") ? "&" : "?"}digest=${blob.digest}`, {
      method: "PUT",
    });
    if (res.status !== 201) throw new Error(`finish upload: ${res.status} ${await res.text()}`);
    return res;
  }

  async putManifest(
    name: string,
    reference: string,
    manifest: object | Buffer,
    mediaType = OCI_MANIFEST,
  ): Promise<Response> {
    const body = Buffer.isBuffer(manifest) ? manifest : Buffer.from(JSON.stringify(manifest));
    return this.fetch(`/v2/${name}/manifests/${reference}`, {
      method: "PUT",
      body,
      headers: { "content-type": mediaType },
    });
  }

  /** Pushes config and layers, then the manifest under `tag`; returns the manifest digest and bytes. */
  async pushImage(
    name: string,
    tag: string,
    options: { layers?: Blob[]; config?: object; mediaType?: string; extra?: Record<string, unknown> } = {},
  ): Promise<{ digest: string; manifest: Buffer; layers: Blob[]; config: Blob }> {
    const layers = options.layers ?? [randomBlob(1024)];
    const config = blobOf(
      JSON.stringify(
        options.config ?? { architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } },
      ),
    );
    const mediaType = options.mediaType ?? OCI_MANIFEST;
    const docker = mediaType === DOCKER_MANIFEST;
    for (const blob of [config, ...layers]) await this.pushBlob(name, blob);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType,
        config: {
          mediaType: docker
            ? "application/vnd.docker.container.image.v1+json"
            : "application/vnd.oci.image.config.v1+json",
          digest: config.digest,
          size: config.size,
        },
        layers: layers.map((l) => ({
          mediaType: docker
            ? "application/vnd.docker.image.rootfs.diff.tar.gzip"
            : "application/vnd.oci.image.layer.v1.tar+gzip",
          digest: l.digest,
          size: l.size,
        })),
        ...options.extra,
      }),
    );
    const res = await this.putManifest(name, tag, manifest, mediaType);
    if (res.status !== 201) throw new Error(`put manifest: ${res.status} ${await res.text()}`);
    return { digest: sha256(manifest), manifest, layers, config };
  }
}

export async function errorCode(res: Response): Promise<string | undefined> {
  const body = (await res.json()) as { errors?: { code: string }[] };
  return body.errors?.[0]?.code;
}
