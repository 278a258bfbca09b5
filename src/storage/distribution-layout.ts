import { randomUUID } from "node:crypto";
import fss, { constants as fsc } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";

/**
 * Distribution's (registry:2) link files, read for adoption and written to keep a directory readable by
 * registry:2 (issue 12). Under `docker/registry/v2/repositories/<name>/`:
 *   _layers/sha256/<hex>/link                       a blob the repository may read
 *   _manifests/revisions/sha256/<hex>/link          a manifest of the repository
 *   _manifests/tags/<tag>/current/link              what the tag points at
 *   _manifests/tags/<tag>/index/sha256/<hex>/link   what the tag has pointed at
 *   _uploads/<id>/                                  an upload in progress (Distribution's own)
 * A link file holds the bare digest. Folders whose name starts with `_` are never repositories.
 *
 * Every write is atomic: the link is written to a temporary file in `berth/tmp` (same filesystem),
 * fsync'd, renamed into place, and the folder fsync'd. Removals rename a folder away before deleting it.
 */

import { hasDistributionRepositories, repositoriesDir } from "./distribution-probe.js";

export { hasDistributionRepositories, repositoriesDir } from "./distribution-probe.js";

export interface LinkFile {
  /** Where the link file is, for reports. */
  path: string;
  /** The digest it holds, or null when it is empty or not a digest. */
  digest: string | null;
  /** "empty" (0 bytes: Distribution 2.8 crashed while writing it) or "invalid". */
  problem: "empty" | "invalid" | null;
  /** The digest its folder names (revisions, layers, tag index entries). */
  named: string | null;
  modifiedAt: number;
}

export interface RepositoryLinks {
  name: string;
  revisions: LinkFile[];
  tags: { tag: string; link: LinkFile }[];
  layers: LinkFile[];
  /** Distribution's uploads in progress: folders under `_uploads`. */
  uploads: { id: string; path: string }[];
}

type Awaitable<T> = T | Promise<T>;

/**
 * registry:2's repositories and blobs wherever they are: a directory (DistributionLayout) or a bucket
 * (S3DistributionTree, distribution-s3.ts). Adoption reads through it; the journal (src/registry/
 * distribution-sync.ts) writes through it, so that registry:2 started on the same data serves what Berth does.
 */
export interface DistributionTree {
  /** Where the repositories are (a folder or an s3:// URL), for messages and reports. */
  readonly repositories: string;
  /** A tree on a filesystem: its root, which adoption's reading threads open themselves. */
  readonly root?: string;
  /** A tree on a filesystem: every repository name, in byte order (sync: see below). */
  listRepositories?(): string[];
  /** Whether there is any repository at all. */
  present(): Promise<boolean>;
  /** How many repositories there are (progress). */
  countRepositories(): Promise<number>;
  /**
   * Every repository, in name order, streamed (never all of them in memory); `links()` reads its link
   * files, so that the caller can read several repositories at once while the listing goes on.
   */
  scan(): AsyncIterable<{ name: string; links(): Promise<RepositoryLinks> }>;
  /** Every link file of one repository (not the blobs they name). */
  readRepository(name: string): Awaitable<RepositoryLinks>;
  /** Size and time of a stored blob, or null; never follows a symbolic link. */
  statBlob(digest: string): Awaitable<{ size: number; modifiedAt: number } | null>;
  /** A small blob's bytes (a manifest): the caller has checked its size. */
  readBlob(digest: string): Awaitable<Buffer>;
  /** Removes one of Distribution's uploads (they cannot be resumed: Distribution keeps Go's hash state). */
  purgeUpload(uploadPath: string): Promise<void>;
  writeLayer(repository: string, digest: string): Promise<void>;
  removeLayer(repository: string, digest: string): Promise<void>;
  writeRevision(repository: string, digest: string): Promise<void>;
  removeRevision(repository: string, digest: string): Promise<void>;
  /** Points a tag at `digest`, as Distribution does: the current link, and an entry in the tag's index. */
  writeTag(repository: string, tag: string, digest: string): Promise<void>;
  removeTag(repository: string, tag: string): Promise<void>;
  /** Removes a repository's `_manifests` (it has no manifest left). */
  removeManifests(repository: string): Promise<void>;
  /** Removes a repository's own link files (not those of repositories nested below it). */
  removeRepository(repository: string): Promise<void>;
  /** The current digest of a tag's link, or null. */
  readTag(repository: string, tag: string): Promise<string | null>;
}

const DIGEST = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]{32,})$/;
const HEX = /^[a-f0-9]{32,128}$/;
const ALGORITHM = /^[a-z0-9]+$/;
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}

/*
 * Reading for adoption is synchronous on purpose: it runs before the registry answers anything, and on a
 * tree of hundreds of thousands of tiny files the promise API's per-call cost (a thread-pool round trip and
 * a FileHandle per file) took several times longer than the system calls themselves.
 */
function dirEntries(dir: string): { name: string; dir: boolean }[] {
  try {
    // A folder that is a symbolic link is not followed (it may lead out of the data directory): lstat
    // first, as readdir would follow it. Entries that are links are never folders (isDirectory is false).
    if (!fss.lstatSync(dir).isDirectory()) return [];
    return fss.readdirSync(dir, { withFileTypes: true }).map((e) => ({ name: e.name, dir: e.isDirectory() }));
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}

const LINK_BUFFER = Buffer.alloc(512);

function readLinkSync(file: string, named: string | null): LinkFile | null {
  let fd: number;
  try {
    // O_NOFOLLOW: a link file that is a symbolic link is not read (ELOOP, reported as invalid below).
    fd = fss.openSync(file, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (err) {
    if (isNotFound(err)) return null;
    if ((err as NodeJS.ErrnoException).code === "ELOOP")
      return { path: file, digest: null, problem: "invalid", named, modifiedAt: 0 };
    throw err;
  }
  try {
    const st = fss.fstatSync(fd);
    const n = st.size > 0 ? fss.readSync(fd, LINK_BUFFER, 0, LINK_BUFFER.length, 0) : 0;
    const text = n > 0 && n < LINK_BUFFER.length ? LINK_BUFFER.toString("utf8", 0, n).trim() : "";
    const problem = st.size === 0 ? "empty" : DIGEST.test(text) ? null : "invalid";
    return { path: file, digest: problem ? null : text, problem, named, modifiedAt: st.mtimeMs };
  } finally {
    fss.closeSync(fd);
  }
}

/** Runs `fn` over `items`, at most `limit` at a time. */
export async function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

function assertComponents(name: string): string[] {
  const parts = name.split("/");
  if (parts.some((p) => !COMPONENT.test(p)))
    throw new Error(`refusing to build a path from repository name ${JSON.stringify(name)}`);
  return parts;
}

function digestParts(digest: string): [string, string] {
  const colon = digest.indexOf(":");
  const algorithm = digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  if (!ALGORITHM.test(algorithm) || !HEX.test(hex))
    throw new Error(`refusing to build a path from digest ${JSON.stringify(digest)}`);
  return [algorithm, hex];
}

export class DistributionLayout implements DistributionTree {
  readonly repositories: string;
  private readonly tmp: string;

  constructor(readonly root: string) {
    this.repositories = repositoriesDir(root);
    this.tmp = path.join(root, "berth", "tmp");
  }

  // ---------------------------------------------------------------- reading (adoption)

  /**
   * Every repository name, in byte order: a folder holding `_manifests` or `_layers`. Folders whose name
   * starts with `_` are not descended into. Folders are read `SCAN_CONCURRENCY` at a time.
   */
  listRepositories(onProgress?: (found: number) => void): string[] {
    const found: string[] = [];
    let queue: string[] = [""];
    while (queue.length > 0) {
      const next: string[] = [];
      for (const rel of queue) {
        const entries = dirEntries(path.join(this.repositories, rel));
        if (rel !== "" && entries.some((e) => e.dir && (e.name === "_manifests" || e.name === "_layers")))
          found.push(rel);
        for (const e of entries)
          if (e.dir && !e.name.startsWith("_")) next.push(rel === "" ? e.name : `${rel}/${e.name}`);
      }
      onProgress?.(found.length);
      queue = next;
    }
    return found.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  async present(): Promise<boolean> {
    return hasDistributionRepositories(this.root);
  }

  async countRepositories(): Promise<number> {
    return this.listRepositories().length;
  }

  async *scan(): AsyncIterable<{ name: string; links(): Promise<RepositoryLinks> }> {
    for (const name of this.listRepositories()) yield { name, links: async () => this.readRepository(name) };
  }

  /** Reads every link file of one repository (not the blobs they name). */
  readRepository(name: string): RepositoryLinks {
    const dir = path.join(this.repositories, ...name.split("/"));
    return {
      name,
      revisions: this.readDigestLinks(path.join(dir, "_manifests", "revisions")),
      layers: this.readDigestLinks(path.join(dir, "_layers")),
      tags: this.readTags(path.join(dir, "_manifests", "tags")),
      uploads: dirEntries(path.join(dir, "_uploads"))
        .filter((u) => u.dir)
        .map((u) => ({
          id: u.name,
          path: path.join(dir, "_uploads", u.name),
        })),
    };
  }

  /** `<dir>/<algorithm>/<hex>/link` for every algorithm and hex. */
  private readDigestLinks(dir: string): LinkFile[] {
    const out: LinkFile[] = [];
    for (const alg of dirEntries(dir)) {
      if (!alg.dir) continue;
      for (const e of dirEntries(path.join(dir, alg.name))) {
        if (!e.dir) continue;
        const link = readLinkSync(path.join(dir, alg.name, e.name, "link"), `${alg.name}:${e.name}`);
        if (link) out.push(link);
      }
    }
    return out;
  }

  private readTags(dir: string): { tag: string; link: LinkFile }[] {
    const out: { tag: string; link: LinkFile }[] = [];
    for (const e of dirEntries(dir)) {
      if (!e.dir) continue;
      const link = readLinkSync(path.join(dir, e.name, "current", "link"), null);
      if (link) out.push({ tag: e.name, link });
    }
    return out;
  }

  /** registry:2's place for a blob's bytes (the filesystem blob store keeps them in the same place). */
  private blobPath(digest: string): string {
    const [algorithm, hex] = digestParts(digest);
    return path.join(this.root, "docker", "registry", "v2", "blobs", algorithm, hex.slice(0, 2), hex, "data");
  }

  /** Size and time of a stored blob, or null (sync, like the rest of the reading); a link is not followed. */
  statBlob(digest: string): { size: number; modifiedAt: number } | null {
    try {
      const st = fss.lstatSync(this.blobPath(digest));
      if (!st.isFile()) return null;
      return { size: st.size, modifiedAt: st.mtimeMs };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  /** A small blob's bytes (a manifest); a link is not followed. */
  readBlob(digest: string): Buffer {
    const fd = fss.openSync(this.blobPath(digest), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    try {
      return fss.readFileSync(fd);
    } finally {
      fss.closeSync(fd);
    }
  }

  /** Removes one of Distribution's uploads (they cannot be resumed: Distribution keeps Go's hash state). */
  async purgeUpload(uploadPath: string): Promise<void> {
    if (
      !uploadPath.startsWith(this.repositories + path.sep) ||
      !uploadPath.includes(`${path.sep}_uploads${path.sep}`)
    )
      throw new Error(`refusing to remove ${uploadPath}`);
    await this.assertNoLinks(uploadPath);
    await this.removeTree(uploadPath);
  }

  /**
   * Refuses a path inside the tree that passes through a symbolic link (every component from the root down,
   * the last included), or whose real path is not below the root: what it names may be outside the data
   * directory, and removing it there would destroy files that are not registry:2's.
   */
  private async assertNoLinks(target: string): Promise<void> {
    const rel = path.relative(this.root, target);
    if (rel.startsWith("..") || path.isAbsolute(rel))
      throw new Error(`refusing to touch ${target}: outside ${this.root}`);
    let current = this.root;
    for (const part of rel.split(path.sep)) {
      current = path.join(current, part);
      let st: fss.Stats;
      try {
        st = await fs.lstat(current);
      } catch (err) {
        if (isNotFound(err)) return;
        throw err;
      }
      if (st.isSymbolicLink()) throw new Error(`refusing to touch ${target}: ${current} is a symbolic link`);
    }
    const real = await fs.realpath(target).catch(() => null);
    const realRoot = await fs.realpath(this.root);
    if (real && real !== realRoot && !real.startsWith(realRoot + path.sep))
      throw new Error(`refusing to touch ${target}: it resolves to ${real}, outside ${realRoot}`);
  }

  // ---------------------------------------------------------------- writing (keeping registry:2 able to read)

  private repoDir(name: string): string {
    return path.join(this.repositories, ...assertComponents(name));
  }

  private tagDir(repository: string, tag: string): string {
    if (!TAG.test(tag)) throw new Error(`refusing to build a path from tag ${JSON.stringify(tag)}`);
    return path.join(this.repoDir(repository), "_manifests", "tags", tag);
  }

  private digestDir(repository: string, kind: "layer" | "revision", digest: string): string {
    const [algorithm, hex] = digestParts(digest);
    const base =
      kind === "layer"
        ? path.join(this.repoDir(repository), "_layers")
        : path.join(this.repoDir(repository), "_manifests", "revisions");
    return path.join(base, algorithm, hex);
  }

  async writeLayer(repository: string, digest: string): Promise<void> {
    await this.writeLink(path.join(this.digestDir(repository, "layer", digest), "link"), digest);
  }

  async removeLayer(repository: string, digest: string): Promise<void> {
    await this.removeLink(this.digestDir(repository, "layer", digest), repository);
  }

  async writeRevision(repository: string, digest: string): Promise<void> {
    await this.writeLink(path.join(this.digestDir(repository, "revision", digest), "link"), digest);
  }

  async removeRevision(repository: string, digest: string): Promise<void> {
    await this.removeLink(this.digestDir(repository, "revision", digest), repository);
  }

  /** Points a tag at `digest`, as Distribution does: the current link, and an entry in the tag's index. */
  async writeTag(repository: string, tag: string, digest: string): Promise<void> {
    const dir = this.tagDir(repository, tag);
    const [algorithm, hex] = digestParts(digest);
    await this.writeLink(path.join(dir, "index", algorithm, hex, "link"), digest);
    await this.writeLink(path.join(dir, "current", "link"), digest);
  }

  async removeTag(repository: string, tag: string): Promise<void> {
    await this.removeTree(this.tagDir(repository, tag));
  }

  /** Removes a repository's `_manifests` folder (it has no manifest left). */
  async removeManifests(repository: string): Promise<void> {
    await this.removeTree(path.join(this.repoDir(repository), "_manifests"));
  }

  /** Removes a repository's own folders (not those of repositories nested below it), then empty parents. */
  async removeRepository(repository: string): Promise<void> {
    const dir = this.repoDir(repository);
    for (const sub of ["_manifests", "_layers", "_uploads"]) await this.removeTree(path.join(dir, sub));
    let current = dir;
    while (current.startsWith(this.repositories + path.sep)) {
      try {
        await fs.rmdir(current);
      } catch {
        break;
      }
      current = path.dirname(current);
    }
    await fsyncDir(current).catch(() => {});
  }

  /** The current digest of a tag's link, or null (for tests and repairs). */
  async readTag(repository: string, tag: string): Promise<string | null> {
    return readLinkSync(path.join(this.tagDir(repository, tag), "current", "link"), null)?.digest ?? null;
  }

  private async writeLink(file: string, digest: string): Promise<void> {
    const dir = path.dirname(file);
    let existing: LinkFile | null = null;
    try {
      existing = readLinkSync(file, null);
    } catch {}
    if (existing?.digest === digest) return;
    await fs.mkdir(this.tmp, { recursive: true });
    const tmp = path.join(this.tmp, `link-${randomUUID()}`);
    const handle = await fs.open(tmp, fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o644);
    try {
      await handle.writeFile(digest);
      await handle.sync();
    } finally {
      await handle.close();
    }
    const first = await fs.mkdir(dir, { recursive: true });
    await fs.rename(tmp, file);
    await fsyncDir(dir);
    if (first) {
      // Folders made just now: their entries in their parents must be durable too.
      for (let d = path.dirname(dir); d.length >= path.dirname(first).length; d = path.dirname(d)) {
        await fsyncDir(d);
        if (d === path.dirname(first)) break;
      }
    }
  }

  /**
   * Removes `<dir>/link`, then the folders left empty up to (not including) the repository's folder:
   * registry:2 lists a repository in its catalog for as long as it has a `_layers` folder.
   */
  private async removeLink(dir: string, repository: string): Promise<void> {
    try {
      await fs.unlink(path.join(dir, "link"));
    } catch (err) {
      if (!isNotFound(err)) throw err;
      return;
    }
    const stop = this.repoDir(repository);
    let current = dir;
    while (current.startsWith(stop + path.sep)) {
      try {
        await fs.rmdir(current);
      } catch {
        break;
      }
      current = path.dirname(current);
    }
    await fsyncDir(current).catch(() => {});
  }

  /** Renames a folder out of the tree (atomic, fsync'd), then deletes it. */
  private async removeTree(dir: string): Promise<void> {
    await fs.mkdir(this.tmp, { recursive: true });
    const away = path.join(this.tmp, `gone-${randomUUID()}`);
    try {
      await fs.rename(dir, away);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    await fsyncDir(path.dirname(dir));
    await fs.rm(away, { recursive: true, force: true });
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
