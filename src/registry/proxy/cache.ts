/**
 * The pull-through cache (issue 13), in the domain: which repositories are mirrors of which upstream,
 * and how manifests and blobs come into the store when a client first asks for them.
 *
 * - Blobs are fetched once: the first request in a process streams the upstream's bytes to its client
 *   while they are written to an upload file and hashed; only a blob whose digest matches is committed
 *   (fsync, rename, one transaction: the path of a pushed blob), otherwise nothing is stored and the
 *   client's response is aborted. Other requests for the same blob wait for that commit and are served
 *   from the store. Across worker processes a lease in the database (`proxy:blob:<digest>`) elects the
 *   one that fetches; the others wait for the blob to appear.
 * - Manifests by digest are immutable: once cached they are served without asking the upstream.
 * - A cached tag is served for `tagttl`; after that one HEAD asks the upstream for its digest (Docker Hub
 *   does not count HEADs against its rate limits). When the upstream is down, slow or rate-limited, the
 *   cached manifest is served with a warning.
 */
import { createHash, randomUUID } from "node:crypto";
import { PassThrough, type Readable } from "node:stream";
import type { ManifestRow, MetadataStore } from "../../metadata/store.js";
import type { BlobStore } from "../../storage/blob-store.js";
import { RegistryError } from "../errors.js";
import { Lease } from "../gc.js";
import { manifestRecord, parseManifest } from "../manifests.js";
import { lookupReference, parseDigest } from "../names.js";
import { header, readSmall, UpstreamClient, UpstreamError } from "./client.js";

export interface UpstreamSettings {
  /** Repository-name prefix served from this upstream; null: every repository (registry:2's remoteurl). */
  prefix: string | null;
  remoteurl: string;
  username?: string;
  password?: string;
  ca?: string;
  tagTtlMs: number;
  timeoutMs: number;
  allowPush: boolean;
  /** Token realm hosts beyond the upstream's registrable domain that may receive its credentials. */
  realmHosts?: string[];
  /** proxy.ttl: cached content not pulled for this long is expired (expiry.ts); 0: never. */
  ttlMs: number;
}

/** Counts for metrics, filled in by the HTTP layer (labels: the upstream's name). */
export interface ProxyObserver {
  hit(upstream: string, kind: "manifest" | "blob"): void;
  miss(upstream: string, kind: "manifest" | "blob"): void;
  fetched(upstream: string, bytes: number): void;
  error(upstream: string, kind: string): void;
  /** Served from the cache because the upstream could not be asked (log line). */
  stale(upstream: string, repository: string, reference: string, reason: string): void;
  /** A request the upstream failed, so that the client gets an error (log line naming the cause). */
  failed(upstream: string, kind: string, reason: string): void;
}

export interface Upstream extends UpstreamSettings {
  /** For metrics, logs and the API: the prefix, or the upstream's host. */
  label: string;
  client: UpstreamClient;
}

/** A manifest row with, when it was served from the cache without the upstream's word, why. */
export type ProxiedManifest = ManifestRow & { warning?: string };

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const BLOB_LEASE_MS = 30_000;
const FOLLOWER_POLL_MS = 200;
const BODY_IDLE_MS = 60_000;
/** Entries kept in the per-process maps (tag check times, blob sizes) before they are dropped wholesale. */
const MAP_LIMIT = 100_000;

function remember<K, V>(map: Map<K, V>, key: K, value: V): void {
  if (map.size >= MAP_LIMIT && !map.has(key)) map.clear();
  map.set(key, value);
}

/** The key of a size hint: what one manifest of one remote repository of one upstream declared. */
function sizeKey(upstream: Upstream, remote: string, digest: string): string {
  return `${upstream.label}\n${remote}\n${digest}`;
}

/** A blob fetch under way: the size its response announces (once the upstream answered), and its end. */
interface Flight {
  answered: Promise<number>;
  done: Promise<number>;
}

const noObserver: ProxyObserver = {
  hit() {},
  miss() {},
  fetched() {},
  error() {},
  stale() {},
  failed() {},
};

export class PullThroughCache {
  readonly upstreams: Upstream[];
  /** The shortest proxy.ttl in force, or null (pull times must be recorded finer than that). */
  readonly shortestTtlMs: number | null;
  /** When each cached tag was last confirmed by its upstream (per process; a lost entry costs one HEAD). */
  private readonly checked = new Map<string, number>();
  /**
   * Blob sizes that manifests of a remote repository declared (keyed by upstream, remote repository and
   * digest), so that a HEAD of an uncached blob needs no upstream call. Hints only: the upstream's answer
   * and the verified bytes win over them.
   */
  private readonly sizes = new Map<string, number>();
  /** Blob fetches under way in this process, by local repository and digest. */
  private readonly flights = new Map<string, Flight>();
  observer: ProxyObserver = noObserver;

  constructor(
    settings: UpstreamSettings[],
    private readonly meta: MetadataStore,
    private readonly store: BlobStore,
  ) {
    // Longest prefix first, so that "hub/library" wins over "hub".
    this.upstreams = settings
      .map((s) => {
        const client = new UpstreamClient({
          remoteurl: s.remoteurl,
          username: s.username,
          password: s.password,
          ca: s.ca,
          timeoutMs: s.timeoutMs,
          realmHosts: s.realmHosts,
        });
        return { ...s, client, label: s.prefix ?? client.host };
      })
      .sort((a, b) => (b.prefix?.length ?? 0) - (a.prefix?.length ?? 0));
    const ttls = this.upstreams.filter((u) => u.ttlMs > 0 && !u.allowPush).map((u) => u.ttlMs);
    this.shortestTtlMs = ttls.length > 0 ? Math.min(...ttls) : null;
  }

  /** The upstream serving `name` and the repository's name there; null for a private repository. */
  resolve(name: string): { upstream: Upstream; remote: string } | null {
    for (const upstream of this.upstreams) {
      let remote: string;
      if (upstream.prefix === null) remote = name;
      else if (name.startsWith(`${upstream.prefix}/`)) remote = name.slice(upstream.prefix.length + 1);
      else continue;
      // Docker Hub's official images live under library/.
      if (upstream.client.isDockerHub && !remote.includes("/")) remote = `library/${remote}`;
      return { upstream, remote };
    }
    return null;
  }

  /**
   * containerd's mirror requests carry `?ns=<upstream host>`: a repository named as on that upstream
   * becomes the local one under the prefix of the upstream with that host. Other names stay as they are.
   */
  localName(name: string, ns: string | undefined): string {
    if (!ns) return name;
    const host = ns === "docker.io" ? "registry-1.docker.io" : ns;
    for (const upstream of this.upstreams) {
      if (upstream.prefix === null) return name;
      const own = upstream.client.host;
      if (own === host || own === ns || (ns === "docker.io" && upstream.client.isDockerHub)) {
        return `${upstream.prefix}/${name}`;
      }
    }
    return name;
  }

  /** For the API: the upstream a repository mirrors, or null. */
  describe(name: string): { upstream: string; remoteurl: string } | null {
    const r = this.resolve(name);
    return r ? { upstream: r.upstream.label, remoteurl: r.upstream.client.describe() } : null;
  }

  /**
   * How long content cached in `name` is kept without a pull (proxy.ttl), or null when it is not expired by
   * time: a private repository, a ttl of 0, or an upstream with allowpush (its prefix holds pushed images
   * too, which only retention may remove).
   */
  ttlOf(name: string): number | null {
    const r = this.resolve(name);
    return r && r.upstream.ttlMs > 0 && !r.upstream.allowPush ? r.upstream.ttlMs : null;
  }

  /** Pushes and deletes in a mirrored repository are refused unless its upstream allows them. */
  assertWritable(name: string): void {
    const r = this.resolve(name);
    if (r && !r.upstream.allowPush) {
      throw new RegistryError(
        "UNSUPPORTED",
        `${name} is a pull-through cache of ${r.upstream.client.describe()}: pushes are refused (proxy allowpush is false)`,
        { name, upstream: r.upstream.label },
      );
    }
  }

  // -------------------------------------------------------------------------------- manifests

  async manifest(name: string, reference: string): Promise<ProxiedManifest | null> {
    const resolved = this.resolve(name);
    if (!resolved) return null;
    const { upstream, remote } = resolved;
    const ref = lookupReference(reference);
    if (ref === null) return null;
    if (ref.kind === "digest") {
      const cached = await this.meta.manifestByDigest(name, ref.digest.digest);
      if (cached) {
        this.observer.hit(upstream.label, "manifest");
        return cached;
      }
      this.observer.miss(upstream.label, "manifest");
      return this.fetchManifest(upstream, name, remote, ref.digest.digest, null);
    }
    const tag = ref.tag;
    const key = `${name}:${tag}`;
    const cached = await this.meta.manifestByTag(name, tag);
    if (cached && (this.checked.get(key) ?? 0) > Date.now() - upstream.tagTtlMs) {
      this.observer.hit(upstream.label, "manifest");
      return cached;
    }
    if (!cached) {
      this.observer.miss(upstream.label, "manifest");
      return this.fetchManifest(upstream, name, remote, tag, tag);
    }
    // Ask the upstream whether the tag still names the cached manifest: one HEAD.
    let res: Awaited<ReturnType<UpstreamClient["manifest"]>>;
    try {
      res = await upstream.client.manifest("HEAD", remote, tag);
      res.body.resume();
    } catch (err) {
      return this.serveStale(upstream, name, tag, cached, err);
    }
    if (res.status === 404) {
      // Gone upstream: the cache keeps what it has (retention removes it), but says so.
      return this.serveStale(
        upstream,
        name,
        tag,
        cached,
        new UpstreamError("the tag is gone upstream", "status", 404),
      );
    }
    if (res.status !== 200) {
      return this.serveStale(
        upstream,
        name,
        tag,
        cached,
        new UpstreamError(`HEAD answered ${res.status}`, "status", res.status),
      );
    }
    const digest = header(res.headers, "docker-content-digest");
    if (digest === cached.digest) {
      remember(this.checked, key, Date.now());
      this.observer.hit(upstream.label, "manifest");
      return cached;
    }
    this.observer.miss(upstream.label, "manifest");
    try {
      return await this.fetchManifest(
        upstream,
        name,
        remote,
        digest && parseDigest(digest) ? digest : tag,
        tag,
      );
    } catch (err) {
      if (err instanceof RegistryError && err.code !== "UNAVAILABLE") throw err;
      return this.serveStale(upstream, name, tag, cached, err);
    }
  }

  private serveStale(
    upstream: Upstream,
    name: string,
    tag: string,
    cached: ManifestRow,
    err: unknown,
  ): ProxiedManifest {
    const reason = err instanceof Error ? err.message : String(err);
    this.observer.error(upstream.label, err instanceof UpstreamError ? err.kind : "other");
    this.observer.stale(upstream.label, name, tag, reason);
    return {
      ...cached,
      warning: `110 berth "served from the pull-through cache: the upstream could not confirm it"`,
    };
  }

  /** GET a manifest upstream, verify it, store it (and the tag) in one transaction, and return its row. */
  private async fetchManifest(
    upstream: Upstream,
    name: string,
    remote: string,
    reference: string,
    tag: string | null,
  ): Promise<ProxiedManifest> {
    let res: Awaited<ReturnType<UpstreamClient["manifest"]>>;
    try {
      res = await upstream.client.manifest("GET", remote, reference);
    } catch (err) {
      throw this.unavailable(upstream, err);
    }
    if (res.status === 404) {
      res.body.resume();
      throw new RegistryError("MANIFEST_UNKNOWN", "manifest unknown to the upstream registry", {
        reference,
        upstream: upstream.label,
      });
    }
    if (res.status !== 200) {
      res.body.resume();
      throw this.unavailable(
        upstream,
        new UpstreamError(`GET manifest answered ${res.status}`, "status", res.status),
      );
    }
    let content: Buffer;
    try {
      content = await readSmall(res.body, MAX_MANIFEST_BYTES);
    } catch (err) {
      throw this.unavailable(upstream, err);
    }
    const digest = `sha256:${createHash("sha256").update(content).digest("hex")}`;
    const expected = parseDigest(reference);
    if (expected) {
      const actual = `${expected.algorithm}:${createHash(expected.algorithm).update(content).digest("hex")}`;
      if (actual !== expected.digest) {
        this.observer.error(upstream.label, "digest");
        throw new RegistryError(
          "MANIFEST_INVALID",
          "the upstream sent a manifest that does not match its digest",
          {
            expected: expected.digest,
            actual,
          },
        );
      }
    }
    const stored = expected?.digest ?? digest;
    const parsed = parseManifest(content, header(res.headers, "content-type"));
    for (const d of [...parsed.layers, ...(parsed.config ? [parsed.config] : [])])
      remember(this.sizes, sizeKey(upstream, remote, d.digest), d.size);
    await this.meta.commitManifest(
      name,
      { manifest: manifestRecord(stored, content, parsed), tags: tag !== null ? [tag] : [], events: [] },
      () => this.store.put(stored, content),
      null,
    );
    if (tag !== null) remember(this.checked, `${name}:${tag}`, Date.now());
    const row = await this.meta.manifestByDigest(name, stored);
    if (!row) throw new RegistryError("MANIFEST_UNKNOWN", "manifest unknown to registry", { reference });
    return row;
  }

  private unavailable(upstream: Upstream, err: unknown): RegistryError {
    const kind = err instanceof UpstreamError ? err.kind : "other";
    this.observer.error(upstream.label, kind);
    const message = err instanceof Error ? err.message : String(err);
    this.observer.failed(upstream.label, kind, message);
    if (kind === "ratelimited") {
      return new RegistryError("TOOMANYREQUESTS", `the upstream registry is rate limiting: ${message}`, {
        upstream: upstream.label,
      });
    }
    return new RegistryError("UNAVAILABLE", `the upstream registry could not be reached: ${message}`, {
      upstream: upstream.label,
    });
  }

  // -------------------------------------------------------------------------------- blobs

  /**
   * Size of a blob not yet in `name`. A blob enters a mirrored repository only once its upstream has
   * confirmed that digest under the repository's remote name: a blob stored for any other repository
   * (a private one, another upstream's) is linked after a HEAD upstream says 200, never before, and a
   * miss writes nothing. A size that a manifest of this remote repository declared answers without an
   * upstream call; it is a hint, which a GET never trusts over the upstream's answer and the bytes.
   *
   * `probe` (a HEAD): when the upstream cannot be asked, the blob is unknown here (404) rather than
   * unavailable (503). A HEAD is how a push asks whether to upload; answered 404, the push goes on to its
   * upload, which a mirror refuses with 405 UNSUPPORTED, whether the upstream is up or not. A GET still
   * answers 503.
   */
  async statBlob(
    name: string,
    digest: string,
    probe = false,
  ): Promise<{ digest: string; size: number } | null> {
    const resolved = this.resolve(name);
    if (!resolved) return null;
    const { upstream, remote } = resolved;
    const key = sizeKey(upstream, remote, digest);
    // The hint answers whatever is stored under that digest (comparing the two would tell a caller
    // something about a blob it may not read); the GET then serves the verified size.
    const hint = this.sizes.get(key);
    if (hint !== undefined) return { digest, size: hint };
    const stored = await this.meta.blob(digest);
    let size: number;
    try {
      size = await this.confirm(upstream, remote, digest);
    } catch (err) {
      if (!probe || !(err instanceof RegistryError) || err.code === "BLOB_UNKNOWN") throw err;
      throw new RegistryError("BLOB_UNKNOWN", "blob unknown to registry (the upstream could not be asked)", {
        digest,
        upstream: upstream.label,
      });
    }
    if (stored && (await this.meta.linkExistingBlob(name, digest, null)))
      return { digest, size: stored.size };
    remember(this.sizes, key, size);
    return { digest, size };
  }

  /** The size the upstream gives for `digest` under `remote` (a HEAD); BLOB_UNKNOWN when it has none. */
  private async confirm(upstream: Upstream, remote: string, digest: string): Promise<number> {
    let res: Awaited<ReturnType<UpstreamClient["blob"]>>;
    try {
      res = await upstream.client.blob("HEAD", remote, digest);
      res.body.resume();
    } catch (err) {
      throw this.unavailable(upstream, err);
    }
    if (res.status === 404) throw new RegistryError("BLOB_UNKNOWN", "blob unknown to registry", { digest });
    const size = Number(header(res.headers, "content-length"));
    if (res.status !== 200 || !Number.isSafeInteger(size) || size < 0) {
      throw this.unavailable(
        upstream,
        new UpstreamError(`HEAD blob answered ${res.status}`, "status", res.status),
      );
    }
    return size;
  }

  /**
   * The bytes of a blob not yet in `name`, and their size. `promised` is the size statBlob gave (a hint or
   * the upstream's HEAD); the request that fetches answers with the size of the upstream's GET instead.
   * The first request (in this process, without a range) gets the upstream's bytes as they arrive; every
   * other one waits for the blob to be stored and reads it from there.
   */
  async openBlob(
    name: string,
    digest: string,
    promised: number,
    range?: { start: number; end: number },
  ): Promise<{ size: number; stream: Readable } | null> {
    const resolved = this.resolve(name);
    if (!resolved) return null;
    const { upstream, remote } = resolved;
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    // Failures reach the client through the response (aborted); one nobody reads must not crash the process.
    out.on("error", () => {});
    const key = `${name}\n${digest}`;
    let flight = this.flights.get(key);
    if (!flight && !range) {
      // The response starts once the upstream has answered, so that its refusal is the client's error
      // (404, 503) rather than a 200 cut short.
      let started: (size: number) => void = () => {};
      const answered = new Promise<number>((resolve) => {
        started = resolve;
      });
      const done = this.fetchOnce(upstream, name, remote, digest, out, promised, started);
      this.track(key, { answered, done });
      done.catch((err) => out.destroy(err instanceof Error ? err : new Error(String(err))));
      const size = await Promise.race([answered, done]);
      return { size, stream: out };
    }
    if (!flight) {
      flight = {
        answered: Promise.resolve(promised),
        done: this.fetchOnce(upstream, name, remote, digest, null, promised),
      };
      this.track(key, flight);
    } else this.observer.hit(upstream.label, "blob");
    const fed = flight.done.then(async () => {
      // The flight linked the blob into `name` (or found it linked): read it from the store.
      const stream = await this.store.read(digest, range);
      stream.on("error", (err) => out.destroy(err));
      stream.pipe(out);
    });
    fed.catch((err) => out.destroy(err instanceof Error ? err : new Error(String(err))));
    const size = range ? promised : await Promise.race([flight.answered, flight.done]);
    return { size, stream: out };
  }

  private track(key: string, flight: Flight): void {
    this.flights.set(key, flight);
    const forget = () => {
      if (this.flights.get(key) === flight) this.flights.delete(key);
    };
    flight.done.then(forget, forget);
  }

  /**
   * When the blob is stored: links it into `name` once the upstream confirms it under `remote` (unless
   * linked already) and returns its stored size. Null when it is not stored.
   */
  private async linkConfirmed(
    upstream: Upstream,
    name: string,
    remote: string,
    digest: string,
  ): Promise<number | null> {
    const linked = await this.meta.linkedBlob(name, digest);
    if (linked) return linked.size;
    const stored = await this.meta.blob(digest);
    if (!stored) return null;
    await this.confirm(upstream, remote, digest);
    if (!(await this.meta.linkExistingBlob(name, digest, null))) return null;
    this.sizes.delete(sizeKey(upstream, remote, digest)); // linked: its stored size answers from now on
    return stored.size;
  }

  /**
   * Makes the blob stored and linked into `name`, fetching it at most once across processes, and returns
   * its size. With `out`, the bytes go there too (as they arrive when this process fetches, from the store
   * otherwise) and `out` ends after the commit. `started` gets the size the response is to announce.
   */
  private async fetchOnce(
    upstream: Upstream,
    name: string,
    remote: string,
    digest: string,
    out: PassThrough | null,
    promised: number,
    started: (size: number) => void = () => {},
  ): Promise<number> {
    for (;;) {
      const size = await this.linkConfirmed(upstream, name, remote, digest);
      if (size !== null) {
        this.observer.hit(upstream.label, "blob");
        started(size);
        if (out) {
          const stream = await this.store.read(digest);
          stream.on("error", (err) => out.destroy(err));
          stream.pipe(out);
        }
        return size;
      }
      const lease = await Lease.acquire(this.meta, `proxy:blob:${digest}`, { ttlMs: BLOB_LEASE_MS });
      if (lease) {
        try {
          if (await this.meta.blob(digest)) continue; // stored between the check and the lease
          this.observer.miss(upstream.label, "blob");
          return await this.download(upstream, name, remote, digest, out, promised, started);
        } finally {
          await lease.release(0).catch(() => {});
        }
      }
      // Another process is fetching it: wait for the commit (or for its lease to end).
      started(promised);
      await new Promise((r) => setTimeout(r, FOLLOWER_POLL_MS));
    }
  }

  private async download(
    upstream: Upstream,
    name: string,
    remote: string,
    digest: string,
    out: PassThrough | null,
    promised: number,
    started: (size: number) => void,
  ): Promise<number> {
    const parsed = parseDigest(digest);
    if (!parsed) throw new RegistryError("DIGEST_INVALID", "invalid digest", { digest });
    let res: Awaited<ReturnType<UpstreamClient["blob"]>>;
    try {
      res = await upstream.client.blob("GET", remote, digest);
    } catch (err) {
      throw this.unavailable(upstream, err);
    }
    if (res.status === 404) {
      res.body.resume();
      throw new RegistryError("BLOB_UNKNOWN", "blob unknown to the upstream registry", { digest });
    }
    if (res.status !== 200) {
      res.body.resume();
      throw this.unavailable(
        upstream,
        new UpstreamError(`GET blob answered ${res.status}`, "status", res.status),
      );
    }
    // The upstream's word on the size wins over any hint; the bytes are checked against it below.
    const length = Number(header(res.headers, "content-length") ?? Number.NaN);
    const declared = Number.isSafeInteger(length) && length >= 0 ? length : null;
    const announced = declared ?? promised;
    started(announced);
    // A body that stops moving is given up (the next request fetches again).
    res.body.setTimeout(Math.max(upstream.timeoutMs, BODY_IDLE_MS), () => {
      res.body.destroy(
        new UpstreamError(`${upstream.client.describe()} stopped sending the blob`, "timeout"),
      );
    });
    const id = randomUUID();
    await this.store.createUpload(id);
    const hash = createHash(parsed.algorithm);
    let fetched = 0;
    const body = res.body;
    // The client's stream is fed as the bytes arrive; a slow client slows the fetch (no unbounded buffer),
    // one that went away does not stop it (the others wait for the commit).
    async function* source(): AsyncIterable<Buffer> {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        fetched += chunk.length;
        yield chunk;
        if (out && !out.destroyed && out.writableNeedDrain) {
          await new Promise<void>((resolve) => {
            const done = () => {
              out.off("drain", done);
              out.off("close", done);
              resolve();
            };
            out.on("drain", done);
            out.on("close", done);
          });
        }
      }
    }
    // The last chunk is held back until the digest is verified: a client never receives a whole body
    // of bytes that turn out wrong (its response is aborted short instead).
    let held: Buffer | null = null;
    try {
      const size = await this.store.writeUpload(id, 0, source(), (chunk) => {
        hash.update(chunk);
        if (held && out && !out.destroyed) out.write(held);
        held = chunk;
      });
      this.observer.fetched(upstream.label, fetched);
      const actual = `${parsed.algorithm}:${hash.digest("hex")}`;
      if (actual !== digest || (declared !== null && size !== declared)) {
        this.observer.error(upstream.label, "digest");
        this.observer.failed(
          upstream.label,
          "digest",
          `${upstream.client.describe()} sent ${size} bytes hashing to ${actual} for ${remote}@${digest}`,
        );
        throw new RegistryError(
          "BLOB_UNKNOWN",
          "the upstream sent bytes that do not match the blob's digest",
          {
            digest,
            actual,
            upstream: upstream.label,
          },
        );
      }
      // Verified: these bytes are the blob, whatever size a manifest declared for it.
      this.sizes.delete(sizeKey(upstream, remote, digest));
      if (out && !out.destroyed) {
        // The client's response was announced with another length (no Content-Length upstream and a
        // wrong hint): it is cut short; the blob is stored all the same, and the next request gets it.
        if (size !== announced) out.destroy(new Error("the blob's size is not the size announced"));
        else {
          if (held) out.write(held);
          out.end();
        }
      }
      await this.store.syncUpload(id);
      await this.meta.commitBlob(name, { digest, size, uploadId: null, events: [] }, () =>
        this.store.commitUpload(id, digest),
      );
      return size;
    } catch (err) {
      body.destroy();
      await this.store.deleteUpload(id).catch(() => {});
      if (err instanceof RegistryError) throw err;
      throw this.unavailable(upstream, err);
    }
  }

  close(): void {
    for (const u of this.upstreams) u.client.close();
  }
}
