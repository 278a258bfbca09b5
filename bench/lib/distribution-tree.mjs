// Writes registry:2 (Distribution 2.8) data directories directly, file by file, the way Distribution lays
// them out: for the adoption benchmark (10,000 repositories, 100,000 manifests) and the adoption tests.
// Every manifest is a valid Docker schema2 image manifest whose config and layer blobs exist.
import { createHash } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";

export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
export const DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip";

export function sha256(data) {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

export class DistributionTree {
  constructor(root) {
    this.root = root;
    this.v2 = path.join(root, "docker", "registry", "v2");
  }

  blobPath(digest) {
    const hex = digest.slice("sha256:".length);
    return path.join(this.v2, "blobs", "sha256", hex.slice(0, 2), hex, "data");
  }

  repoDir(repo) {
    return path.join(this.v2, "repositories", ...repo.split("/"));
  }

  async file(file, data) {
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, data);
  }

  /** Stores bytes under their digest (or under `digest` when given: a blob that does not hash to its name). */
  async blob(data, digest = sha256(data)) {
    await this.file(this.blobPath(digest), data);
    return digest;
  }

  linkPath(repo, kind, digest) {
    const hex = digest.slice("sha256:".length);
    const base =
      kind === "layer"
        ? path.join(this.repoDir(repo), "_layers")
        : path.join(this.repoDir(repo), "_manifests", "revisions");
    return path.join(base, "sha256", hex, "link");
  }

  async link(repo, kind, digest) {
    await this.file(this.linkPath(repo, kind, digest), digest);
  }

  tagLinkPath(repo, tag) {
    return path.join(this.repoDir(repo), "_manifests", "tags", tag, "current", "link");
  }

  async tag(repo, tag, digest) {
    const hex = digest.slice("sha256:".length);
    await this.file(
      path.join(this.repoDir(repo), "_manifests", "tags", tag, "index", "sha256", hex, "link"),
      digest,
    );
    await this.file(this.tagLinkPath(repo, tag), digest);
  }

  /** A small image in `repo`: a config unique to `seed`, the given layers; returns the manifest's digest. */
  async image(repo, seed, layers, tags = []) {
    const config = Buffer.from(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        config: { Labels: { seed } },
        rootfs: { type: "layers" },
      }),
    );
    const configDigest = await this.blob(config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: DOCKER_MANIFEST,
        config: { mediaType: DOCKER_CONFIG, size: config.length, digest: configDigest },
        layers: layers.map((l) => ({ mediaType: DOCKER_LAYER, size: l.size, digest: l.digest })),
      }),
    );
    const digest = await this.blob(manifest);
    await this.link(repo, "layer", configDigest);
    for (const l of layers) await this.link(repo, "layer", l.digest);
    await this.link(repo, "revision", digest);
    for (const t of tags) await this.tag(repo, t, digest);
    return digest;
  }
}

async function mapLimit(items, limit, fn) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i], i);
      }
    }),
  );
}

export function syntheticRepo(i) {
  return `team-${String(i % 100).padStart(2, "0")}/app-${String(i).padStart(5, "0")}`;
}

/**
 * `repositories` repositories (two levels of names), `manifestsPerRepository` tagged images in each,
 * all sharing one 1 KiB layer. `onProgress(done)` after every 500 repositories.
 */
export async function writeSyntheticTree(root, { repositories, manifestsPerRepository, onProgress }) {
  const tree = new DistributionTree(root);
  const layerData = Buffer.alloc(1024, 7);
  const layer = { digest: await tree.blob(layerData), size: layerData.length };
  let done = 0;
  await mapLimit(
    Array.from({ length: repositories }, (_, i) => i),
    16,
    async (i) => {
      const repo = syntheticRepo(i);
      for (let m = 0; m < manifestsPerRepository; m++)
        await tree.image(repo, `${i}-${m}`, [layer], [`v${m}`]);
      done++;
      if (done % 500 === 0) onProgress?.(done);
    },
  );
  return tree;
}
