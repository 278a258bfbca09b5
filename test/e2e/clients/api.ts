/**
 * Checks over plain HTTP that what a client pushed is really in the registry: manifests by tag and
 * by digest, and every referenced blob, each re-hashed here.
 */
import { MT, sha256 } from "./images.js";

export const ACCEPT_ALL = [MT.ociIndex, MT.ociManifest, MT.dockerList, MT.dockerManifest].join(", ");

export interface FetchedManifest {
  status: number;
  mediaType: string;
  /** Docker-Content-Digest as the registry sent it. */
  headerDigest: string | null;
  /** sha256 of the body as received. */
  digest: string;
  bytes: Buffer;
  json: ManifestJson;
}

export interface ManifestJson {
  schemaVersion?: number;
  mediaType?: string;
  config?: { mediaType: string; digest: string; size: number };
  layers?: { mediaType: string; digest: string; size: number }[];
  manifests?: {
    mediaType: string;
    digest: string;
    size: number;
    platform?: { architecture: string; os: string; variant?: string };
  }[];
  annotations?: Record<string, string>;
}

function describe(method: string, url: string, res: Response, body: string): string {
  const headers = [...res.headers.entries()].map(([k, v]) => `${k}: ${v}`).join("\n");
  return `${method} ${url} -> ${res.status} ${res.statusText}\n${headers}\n\n${body.slice(0, 2000)}`;
}

export async function getManifest(
  base: string,
  repo: string,
  ref: string,
  accept = ACCEPT_ALL,
): Promise<FetchedManifest> {
  const url = `${base}/v2/${repo}/manifests/${ref}`;
  const res = await fetch(url, { headers: { Accept: accept } });
  const bytes = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200)
    throw new Error(`manifest fetch failed: ${describe("GET", url, res, bytes.toString())}`);
  let json: ManifestJson;
  try {
    json = JSON.parse(bytes.toString()) as ManifestJson;
  } catch {
    throw new Error(`manifest is not JSON: ${describe("GET", url, res, bytes.toString())}`);
  }
  return {
    status: res.status,
    mediaType: res.headers.get("content-type") ?? "",
    headerDigest: res.headers.get("docker-content-digest"),
    digest: sha256(bytes),
    bytes,
    json,
  };
}

/** HEAD on a manifest: its digest and media type as the registry announces them. */
export async function headManifest(
  base: string,
  repo: string,
  ref: string,
): Promise<{ status: number; digest: string | null; mediaType: string | null; length: number | null }> {
  const url = `${base}/v2/${repo}/manifests/${ref}`;
  const res = await fetch(url, { method: "HEAD", headers: { Accept: ACCEPT_ALL } });
  const length = res.headers.get("content-length");
  return {
    status: res.status,
    digest: res.headers.get("docker-content-digest"),
    mediaType: res.headers.get("content-type"),
    length: length === null ? null : Number(length),
  };
}

export async function getBlob(base: string, repo: string, digest: string): Promise<Buffer> {
  const url = `${base}/v2/${repo}/blobs/${digest}`;
  const res = await fetch(url);
  const bytes = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200)
    throw new Error(`blob fetch failed: ${describe("GET", url, res, bytes.toString())}`);
  return bytes;
}

export async function listTags(base: string, repo: string): Promise<string[]> {
  const url = `${base}/v2/${repo}/tags/list`;
  const res = await fetch(url);
  const body = await res.text();
  if (res.status !== 200) throw new Error(`tag list failed: ${describe("GET", url, res, body)}`);
  return ((JSON.parse(body) as { tags: string[] | null }).tags ?? []).sort();
}

export interface VerifiedTree {
  /** Digest of the top manifest (index or image). */
  digest: string;
  mediaType: string;
  /** Digests of every blob reached, manifests included, in walk order. */
  digests: string[];
  /** For an index: child manifest digest by "os/arch[/variant]". */
  platforms: Record<string, string>;
}

/**
 * Fetches a manifest by tag or digest and then every manifest and blob it references, re-hashing
 * each one and checking sizes and the Docker-Content-Digest header. Throws on the first mismatch,
 * with the exact request and response.
 */
export async function verifyTree(base: string, repo: string, ref: string): Promise<VerifiedTree> {
  const top = await getManifest(base, repo, ref);
  const out: VerifiedTree = { digest: top.digest, mediaType: top.mediaType, digests: [], platforms: {} };
  await walk(base, repo, ref, top, undefined, out);
  return out;
}

async function walk(
  base: string,
  repo: string,
  ref: string,
  m: FetchedManifest,
  expected: { digest: string; size: number } | undefined,
  out: VerifiedTree,
): Promise<void> {
  const where = `${repo}@${ref}`;
  if (m.headerDigest !== m.digest) {
    throw new Error(`${where}: Docker-Content-Digest ${m.headerDigest} but the body hashes to ${m.digest}`);
  }
  if (expected && (expected.digest !== m.digest || expected.size !== m.bytes.length)) {
    throw new Error(
      `${where}: expected ${expected.digest} (${expected.size} bytes), got ${m.digest} (${m.bytes.length} bytes)`,
    );
  }
  if (m.json.mediaType && m.json.mediaType !== m.mediaType.split(";")[0]) {
    throw new Error(`${where}: Content-Type ${m.mediaType} but the manifest says ${m.json.mediaType}`);
  }
  out.digests.push(m.digest);
  if (m.json.manifests) {
    for (const child of m.json.manifests) {
      const fetched = await getManifest(base, repo, child.digest);
      if (child.platform) {
        const p = child.platform;
        out.platforms[[p.os, p.architecture, p.variant].filter(Boolean).join("/")] = child.digest;
      }
      await walk(base, repo, child.digest, fetched, child, out);
    }
    return;
  }
  for (const d of [m.json.config, ...(m.json.layers ?? [])]) {
    if (!d) continue;
    const bytes = await getBlob(base, repo, d.digest);
    const digest = sha256(bytes);
    if (digest !== d.digest || bytes.length !== d.size) {
      throw new Error(
        `${where}: blob ${d.digest} (${d.size} bytes) came back as ${digest} (${bytes.length} bytes)`,
      );
    }
    out.digests.push(d.digest);
  }
}
