// OCI Distribution API client operations used by the metrics: blob uploads (monolithic and
// chunked), cross-repository mounts, manifests, pulls. Bodies are streamed; nothing big is buffered.
import { blobChunks, pseudoRandomBytes, sha256Digest } from "./blobdata.mjs";
import { expectStatus, request } from "./http.mjs";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";

const BIG_TIMEOUT = 30 * 60_000;

function resolveLocation(server, res, what) {
  const location = res.headers.location;
  if (!location) throw new Error(`${what}: HTTP ${res.status} without a Location header`);
  return new URL(location, server.baseUrl).toString();
}

function withQuery(url, params) {
  const u = new URL(url);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u.toString();
}

/** POST /v2/<repo>/blobs/uploads/ → the upload session URL. */
export async function startUpload(server, repo) {
  const res = await request(`${server.baseUrl}/v2/${repo}/blobs/uploads/`, {
    method: "POST",
    headers: { "Content-Length": "0" },
  });
  expectStatus(res, 202, `POST /v2/${repo}/blobs/uploads/`);
  return resolveLocation(server, res, "POST upload");
}

/**
 * Monolithic push of generated blob (seed, size, digest): POST, then one PUT ?digest= carrying the
 * whole body. Returns { ms } measured from the POST to the PUT's 201.
 */
export async function pushBlobMonolithic(server, repo, blob) {
  const t0 = performance.now();
  const location = await startUpload(server, repo);
  const res = await request(withQuery(location, { digest: blob.digest }), {
    method: "PUT",
    headers: { "Content-Type": "application/octet-stream", "Content-Length": String(blob.size) },
    chunks: blobChunks(blob.seed, blob.size),
    timeoutMs: BIG_TIMEOUT,
  });
  expectStatus(res, 201, `PUT ${repo} upload ?digest= (${blob.size} bytes)`);
  return { ms: performance.now() - t0 };
}

/**
 * Chunked push: POST, then PATCH chunks of chunkSize with Content-Range, then PUT ?digest= with an
 * empty body. Returns { ms, patches }.
 */
export async function pushBlobChunked(server, repo, blob, chunkSize) {
  const t0 = performance.now();
  let location = await startUpload(server, repo);
  let patches = 0;
  for (let start = 0; start < blob.size; start += chunkSize) {
    const end = Math.min(blob.size, start + chunkSize);
    const res = await request(location, {
      method: "PATCH",
      headers: {
        "Content-Type": "application/octet-stream",
        "Content-Length": String(end - start),
        "Content-Range": `${start}-${end - 1}`,
      },
      chunks: blobChunks(blob.seed, blob.size, { start, end }),
      timeoutMs: BIG_TIMEOUT,
    });
    expectStatus(res, 202, `PATCH ${repo} upload bytes ${start}-${end - 1}`);
    location = resolveLocation(server, res, "PATCH upload");
    patches++;
  }
  const res = await request(withQuery(location, { digest: blob.digest }), {
    method: "PUT",
    headers: { "Content-Length": "0" },
    timeoutMs: BIG_TIMEOUT,
  });
  expectStatus(res, 201, `PUT ${repo} upload ?digest= (closing a chunked upload)`);
  return { ms: performance.now() - t0, patches };
}

/** GET /v2/<repo>/blobs/<digest>, hashing the stream. Returns { ms, bytes, digest }. */
export async function pullBlob(server, repo, digest) {
  const t0 = performance.now();
  const res = await request(`${server.baseUrl}/v2/${repo}/blobs/${digest}`, {
    response: "sha256",
    timeoutMs: BIG_TIMEOUT,
  });
  expectStatus(res, 200, `GET /v2/${repo}/blobs/${digest}`);
  const ms = performance.now() - t0;
  const got = `sha256:${res.sha256}`;
  if (got !== digest) throw new Error(`GET /v2/${repo}/blobs/${digest} returned content with digest ${got}`);
  return { ms, bytes: res.bytes, digest: got };
}

/** Pushes a small in-memory blob (POST, then PUT ?digest= with the body). */
export async function pushSmallBlob(server, repo, buffer, digest = sha256Digest(buffer)) {
  const location = await startUpload(server, repo);
  const res = await request(withQuery(location, { digest }), {
    method: "PUT",
    headers: { "Content-Type": "application/octet-stream", "Content-Length": String(buffer.length) },
    body: buffer,
  });
  expectStatus(res, 201, `PUT ${repo} small blob`);
  return digest;
}

/**
 * Cross-repository mount of `digest` from `from` into `repo`. A registry that answers 202 instead
 * (mount refused, upload session opened) gets the bytes uploaded into that session.
 */
export async function mountBlob(server, repo, digest, from, buffer) {
  const url = `${server.baseUrl}/v2/${repo}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`;
  const res = await request(url, { method: "POST", headers: { "Content-Length": "0" } });
  if (res.status === 201) return "mounted";
  expectStatus(res, 202, `POST mount ${digest} from ${from} into ${repo}`);
  const location = resolveLocation(server, res, "mount fallback");
  const put = await request(withQuery(location, { digest }), {
    method: "PUT",
    headers: { "Content-Type": "application/octet-stream", "Content-Length": String(buffer.length) },
    body: buffer,
  });
  expectStatus(put, 201, `PUT ${repo} blob after a refused mount`);
  return "uploaded";
}

export async function putManifest(server, repo, reference, manifest, mediaType = OCI_MANIFEST) {
  const res = await request(`${server.baseUrl}/v2/${repo}/manifests/${reference}`, {
    method: "PUT",
    headers: { "Content-Type": mediaType, "Content-Length": String(manifest.length) },
    body: manifest,
  });
  expectStatus(res, 201, `PUT /v2/${repo}/manifests/${reference}`);
  return res.headers["docker-content-digest"];
}

/**
 * A tiny single-layer OCI image, deterministic for a given name: a config blob, one layer blob and
 * an OCI image manifest referring to both.
 */
export function smallImage(name, layerBytes = 4096) {
  const layer = pseudoRandomBytes(`layer:${name}`, layerBytes);
  const layerDigest = sha256Digest(layer);
  const config = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: { Env: [`BENCH_IMAGE=${name}`] },
      rootfs: { type: "layers", diff_ids: [layerDigest] },
    }),
  );
  const configDigest = sha256Digest(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.length },
      layers: [{ mediaType: OCI_LAYER_GZIP, digest: layerDigest, size: layer.length }],
    }),
  );
  return { config, configDigest, layer, layerDigest, manifest, manifestDigest: sha256Digest(manifest) };
}

/** Pushes smallImage(...) to repo:tag. */
export async function pushSmallImage(server, repo, tag, image) {
  await pushSmallBlob(server, repo, image.config, image.configDigest);
  await pushSmallBlob(server, repo, image.layer, image.layerDigest);
  return putManifest(server, repo, tag, image.manifest);
}
