import { Agent as HttpsAgent } from "node:https";
import type { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
  UploadPartCommand,
  UploadPartCopyCommand,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import {
  type BlobStat,
  type BlobStore,
  type ReadOptions,
  type StoredBlob,
  type StoredUpload,
  StoreUnavailableError,
} from "./blob-store.js";
import { httpGetBody, type SocketBody } from "./socket-body.js";

/** S3 refuses parts below this size, except the last part of an upload. */
export const MIN_PART = 5 * 1024 * 1024;
const MiB = 1024 * 1024;
/** How long the state read for an upload's writer (S3BlobStore.resumed) is used: within one request. */
const RESUMED_MS = 60_000;
/**
 * Reads at least this long go over a socket of their own, to be spliced (readFromSocket): below it, the
 * presigned URL and a new connection cost more than the SDK's pooled connection and a JavaScript stream.
 */
const SOCKET_READ_MIN = MiB;
/** How long the store may leave a request without an answer or a body without a byte, by default. */
const REQUEST_TIMEOUT_MS = 60_000;
/** The largest object one CopyObject may copy. */
const MAX_COPY_OBJECT = 5 * 1024 * MiB;

/** storage.s3 as registry:2 spells it (see src/config/sections/core.ts). */
export interface S3Options {
  region: string;
  regionendpoint?: string;
  bucket: string;
  accesskey?: string;
  secretkey?: string;
  rootdirectory?: string;
  forcepathstyle?: boolean;
  secure?: boolean;
  skipverify?: boolean;
  chunksize?: number;
  multipartcopychunksize?: number;
  multipartcopymaxconcurrency?: number;
  multipartcopythresholdsize?: number;
  storageclass?: string;
  encrypt?: boolean;
  keyid?: string;
  /** Attempts per S3 request (the SDK's backoff between them) before the store is called unavailable. */
  maxattempts?: number;
  /** Milliseconds without progress on one S3 request before it is abandoned (and retried). */
  requesttimeout?: number;
}

/** One part of an upload's S3 multipart upload, as S3 acknowledged it. */
interface Part {
  n: number;
  etag: string;
  size: number;
}

/**
 * An upload's acknowledged state, one small JSON object per acknowledged size under
 * `berth/uploads/<id>/state/<size>`, so that any replica can continue the upload: the multipart upload,
 * its parts, the bytes after the last part (kept in `tail/<size>` until they make a part of 5 MiB or more)
 * and the SHA-256 state over all of it.
 */
interface UploadStateObject {
  /**
   * Where the multipart upload puts the blob: `berth/blobs/<id>/data`, which becomes the blob's location at
   * commit (no copy). Absent in states written before locations: `berth/uploads/<id>/data`, copied at commit.
   */
  key?: string;
  /** The S3 multipart upload, created with the first part (small blobs never need one). */
  mpu: string | null;
  parts: Part[];
  size: number;
  tail: number;
  hash: string | null;
  createdAt: number;
  /**
   * The size of the state this one continued from. Once a write continues from this state, the database
   * has acknowledged this size, so `prev`'s state and tail are no longer needed: they are deleted by name
   * (no listing). Absent in the first state and in states written before it was added.
   */
  prev?: number;
}

/**
 * Blobs in an S3 bucket, under `rootdirectory`. A blob is found at its *location*:
 * - blobs uploaded in parts are S3 multipart uploads at `berth/blobs/<upload id>/data`, completed there at
 *   commit and never copied; a small *link* object `berth/links/sha256/<hex>` names that key. The link is
 *   written before the multipart upload is completed, so every completed object has a link (the collector
 *   finds it through list()), and deleting a blob deletes its object before its link;
 * - everything else (small blobs, manifests, and every blob of a registry:2 bucket) is in Distribution's
 *   layout, `docker/registry/v2/blobs/sha256/ab/<hex>/data`, so that a registry:2 bucket is read as it is.
 * Reads try the link first, then Distribution's key. Each process remembers where it found a digest: a key
 * is never reused and holds only that digest's bytes, so a remembered key is either right or gone (then the
 * link is read again), never wrong.
 * The state of an upload lives in the bucket (never on local disk) so that another replica can take the
 * next chunk.
 */
export class S3BlobStore implements BlobStore {
  readonly kind = "s3";
  readonly resumableHashes = true;
  readonly client: S3Client;
  /** `rootdirectory` as a key prefix (`registry/`, or empty). */
  readonly prefix: string;
  private readonly partSize: number;
  /** Where this process last found each digest (see above): a cache that no other process can make wrong. */
  private readonly locations = new Map<string, string>();
  /**
   * The state an upload's writer read in continueUpload, for the requests it makes next under the same
   * lease (the hash state, the write, the commit): read from the bucket at the start of each leased
   * request, never kept from a write of this process, so that what another replica wrote is always seen.
   */
  private readonly resumed = new Map<string, { size: number; state: UploadStateObject; at: number }>();

  constructor(readonly options: S3Options) {
    const root = (options.rootdirectory ?? "").replace(/^\/+|\/+$/g, "");
    this.prefix = root === "" ? "" : `${root}/`;
    this.partSize = Math.max(options.chunksize ?? 10 * MiB, MIN_PART);
    this.client = new S3Client(s3ClientConfig(options));
  }

  private digestParts(digest: string): { algorithm: string; hex: string } {
    const colon = digest.indexOf(":");
    const algorithm = digest.slice(0, colon);
    const hex = digest.slice(colon + 1);
    if (!/^[a-z0-9]+$/.test(algorithm) || !/^[a-f0-9]{64,128}$/.test(hex)) {
      throw new Error(`refusing to build a key from digest ${JSON.stringify(digest)}`);
    }
    return { algorithm, hex };
  }

  /** Distribution's key for a blob. */
  private blobKey(digest: string): string {
    const { algorithm, hex } = this.digestParts(digest);
    return `${this.prefix}docker/registry/v2/blobs/${algorithm}/${hex.slice(0, 2)}/${hex}/data`;
  }

  /** The link that names the location of a blob uploaded in parts. */
  private linkKey(digest: string): string {
    const { algorithm, hex } = this.digestParts(digest);
    return `${this.prefix}berth/links/${algorithm}/${hex}`;
  }

  /** The key a new upload's multipart upload completes at, which becomes the blob's location. */
  private locationKey(id: string): string {
    this.uploadPrefix(id);
    return `${this.prefix}berth/blobs/${id}/data`;
  }

  /** The location a link names, or null when there is no link. */
  private async readLink(digest: string): Promise<string | null> {
    return (await this.readLinkObject(digest))?.key ?? null;
  }

  /** The link: the location it names, and when it was written (when the blob became one). */
  private async readLinkObject(digest: string): Promise<{ key: string; modifiedAt: number } | null> {
    let out: { Body?: unknown; LastModified?: Date };
    try {
      out = await this.call("GetObject blob link", () =>
        this.client.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: this.linkKey(digest) })),
      );
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
    const body = await (out.Body as { transformToString(): Promise<string> }).transformToString();
    const base = `${this.prefix}berth/blobs/`;
    if (!body.startsWith(base) || !/^[a-zA-Z0-9-]{1,64}\/data$/.test(body.slice(base.length))) {
      throw new Error(`the link of ${digest} names ${JSON.stringify(body)}, not a blob location`);
    }
    return { key: body, modifiedAt: out.LastModified?.getTime() ?? 0 };
  }

  /**
   * Where the blob is, read from the bucket (never from what this process remembers): its key and stat.
   * A linked blob's modifiedAt is its link's when that is later (on AWS S3 a multipart object carries the
   * time its upload began), so that the collector's grace period counts from the commit.
   */
  private async find(digest: string): Promise<{ key: string; stat: BlobStat } | null> {
    const link = await this.readLinkObject(digest);
    if (link) {
      const stat = await this.head(link.key);
      if (stat)
        return { key: link.key, stat: { ...stat, modifiedAt: Math.max(stat.modifiedAt, link.modifiedAt) } };
    }
    const key = this.blobKey(digest);
    const stat = await this.head(key);
    return stat ? { key, stat } : null;
  }

  /**
   * Runs `at` on the key where `digest` is (null from `at`: nothing there): the remembered key, else the
   * link's location, else Distribution's key. For reads; stat() does not use what is remembered.
   */
  private async atBlob<T>(digest: string, at: (key: string) => Promise<T | null>): Promise<T | null> {
    const remembered = this.locations.get(digest);
    if (remembered) {
      const out = await at(remembered);
      if (out !== null) return out;
      this.locations.delete(digest);
    }
    const link = await this.readLink(digest);
    for (const key of link ? [link, this.blobKey(digest)] : [this.blobKey(digest)]) {
      if (key === remembered) continue;
      const out = await at(key);
      if (out !== null) {
        if (this.locations.size >= 10_000) this.locations.clear();
        this.locations.set(digest, key);
        return out;
      }
    }
    return null;
  }

  private uploadPrefix(id: string): string {
    if (!/^[a-zA-Z0-9-]{1,64}$/.test(id))
      throw new Error(`refusing to build a key from upload id ${JSON.stringify(id)}`);
    return `${this.prefix}berth/uploads/${id}/`;
  }

  /** Runs one S3 operation; what is left failing after the SDK's retries becomes StoreUnavailableError. */
  private async call<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (isUnavailable(err)) throw new StoreUnavailableError(`s3 ${operation}`, err);
      throw err;
    }
  }

  async stat(digest: string): Promise<BlobStat | null> {
    return (await this.find(digest))?.stat ?? null;
  }

  private async head(key: string): Promise<BlobStat | null> {
    try {
      const head = await this.call("HeadObject", () =>
        this.client.send(new HeadObjectCommand({ Bucket: this.options.bucket, Key: key })),
      );
      return { size: head.ContentLength ?? 0, modifiedAt: head.LastModified?.getTime() ?? 0 };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async read(
    digest: string,
    range?: { start: number; end: number },
    options?: ReadOptions,
  ): Promise<Readable> {
    const length = range ? range.end - range.start + 1 : options?.socket?.size;
    if (options?.socket && length !== undefined && length >= SOCKET_READ_MIN && this.plainHttp !== false) {
      const direct = await this.readFromSocket(digest, range, length);
      if (direct) return direct;
    }
    const body = await this.atBlob(digest, async (key) => {
      try {
        const out = await this.call("GetObject", () =>
          this.client.send(
            new GetObjectCommand({
              Bucket: this.options.bucket,
              Key: key,
              Range: range ? `bytes=${range.start}-${range.end}` : undefined,
            }),
          ),
        );
        return out.Body as Readable;
      } catch (err) {
        if (isNotFound(err)) return null;
        throw err;
      }
    });
    if (!body) throw Object.assign(new Error(`no blob ${digest}`), { code: "ENOENT" });
    return body;
  }

  /** Whether the store is reached over plain HTTP (known after the first presigned URL). */
  private plainHttp: boolean | undefined;

  /**
   * The blob's bytes on a socket of their own, for a caller that splices them into the client's socket
   * (src/storage/socket-body.ts): a presigned GET written by hand over plain HTTP. Null whenever that is
   * not possible (TLS to the store, an answer other than the expected one): the caller reads through the
   * SDK instead, which retries and reports errors as usual.
   */
  private async readFromSocket(
    digest: string,
    range: { start: number; end: number } | undefined,
    expected: number,
  ): Promise<SocketBody | null> {
    const notDirect = new Error("not direct");
    try {
      return await this.atBlob(digest, async (key) => {
        const url = new URL(await this.signedGet(key, 60));
        this.plainHttp = url.protocol === "http:";
        // A store that stalls mid-body is cut after the SDK's own idle limit (storage.s3's request timeout).
        const got = await httpGetBody(
          url,
          range,
          expected,
          5_000,
          this.options.requesttimeout ?? REQUEST_TIMEOUT_MS,
        );
        if (got === "missing") return null;
        if (got === null) throw notDirect;
        return got;
      });
    } catch {
      return null;
    }
  }

  /** A presigned GET for a blob, for storage.redirect. */
  async presign(digest: string, expiresIn: number): Promise<string> {
    const key = this.locations.get(digest) ?? (await this.readLink(digest)) ?? this.blobKey(digest);
    return this.signedGet(key, expiresIn);
  }

  private signedGet(key: string, expiresIn: number): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.options.bucket, Key: key }), {
      expiresIn,
    });
  }

  async put(digest: string, content: Buffer): Promise<void> {
    const existing = await this.stat(digest);
    if (existing && existing.size === content.length) return;
    await this.putObject("PutObject", this.blobKey(digest), content);
  }

  /** One PutObject (also used by the registry:2 tree on the same bucket, distribution-s3.ts). */
  async putObject(operation: string, key: string, body: Buffer | string): Promise<void> {
    await this.call(operation, () =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.options.bucket,
          Key: key,
          Body: body,
          ContentLength: Buffer.byteLength(body),
          ...this.writeParams(),
        }),
      ),
    );
  }

  private writeParams(): {
    StorageClass?: never;
    ServerSideEncryption?: "aws:kms" | "AES256";
    SSEKMSKeyId?: string;
  } {
    const out: Record<string, string> = {};
    const cls = this.options.storageclass;
    if (cls && cls.toUpperCase() !== "NONE") out.StorageClass = cls;
    if (this.options.encrypt) {
      out.ServerSideEncryption = this.options.keyid ? "aws:kms" : "AES256";
      if (this.options.keyid) out.SSEKMSKeyId = this.options.keyid;
    }
    return out as ReturnType<S3BlobStore["writeParams"]>;
  }

  /**
   * Deletes the blob's object(s), then its link: a delete that fails part way leaves the link, so the next
   * attempt (the collector retries: the row stays when this throws) still finds what is left.
   */
  async delete(digest: string): Promise<void> {
    const link = await this.readLink(digest);
    this.locations.delete(digest);
    await this.deleteKeys(link ? [link, this.blobKey(digest)] : [this.blobKey(digest)]);
    if (link) await this.deleteKeys([this.linkKey(digest)]);
  }

  /**
   * Stat for a registry:2 bucket's blobs (adoption): Distribution's key first, where every blob of such a
   * bucket is (one HEAD), then the link (stat).
   */
  async statAtDistributionKey(digest: string): Promise<BlobStat | null> {
    return (await this.head(this.blobKey(digest))) ?? this.stat(digest);
  }

  /** A small blob's bytes, from Distribution's key first (one GET), else wherever it is; null when absent. */
  async readAtDistributionKey(digest: string): Promise<Buffer | null> {
    const body = await this.getObject("GetObject blob", this.blobKey(digest));
    if (body) return body;
    const link = await this.readLink(digest);
    return link ? this.getObject("GetObject blob", link) : null;
  }

  /**
   * Moves blobs uploaded in parts to Distribution's key, for registry:2 (issue 20): for every link, a
   * server-side copy of its location to `docker/registry/v2/blobs/...` (unless the bytes are there), then a
   * tombstone `berth/retired/<upload id>` naming the digest, then the link goes (new reads find
   * Distribution's key). A location is deleted only when its tombstone is older than `retireAfterMs`, so a
   * read that found it before still has its bytes, and only when no link names it again (a relocation that
   * stopped before its link went is done again next time). Each step can be repeated after a crash.
   */
  async relocateForDistribution(options: { retireAfterMs: number; signal?: AbortSignal }): Promise<{
    moved: number;
    bytes: number;
    retired: number;
  }> {
    const out = { moved: 0, bytes: 0, retired: 0 };
    const links = `${this.prefix}berth/links/`;
    for await (const obj of this.listObjects(links)) {
      if (options.signal?.aborted) return out;
      const m = /^([a-z0-9]+)\/([a-f0-9]{64,128})$/.exec(obj.key.slice(links.length));
      if (!m) continue;
      const digest = `${m[1]}:${m[2]}`;
      const link = await this.readLinkObject(digest);
      if (!link) continue;
      const source = await this.head(link.key);
      const target = this.blobKey(digest);
      if (source) {
        const there = await this.head(target);
        if (there?.size !== source.size) {
          await this.copyObject(link.key, target, source.size);
          out.bytes += source.size;
        }
      } else if (!(await this.head(target))) {
        continue; // Neither copy (a delete in progress): nothing to move.
      }
      const id = link.key.slice(`${this.prefix}berth/blobs/`.length, -"/data".length);
      await this.putObject("PutObject retired location", `${this.prefix}berth/retired/${id}`, digest);
      await this.deleteKeys([this.linkKey(digest)]);
      this.locations.delete(digest);
      out.moved++;
    }
    const retired = `${this.prefix}berth/retired/`;
    for await (const obj of this.listObjects(retired)) {
      if (options.signal?.aborted) return out;
      if (obj.modifiedAt > Date.now() - options.retireAfterMs) continue;
      const id = obj.key.slice(retired.length);
      const location = this.locationKey(id);
      const digest = (await this.getObject("GetObject retired location", obj.key))?.toString("utf8") ?? "";
      // Named by a link again: its relocation did not finish; it is done again before it is retired.
      if (/^[a-z0-9]+:[a-f0-9]{64,128}$/.test(digest) && (await this.readLink(digest)) === location) continue;
      await this.deleteKeys([location]);
      await this.deleteKeys([obj.key]);
      out.retired++;
    }
    return out;
  }

  /**
   * Where the bucket holds registry:2 repositories (objects under `docker/registry/v2/repositories/`), or
   * null: their blobs are never orphans (src/registry/gc.ts). One listing of at most one key.
   */
  async foreignRepositories(): Promise<string | null> {
    const prefix = `${this.prefix}docker/registry/v2/repositories/`;
    const page = await this.call("ListObjectsV2", () =>
      this.client.send(new ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: prefix, MaxKeys: 1 })),
    );
    return (page.Contents?.length ?? 0) > 0 ? `s3://${this.options.bucket}/${prefix}` : null;
  }

  /**
   * Every blob: those in Distribution's layout, then those with a link (the size given for these is the
   * link's; stat() has the blob's).
   */
  async *list(): AsyncIterable<StoredBlob> {
    const base = `${this.prefix}docker/registry/v2/blobs/`;
    for await (const obj of this.listObjects(base)) {
      const m = /^([a-z0-9]+)\/[a-f0-9]{2}\/([a-f0-9]{64,128})\/data$/.exec(obj.key.slice(base.length));
      if (m) yield { digest: `${m[1]}:${m[2]}`, size: obj.size, modifiedAt: obj.modifiedAt };
    }
    const links = `${this.prefix}berth/links/`;
    for await (const obj of this.listObjects(links)) {
      const m = /^([a-z0-9]+)\/([a-f0-9]{64,128})$/.exec(obj.key.slice(links.length));
      if (m) yield { digest: `${m[1]}:${m[2]}`, size: obj.size, modifiedAt: obj.modifiedAt };
    }
  }

  /** Every object under `prefix`, in key order, page by page (ListObjectsV2). */
  async *listObjects(prefix: string): AsyncIterable<{ key: string; size: number; modifiedAt: number }> {
    let token: string | undefined;
    do {
      const page = await this.call("ListObjectsV2", () =>
        this.client.send(
          new ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: prefix, ContinuationToken: token }),
        ),
      );
      for (const o of page.Contents ?? []) {
        if (o.Key)
          yield { key: o.Key, size: o.Size ?? 0, modifiedAt: o.LastModified?.getTime() ?? Date.now() };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async deleteKeys(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      const out = await this.call("DeleteObjects", () =>
        this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.options.bucket,
            Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
          }),
        ),
      );
      // DeleteObjects answers 200 even when some keys were not deleted: those are errors too.
      const failed = (out.Errors ?? []).filter((e) => e.Code !== "NoSuchKey");
      if (failed.length > 0) {
        const first = failed[0]!;
        const err = Object.assign(new Error(`${first.Key}: ${first.Code}: ${first.Message ?? ""}`), {
          name: first.Code ?? "DeleteError",
        });
        // Throttling and server errors make the store unavailable, like a failed request would.
        if (["SlowDown", "InternalError", "ServiceUnavailable"].includes(first.Code ?? "")) {
          throw new StoreUnavailableError(`s3 DeleteObjects (${failed.length} keys)`, err);
        }
        throw err;
      }
    }
  }

  // ---------------------------------------------------------------- uploads

  async createUpload(id: string): Promise<void> {
    this.uploadPrefix(id);
    await this.saveState(id, {
      key: this.locationKey(id),
      mpu: null,
      parts: [],
      size: 0,
      tail: 0,
      hash: null,
      createdAt: Date.now(),
    });
  }

  /** The key of an upload's multipart upload (see UploadStateObject.key). */
  private uploadKey(id: string, state: UploadStateObject): string {
    const key = state.key ?? `${this.uploadPrefix(id)}data`;
    if (key !== this.locationKey(id) && key !== `${this.uploadPrefix(id)}data`) {
      throw new Error(`upload ${id}: its state names the key ${JSON.stringify(key)}`);
    }
    return key;
  }

  private async createMultipart(key: string): Promise<string> {
    const created = await this.call("CreateMultipartUpload", () =>
      this.client.send(
        new CreateMultipartUploadCommand({
          Bucket: this.options.bucket,
          Key: key,
          ...this.writeParams(),
        }),
      ),
    );
    if (!created.UploadId) throw new Error("S3 CreateMultipartUpload returned no UploadId");
    return created.UploadId;
  }

  private stateKey(id: string, size: number): string {
    return `${this.uploadPrefix(id)}state/${String(size).padStart(16, "0")}`;
  }

  private tailKey(id: string, size: number): string {
    return `${this.uploadPrefix(id)}tail/${String(size).padStart(16, "0")}`;
  }

  private async saveState(id: string, state: UploadStateObject): Promise<void> {
    await this.putObject("PutObject upload state", this.stateKey(id, state.size), JSON.stringify(state));
  }

  /** A small object whole, or null when it does not exist. */
  async getObject(operation: string, key: string): Promise<Buffer | null> {
    try {
      const out = await this.call(operation, () =>
        this.client.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: key })),
      );
      return Buffer.from(
        await (out.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
      );
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  private async loadState(id: string, size: number): Promise<UploadStateObject | null> {
    const raw = await this.getObject("GetObject upload state", this.stateKey(id, size));
    return raw ? (JSON.parse(raw.toString("utf8")) as UploadStateObject) : null;
  }

  /** Sizes with a recorded state, ascending. */
  private async stateSizes(id: string): Promise<{ size: number; modifiedAt: number }[]> {
    const base = `${this.uploadPrefix(id)}state/`;
    const out: { size: number; modifiedAt: number }[] = [];
    for await (const o of this.listObjects(base)) {
      const size = Number(o.key.slice(base.length));
      if (Number.isSafeInteger(size)) out.push({ size, modifiedAt: o.modifiedAt });
    }
    return out.sort((a, b) => a.size - b.size);
  }

  async uploadSize(id: string): Promise<number | null> {
    const sizes = await this.stateSizes(id);
    return sizes.length === 0 ? null : sizes[sizes.length - 1]!.size;
  }

  /**
   * One GET of the state at the acknowledged size instead of listing them all. States beyond it (left by
   * writes that were never acknowledged) are not cut back: nothing trusts them, since a state is read only
   * at a size the database acknowledged, and the write that reached that size wrote it last; they go when
   * the upload is committed or deleted. The state read is kept for this request (see `resumed`).
   */
  async continueUpload(id: string, acknowledged: number): Promise<number | null> {
    this.resumed.delete(id);
    const state = await this.loadState(id, acknowledged);
    if (!state) return this.uploadSize(id);
    if (this.resumed.size >= 10_000) this.resumed.clear();
    this.resumed.set(id, { size: acknowledged, state, at: Date.now() });
    return acknowledged;
  }

  /** The state continueUpload read at `size` for this upload's current writer, if that is recent. */
  private resumedState(id: string, size: number): UploadStateObject | null {
    const seen = this.resumed.get(id);
    if (!seen || seen.size !== size || Date.now() - seen.at > RESUMED_MS) return null;
    return seen.state;
  }

  /** The SHA-256 state (src/registry/sha256.ts) over the first `size` bytes, when recorded. */
  async uploadHashState(id: string, size: number): Promise<Uint8Array | null> {
    const state = this.resumedState(id, size) ?? (await this.loadState(id, size));
    return state?.hash ? Buffer.from(state.hash, "base64") : null;
  }

  async writeUpload(
    id: string,
    offset: number,
    source: AsyncIterable<Buffer>,
    onChunk: (chunk: Buffer) => void,
    hashState?: () => Uint8Array | null,
  ): Promise<number> {
    const before = this.resumedState(id, offset) ?? (await this.loadState(id, offset));
    this.resumed.delete(id);
    if (!before) throw new Error(`upload ${id} has no recorded state at ${offset} bytes`);
    const key = this.uploadKey(id, before);
    const parts = [...before.parts];
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    if (before.tail > 0) {
      const tail = await this.getObject("GetObject upload tail", this.tailKey(id, offset));
      if (!tail || tail.length !== before.tail) throw new Error(`upload ${id}: its tail object is missing`);
      pending.push(tail);
      pendingBytes = tail.length;
    }
    const inFlight = new Set<Promise<void>>();
    let failure: unknown = null;
    let mpu: Promise<string> | null = before.mpu ? Promise.resolve(before.mpu) : null;
    const sendPart = (body: Buffer) => {
      const n = (parts.length === 0 ? 0 : parts[parts.length - 1]!.n) + 1;
      const part: Part = { n, etag: "", size: body.length };
      parts.push(part);
      mpu ??= this.createMultipart(key);
      const p = mpu
        .then((upload) => this.uploadPart(key, upload, n, body))
        .then((etag) => {
          part.etag = etag;
        })
        .catch((err) => {
          failure ??= err;
        })
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
    };
    let written = 0;
    for await (const chunk of source) {
      if (failure) break;
      onChunk(chunk);
      written += chunk.length;
      pending.push(chunk);
      pendingBytes += chunk.length;
      while (pendingBytes >= this.partSize) {
        const all = Buffer.concat(pending, pendingBytes);
        sendPart(all.subarray(0, this.partSize));
        const rest = all.subarray(this.partSize);
        pending = rest.length > 0 ? [Buffer.from(rest)] : [];
        pendingBytes = rest.length;
        // Two parts in flight while the next one fills: memory stays at a few part sizes.
        while (inFlight.size >= 2) await Promise.race(inFlight);
      }
    }
    if (!failure && pendingBytes >= MIN_PART) {
      sendPart(Buffer.concat(pending, pendingBytes));
      pending = [];
      pendingBytes = 0;
    }
    const size = offset + written;
    // The tail goes up while the last parts do: nothing trusts it before the state that names it.
    const tail =
      !failure && pendingBytes > 0
        ? this.putObject(
            "PutObject upload tail",
            this.tailKey(id, size),
            Buffer.concat(pending, pendingBytes),
          )
        : null;
    await Promise.all([...inFlight, tail]);
    if (failure) throw failure;
    const hash = hashState?.() ?? null;
    await this.saveState(id, {
      key: before.key,
      mpu: mpu ? await mpu : null,
      parts,
      size,
      tail: pendingBytes,
      hash: hash ? Buffer.from(hash).toString("base64") : null,
      createdAt: before.createdAt,
      prev: offset,
    });
    // The state this write continued from was acknowledged (the caller passes the acknowledged size as
    // `offset`), so the one before it can no longer be asked for: deleted in the background, by name. A
    // delete that fails leaves objects that the upload's deletion (at commit or purge) lists and removes.
    if (before.prev !== undefined && before.prev < offset) {
      this.deleteKeys([this.stateKey(id, before.prev), this.tailKey(id, before.prev)]).catch(() => {});
    }
    return written;
  }

  private async uploadPart(key: string, mpu: string, n: number, body: Buffer): Promise<string> {
    const out = await this.call("UploadPart", () =>
      this.client.send(
        new UploadPartCommand({
          Bucket: this.options.bucket,
          Key: key,
          UploadId: mpu,
          PartNumber: n,
          Body: body,
          ContentLength: body.length,
        }),
      ),
    );
    if (!out.ETag) throw new Error("S3 UploadPart returned no ETag");
    return out.ETag;
  }

  /** Deletes the state and tail objects whose size matches `drop`. */
  private async dropStates(id: string, drop: (size: number) => boolean): Promise<void> {
    const keys: string[] = [];
    for (const kind of ["state", "tail"]) {
      const base = `${this.uploadPrefix(id)}${kind}/`;
      for await (const o of this.listObjects(base)) {
        if (drop(Number(o.key.slice(base.length)))) keys.push(o.key);
      }
    }
    if (keys.length > 0) await this.deleteKeys(keys);
  }

  async readUpload(_id: string, _length: number): Promise<Readable> {
    throw new Error("the parts of an S3 multipart upload cannot be read back before it completes");
  }

  async truncateUpload(id: string, size: number): Promise<void> {
    this.resumed.delete(id);
    if (!(await this.loadState(id, size))) {
      throw new Error(`upload ${id} has no recorded state at ${size} bytes to go back to`);
    }
    await this.dropStates(id, (s) => s > size);
  }

  /** S3 acknowledges a write once it is durable: nothing to flush. */
  async syncUpload(_id: string): Promise<void> {}

  /**
   * `acknowledged`: the size the database acknowledged, when the caller knows it (then the state at that
   * size is read, and states beyond it, never acknowledged, are ignored); else the largest state's.
   */
  async commitUpload(id: string, digest: string, acknowledged?: number): Promise<void> {
    const size = acknowledged ?? (await this.uploadSize(id));
    if (size === null) throw new Error(`upload ${id} does not exist`);
    const state = this.resumedState(id, size) ?? (await this.loadState(id, size));
    this.resumed.delete(id);
    if (!state) throw new Error(`upload ${id} has no state at ${size} bytes`);
    if (size < MIN_PART) {
      // Small blobs (configs, tiny layers): one PUT of the tail to Distribution's key.
      const body =
        state.tail > 0
          ? await this.getObject("GetObject upload tail", this.tailKey(id, size))
          : Buffer.alloc(0);
      if (!body || body.length !== size) throw new Error(`upload ${id}: its tail object is missing`);
      await this.putObject("PutObject blob", this.blobKey(digest), body);
      await this.deleteUpload(id);
      return;
    }
    const source = this.uploadKey(id, state);
    if (!state.key) return this.commitByCopy(id, digest, size, state, source);
    // The caller holds the database's lock on this digest: what is found here is not being written.
    // Independent reads, at once: whether the bytes are stored already, whether an earlier commit completed
    // this upload, and the tail.
    const [found, completed, tail] = await Promise.all([
      this.find(digest),
      this.completedEarlier(source, size),
      state.tail > 0 ? this.getObject("GetObject upload tail", this.tailKey(id, size)) : null,
    ]);
    const present = found && found.stat.size === size ? found.key : null;
    if (present !== null) {
      // Already stored (another upload of the same bytes, or this one, completed by a commit that stopped
      // before the database recorded it): keep that, drop this upload and its object if it has one.
      await this.deleteUpload(id);
      if (present !== source) await this.deleteKeys([source]);
      return;
    }
    if (!completed && state.tail > 0 && tail?.length !== state.tail) {
      throw new Error(`upload ${id}: its tail object is missing`);
    }
    // The link before the completion: an object completed at its location always has a link naming it, so
    // the collector finds it through list() even if the database never records the blob.
    const link = this.putObject("PutObject blob link", this.linkKey(digest), source);
    if (!completed) {
      const parts = [...state.parts];
      if (tail && state.tail > 0) {
        const n = (parts[parts.length - 1]?.n ?? 0) + 1;
        const [etag] = await Promise.all([this.uploadPart(source, state.mpu!, n, tail), link]);
        parts.push({ n, etag, size: tail.length });
      }
      await link;
      await this.completeMultipart(source, state.mpu!, parts);
    } else {
      await link;
    }
    // No copy: the completed object is the blob, where it is.
    this.locations.set(digest, source);
    await this.deleteUpload(id, { completed: true });
  }

  private async completeMultipart(key: string, mpu: string, parts: Part[]): Promise<void> {
    await this.call("CompleteMultipartUpload", () =>
      this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.options.bucket,
          Key: key,
          UploadId: mpu,
          MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.n, ETag: p.etag })) },
        }),
      ),
    );
  }

  /**
   * Uploads begun before blob locations (their multipart upload is at `berth/uploads/<id>/data`, which
   * deleting the upload removes): completed, then copied to Distribution's key.
   */
  private async commitByCopy(
    id: string,
    digest: string,
    size: number,
    state: UploadStateObject,
    source: string,
  ): Promise<void> {
    const target = this.blobKey(digest);
    if (await this.completedEarlier(source, size)) {
      // A commit that stopped (a crash) after completing the multipart upload: the object is whole already.
      await this.copyObject(source, target, size);
      await this.deleteUpload(id, { completed: true });
      return;
    }
    const parts = [...state.parts];
    if (state.tail > 0) {
      const tail = await this.getObject("GetObject upload tail", this.tailKey(id, size));
      if (!tail || tail.length !== state.tail) throw new Error(`upload ${id}: its tail object is missing`);
      const n = (parts[parts.length - 1]?.n ?? 0) + 1;
      parts.push({ n, etag: await this.uploadPart(source, state.mpu!, n, tail), size: tail.length });
    }
    await this.completeMultipart(source, state.mpu!, parts);
    // S3 cannot rename: the completed object is copied to its digest key inside the bucket.
    await this.copyObject(source, target, size);
    await this.deleteUpload(id, { completed: true });
  }

  /** Whether the upload's own object exists whole (its multipart upload was completed by an earlier commit). */
  private async completedEarlier(key: string, size: number): Promise<boolean> {
    try {
      const head = await this.call("HeadObject upload", () =>
        this.client.send(new HeadObjectCommand({ Bucket: this.options.bucket, Key: key })),
      );
      return head.ContentLength === size;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /** Server-side copy: CopyObject below multipartcopythresholdsize, else UploadPartCopy in parallel. */
  private async copyObject(source: string, target: string, size: number): Promise<void> {
    const bucket = this.options.bucket;
    const threshold = Math.min(this.options.multipartcopythresholdsize ?? MAX_COPY_OBJECT, MAX_COPY_OBJECT);
    const copySource = `${bucket}/${encodeURI(source)}`;
    if (size <= threshold) {
      await this.call("CopyObject", () =>
        this.client.send(
          new CopyObjectCommand({
            Bucket: bucket,
            Key: target,
            CopySource: copySource,
            ...this.writeParams(),
          }),
        ),
      );
      return;
    }
    const chunk = Math.max(this.options.multipartcopychunksize ?? 32 * MiB, MIN_PART);
    const concurrency = Math.max(this.options.multipartcopymaxconcurrency ?? 100, 1);
    const created = await this.call("CreateMultipartUpload", () =>
      this.client.send(
        new CreateMultipartUploadCommand({ Bucket: bucket, Key: target, ...this.writeParams() }),
      ),
    );
    const mpu = created.UploadId!;
    const count = Math.ceil(size / chunk);
    const etags: string[] = new Array(count);
    let next = 0;
    try {
      const worker = async () => {
        for (let i = next++; i < count; i = next++) {
          const start = i * chunk;
          const end = Math.min(size, start + chunk) - 1;
          const out = await this.call("UploadPartCopy", () =>
            this.client.send(
              new UploadPartCopyCommand({
                Bucket: bucket,
                Key: target,
                UploadId: mpu,
                PartNumber: i + 1,
                CopySource: copySource,
                CopySourceRange: `bytes=${start}-${end}`,
              }),
            ),
          );
          etags[i] = out.CopyPartResult?.ETag ?? "";
        }
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
      await this.call("CompleteMultipartUpload", () =>
        this.client.send(
          new CompleteMultipartUploadCommand({
            Bucket: bucket,
            Key: target,
            UploadId: mpu,
            MultipartUpload: { Parts: etags.map((ETag, i) => ({ PartNumber: i + 1, ETag })) },
          }),
        ),
      );
    } catch (err) {
      await this.client
        .send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: target, UploadId: mpu }))
        .catch(() => {});
      throw err;
    }
  }

  /**
   * Aborts the upload's multipart uploads (all S3 knows at its keys, so that one created by a request that
   * died before recording it goes too: nothing is left billing) and deletes its state and tail objects.
   * A completed object at `berth/blobs/<id>/data` is left alone: it is a blob, and its link names it (the
   * collector deletes it when the database has no row for it).
   * `completed`: the multipart upload was just completed, there is nothing to abort.
   */
  async deleteUpload(id: string, opts: { completed?: boolean } = {}): Promise<void> {
    const prefix = this.uploadPrefix(id);
    this.resumed.delete(id);
    if (!opts.completed) {
      for (const key of [this.locationKey(id), `${prefix}data`]) {
        const open = await this.call("ListMultipartUploads", () =>
          this.client.send(new ListMultipartUploadsCommand({ Bucket: this.options.bucket, Prefix: key })),
        );
        for (const upload of open.Uploads ?? []) {
          if (upload.Key !== key || !upload.UploadId) continue;
          await this.call("AbortMultipartUpload", () =>
            this.client.send(
              new AbortMultipartUploadCommand({
                Bucket: this.options.bucket,
                Key: key,
                UploadId: upload.UploadId,
              }),
            ),
          ).catch((err) => {
            if (!isNotFound(err)) throw err;
          });
        }
      }
    }
    const keys: string[] = [];
    for await (const o of this.listObjects(prefix)) keys.push(o.key);
    if (keys.length > 0) await this.deleteKeys(keys);
  }

  async *listUploads(): AsyncIterable<StoredUpload> {
    const base = `${this.prefix}berth/uploads/`;
    const latest = new Map<string, StoredUpload>();
    for await (const o of this.listObjects(base)) {
      const m = /^([a-zA-Z0-9-]{1,64})\/state\/(\d+)$/.exec(o.key.slice(base.length));
      if (!m) continue;
      const seen = latest.get(m[1]!);
      const size = Number(m[2]);
      if (!seen || seen.size <= size) latest.set(m[1]!, { id: m[1]!, size, modifiedAt: o.modifiedAt });
    }
    yield* latest.values();
  }

  async probe(): Promise<void> {
    const key = `${this.prefix}berth/probe-${process.pid}-${Date.now()}`;
    await this.putObject("PutObject probe", key, "ok");
    await this.call("DeleteObject probe", () =>
      this.client.send(new DeleteObjectCommand({ Bucket: this.options.bucket, Key: key })),
    );
  }

  close(): void {
    this.client.destroy();
  }
}

/** The S3 client for storage.s3: endpoint, path style, TLS, credentials, retries and timeouts. */
export function s3ClientConfig(options: S3Options): S3ClientConfig {
  let endpoint = options.regionendpoint;
  if (endpoint && !/^[a-z]+:\/\//i.test(endpoint)) {
    endpoint = `${options.secure === false ? "http" : "https"}://${endpoint}`;
  }
  return {
    region: options.region,
    endpoint,
    forcePathStyle: options.forcepathstyle ?? false,
    credentials:
      options.accesskey && options.secretkey
        ? { accessKeyId: options.accesskey, secretAccessKey: options.secretkey }
        : undefined,
    // The SDK retries throttling (503 SlowDown), 5xx and network errors with exponential backoff.
    maxAttempts: options.maxattempts ?? 4,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    requestHandler: {
      connectionTimeout: 5_000,
      requestTimeout: options.requesttimeout ?? REQUEST_TIMEOUT_MS,
      ...(options.skipverify
        ? { httpsAgent: new HttpsAgent({ rejectUnauthorized: false, keepAlive: true }) }
        : {}),
    },
  };
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number }; cause?: unknown };
  if (e instanceof StoreUnavailableError) return false;
  return (
    e?.name === "NotFound" ||
    e?.name === "NoSuchKey" ||
    e?.name === "NoSuchUpload" ||
    e?.$metadata?.httpStatusCode === 404
  );
}

/** Throttling, server errors, timeouts and connection failures: the store, not the request, is at fault. */
function isUnavailable(err: unknown): boolean {
  const e = err as { name?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const status = e?.$metadata?.httpStatusCode;
  // A bucket that is gone, or credentials that no longer work: the store is unusable, not the request wrong.
  if (["NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"].includes(e?.name ?? ""))
    return true;
  if (status !== undefined && (status >= 500 || status === 429)) return true;
  if (
    ["SlowDown", "ServiceUnavailable", "TimeoutError", "RequestTimeout", "ThrottlingException"].includes(
      e?.name ?? "",
    )
  )
    return true;
  return ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EAI_AGAIN"].includes(
    e?.code ?? "",
  );
}
