// Blob pushes and pulls with curl (the S3 rows): the blob is written to a file first (untimed), then
// sent by curl, monolithic (POST, PUT ?digest= with the file) or in chunks (POST, one curl PATCH
// per chunk file with Content-Range, following each Location, then an empty PUT ?digest=).
import { createWriteStream, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { blobChunks } from "./blobdata.mjs";
import { curlOne } from "./curl.mjs";
import { run } from "./util.mjs";

/** Writes blob (seed, size) to `file` unless it is there already with that size. */
export async function blobFile(file, blob) {
  try {
    if (statSync(file).size === blob.size) return file;
  } catch {
    // Not there yet.
  }
  mkdirSync(path.dirname(file), { recursive: true });
  const out = createWriteStream(file);
  for (const chunk of blobChunks(blob.seed, blob.size)) {
    if (!out.write(chunk)) await new Promise((resolve) => out.once("drain", resolve));
  }
  await new Promise((resolve, reject) => out.end((err) => (err ? reject(err) : resolve())));
  return file;
}

/** `file` split into chunk files of chunkBytes in `dir` (split -b); returns their paths in order. */
export async function chunkFiles(file, dir, chunkBytes) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  await run("split", ["-a", "4", "-d", "-b", String(chunkBytes), file, path.join(dir, "c")]);
  return readdirSync(dir)
    .sort()
    .map((name) => path.join(dir, name));
}

function withDigest(location, server, digest) {
  const url = new URL(location, server.baseUrl);
  url.searchParams.set("digest", digest);
  return url.toString();
}

async function startUpload(server, repo) {
  const res = await curlOne(`${server.baseUrl}/v2/${repo}/blobs/uploads/`, {
    method: "POST",
    headers: ["Content-Length: 0"],
  });
  if (res.status !== 202 || !res.headers.location)
    throw new Error(`POST /v2/${repo}/blobs/uploads/: HTTP ${res.status}`);
  return res.headers.location;
}

/** POST, then PUT ?digest= with the whole file. Returns { seconds } from the POST to the 201. */
export async function curlPushMonolithic(server, repo, file, digest) {
  const t0 = performance.now();
  const location = await startUpload(server, repo);
  const res = await curlOne(withDigest(location, server, digest), {
    method: "PUT",
    headers: ["Content-Type: application/octet-stream"],
    upload: file,
  });
  if (res.status !== 201) throw new Error(`PUT ${repo} upload ?digest=: HTTP ${res.status}`);
  return { seconds: (performance.now() - t0) / 1000 };
}

/**
 * POST, a PATCH per chunk file, then the closing PUT ?digest= with no body. Returns { seconds }
 * for the whole push and { commitSeconds } for the closing PUT: from the last byte (acknowledged by
 * the last PATCH) to the 201.
 */
export async function curlPushChunked(server, repo, chunks, digest) {
  const t0 = performance.now();
  let location = await startUpload(server, repo);
  let offset = 0;
  for (const chunk of chunks) {
    const size = statSync(chunk).size;
    const res = await curlOne(new URL(location, server.baseUrl).toString(), {
      method: "PATCH",
      headers: ["Content-Type: application/octet-stream", `Content-Range: ${offset}-${offset + size - 1}`],
      upload: chunk,
    });
    if (res.status !== 202 || !res.headers.location)
      throw new Error(`PATCH ${repo} bytes ${offset}-${offset + size - 1}: HTTP ${res.status}`);
    location = res.headers.location;
    offset += size;
  }
  const res = await curlOne(withDigest(location, server, digest), {
    method: "PUT",
    headers: ["Content-Length: 0"],
  });
  if (res.status !== 201) throw new Error(`PUT ${repo} closing the chunked upload: HTTP ${res.status}`);
  return { seconds: (performance.now() - t0) / 1000, commitSeconds: res.seconds, patches: chunks.length };
}

/** GET of a blob into /dev/null (following redirects with `follow`); curl's own timing. */
export async function curlPull(server, repo, digest, { follow = false, size } = {}) {
  const res = await curlOne(`${server.baseUrl}/v2/${repo}/blobs/${digest}`, { follow });
  if (res.status !== 200) throw new Error(`GET /v2/${repo}/blobs/${digest}: HTTP ${res.status}`);
  if (size !== undefined && res.bytes !== size)
    throw new Error(`GET returned ${res.bytes} bytes, expected ${size}`);
  return { seconds: res.seconds, redirects: res.redirects };
}
