import type { DistributionTree, LinkFile, RepositoryLinks } from "./distribution-layout.js";
import type { S3BlobStore } from "./s3.js";

/**
 * registry:2's repositories in an S3 bucket (issue 20): the same layout as on a filesystem, under the
 * store's `rootdirectory`, one object per link file:
 *   docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link
 *   docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link
 *   docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link (and index/sha256/<hex>/link)
 *   docker/registry/v2/repositories/<name>/_uploads/<id>/...
 *
 * Reading pages through ListObjectsV2 in key order and hands out one repository at a time: every key of a
 * repository starts with `<name>/_` (no repository name has a component starting with `_`), and the keys
 * with one prefix are contiguous in key order, so a repository is complete when a key of the next one comes.
 * Nothing but the repository being read is held in memory, however many there are.
 *
 * A layer or revision link is taken from its key when the object's size is that of the digest its key names
 * (registry:2 writes exactly the digest there): one listing instead of a GET per link. An empty object is
 * the 0-byte link Distribution 2.8 leaves after a crash; any other size is read and reported when it does
 * not hold the digest. Tags' current links are read (their content is the only place the target is).
 * Writes are single PutObject and DeleteObjects calls: S3 makes each object appear whole.
 */

const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$/;
const NAMED = /^[a-z0-9]+:[a-f0-9]{32,128}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;
/** Tags' current links read at once, per repository. */
const TAG_READS = 8;

interface Listed {
  key: string;
  size: number;
  modifiedAt: number;
}

/** What one key says about its repository, or null for keys that are not link files of one. */
function parseKey(rel: string): { repository: string; part: string[] } | null {
  const parts = rel.split("/");
  const at = parts.findIndex((p) => p.startsWith("_"));
  if (at <= 0) return null;
  return { repository: parts.slice(0, at).join("/"), part: parts.slice(at) };
}

export class S3DistributionTree implements DistributionTree {
  /** The key prefix of the repositories (ends with `/`). */
  private readonly base: string;
  readonly repositories: string;

  constructor(private readonly store: S3BlobStore) {
    this.base = `${store.prefix}docker/registry/v2/repositories/`;
    this.repositories = `s3://${store.options.bucket}/${this.base}`;
  }

  async present(): Promise<boolean> {
    return (await this.store.foreignRepositories()) !== null;
  }

  async countRepositories(): Promise<number> {
    let count = 0;
    let last: string | null = null;
    for await (const o of this.store.listObjects(this.base)) {
      const parsed = parseKey(o.key.slice(this.base.length));
      if (parsed && parsed.repository !== last) {
        count++;
        last = parsed.repository;
      }
    }
    return count;
  }

  async *scan(): AsyncIterable<{ name: string; links(): Promise<RepositoryLinks> }> {
    let name: string | null = null;
    let keys: Listed[] = [];
    const pending = (n: string, k: Listed[]) => ({ name: n, links: () => this.linksOf(n, k) });
    for await (const o of this.store.listObjects(this.base)) {
      const parsed = parseKey(o.key.slice(this.base.length));
      if (!parsed) continue;
      if (parsed.repository !== name) {
        if (name !== null) yield pending(name, keys);
        name = parsed.repository;
        keys = [];
      }
      keys.push(o);
    }
    if (name !== null) yield pending(name, keys);
  }

  async readRepository(name: string): Promise<RepositoryLinks> {
    const keys: Listed[] = [];
    for await (const o of this.store.listObjects(`${this.repoPrefix(name)}_`)) keys.push(o);
    return this.linksOf(name, keys);
  }

  /** The link files of one repository from its listed keys; tags' current links are read. */
  private async linksOf(name: string, keys: Listed[]): Promise<RepositoryLinks> {
    const out: RepositoryLinks = { name, revisions: [], tags: [], layers: [], uploads: [] };
    const uploads = new Set<string>();
    const tagKeys: { tag: string; listed: Listed }[] = [];
    const pending: Promise<void>[] = [];
    const prefix = `${this.base}${name}/`;
    for (const o of keys) {
      const part = o.key.slice(prefix.length).split("/");
      const kind = part[0];
      if (kind === "_layers" && part.length === 4 && part[3] === "link") {
        pending.push(this.digestLink(o, `${part[1]}:${part[2]}`).then((l) => void out.layers.push(l)));
      } else if (
        kind === "_manifests" &&
        part[1] === "revisions" &&
        part.length === 5 &&
        part[4] === "link"
      ) {
        pending.push(this.digestLink(o, `${part[2]}:${part[3]}`).then((l) => void out.revisions.push(l)));
      } else if (kind === "_manifests" && part[1] === "tags" && part.length === 5 && part[3] === "current") {
        if (part[4] === "link") tagKeys.push({ tag: part[2] as string, listed: o });
      } else if (kind === "_uploads" && part.length >= 3) {
        uploads.add(part[1] as string);
      }
    }
    await Promise.all(pending);
    for (let i = 0; i < tagKeys.length; i += TAG_READS) {
      const slice = tagKeys.slice(i, i + TAG_READS);
      const links = await Promise.all(slice.map((t) => this.readLink(t.listed, null)));
      for (const [j, t] of slice.entries()) out.tags.push({ tag: t.tag, link: links[j] as LinkFile });
    }
    for (const id of [...uploads].sort()) out.uploads.push({ id, path: `${prefix}_uploads/${id}/` });
    const byPath = (a: LinkFile, b: LinkFile) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
    out.layers.sort(byPath);
    out.revisions.sort(byPath);
    return out;
  }

  /** A link whose key names its digest: taken from the key when its size says it holds exactly that. */
  private async digestLink(o: Listed, named: string): Promise<LinkFile> {
    const valid = NAMED.test(named) ? named : null;
    if (valid && o.size === valid.length) {
      return {
        path: this.where(o.key),
        digest: valid,
        problem: null,
        named: valid,
        modifiedAt: o.modifiedAt,
      };
    }
    return this.readLink(o, valid);
  }

  private async readLink(o: Listed, named: string | null): Promise<LinkFile> {
    const path = this.where(o.key);
    if (o.size === 0) return { path, digest: null, problem: "empty", named, modifiedAt: o.modifiedAt };
    const body = o.size < 512 ? await this.store.getObject("GetObject registry:2 link", o.key) : null;
    const text = body?.toString("utf8").trim() ?? "";
    if (body?.length === 0) return { path, digest: null, problem: "empty", named, modifiedAt: o.modifiedAt };
    const ok = DIGEST.test(text);
    return {
      path,
      digest: ok ? text : null,
      problem: ok ? null : "invalid",
      named,
      modifiedAt: o.modifiedAt,
    };
  }

  private where(key: string): string {
    return `s3://${this.store.options.bucket}/${key}`;
  }

  async statBlob(digest: string): Promise<{ size: number; modifiedAt: number } | null> {
    return this.store.statAtDistributionKey(digest);
  }

  async readBlob(digest: string): Promise<Buffer> {
    const body = await this.store.readAtDistributionKey(digest);
    if (!body) throw new Error(`blob ${digest} is gone from the bucket`);
    return body;
  }

  async purgeUpload(uploadPath: string): Promise<void> {
    const key = uploadPath.startsWith(`s3://${this.store.options.bucket}/`)
      ? uploadPath.slice(`s3://${this.store.options.bucket}/`.length)
      : uploadPath;
    if (!key.startsWith(this.base) || !/\/_uploads\/[^/]+\/$/.test(key))
      throw new Error(`refusing to remove ${uploadPath}`);
    await this.removePrefix(key);
  }

  // ---------------------------------------------------------------- writing

  private repoPrefix(name: string): string {
    const parts = name.split("/");
    if (parts.some((p) => !COMPONENT.test(p)))
      throw new Error(`refusing to build a key from repository name ${JSON.stringify(name)}`);
    return `${this.base}${name}/`;
  }

  private digestPath(digest: string): string {
    if (!NAMED.test(digest)) throw new Error(`refusing to build a key from digest ${JSON.stringify(digest)}`);
    return digest.replace(":", "/");
  }

  private tagPrefix(repository: string, tag: string): string {
    if (!TAG.test(tag)) throw new Error(`refusing to build a key from tag ${JSON.stringify(tag)}`);
    return `${this.repoPrefix(repository)}_manifests/tags/${tag}/`;
  }

  private layerKey(repository: string, digest: string): string {
    return `${this.repoPrefix(repository)}_layers/${this.digestPath(digest)}/link`;
  }

  private revisionKey(repository: string, digest: string): string {
    return `${this.repoPrefix(repository)}_manifests/revisions/${this.digestPath(digest)}/link`;
  }

  async writeLayer(repository: string, digest: string): Promise<void> {
    await this.store.putObject("PutObject registry:2 link", this.layerKey(repository, digest), digest);
  }

  async removeLayer(repository: string, digest: string): Promise<void> {
    await this.store.deleteKeys([this.layerKey(repository, digest)]);
  }

  async writeRevision(repository: string, digest: string): Promise<void> {
    await this.store.putObject("PutObject registry:2 link", this.revisionKey(repository, digest), digest);
  }

  async removeRevision(repository: string, digest: string): Promise<void> {
    await this.store.deleteKeys([this.revisionKey(repository, digest)]);
  }

  async writeTag(repository: string, tag: string, digest: string): Promise<void> {
    const dir = this.tagPrefix(repository, tag);
    await this.store.putObject(
      "PutObject registry:2 link",
      `${dir}index/${this.digestPath(digest)}/link`,
      digest,
    );
    await this.store.putObject("PutObject registry:2 link", `${dir}current/link`, digest);
  }

  async removeTag(repository: string, tag: string): Promise<void> {
    await this.removePrefix(this.tagPrefix(repository, tag));
  }

  async removeManifests(repository: string): Promise<void> {
    await this.removePrefix(`${this.repoPrefix(repository)}_manifests/`);
  }

  async removeRepository(repository: string): Promise<void> {
    const prefix = this.repoPrefix(repository);
    for (const sub of ["_manifests/", "_layers/", "_uploads/"]) await this.removePrefix(`${prefix}${sub}`);
  }

  async readTag(repository: string, tag: string): Promise<string | null> {
    const body = await this.store.getObject(
      "GetObject registry:2 link",
      `${this.tagPrefix(repository, tag)}current/link`,
    );
    const text = body?.toString("utf8").trim() ?? "";
    return DIGEST.test(text) ? text : null;
  }

  /** Deletes every object under `prefix`, a page at a time. */
  private async removePrefix(prefix: string): Promise<void> {
    let batch: string[] = [];
    for await (const o of this.store.listObjects(prefix)) {
      batch.push(o.key);
      if (batch.length >= 1000) {
        await this.store.deleteKeys(batch);
        batch = [];
      }
    }
    if (batch.length > 0) await this.store.deleteKeys(batch);
  }
}
