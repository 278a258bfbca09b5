/**
 * In-process fixture for the garbage-collection unit tests: a real Registry over SQLite and the
 * filesystem store in a temp directory, images built in memory, and helpers to age rows.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { openRuntime, type Runtime } from "../../src/cli/runtime.js";
import { type Config, configSchema } from "../../src/config/schema.js";
import { collectGarbage, type GcOptions, type GcReport, Lease } from "../../src/registry/gc.js";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";

// Images are built the same way as in the integration tests.
export { type Blob, blob, bytes, type Image, image, sha256 } from "../integration/gc-helpers.js";

import { blob, bytes, type Image, image, sha256 } from "../integration/gc-helpers.js";

/** An artifact whose subject is `subject` (a signature, an SBOM). */
export function referrer(seed: string, subject: { digest: string; size: number }): Image {
  return image(seed, [blob(bytes(`${seed}-payload`, 64))], {
    artifactType: "application/vnd.example.signature",
    subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.size },
  });
}

export function index(children: Image[]): { manifest: Buffer; digest: string } {
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: children.map((c, i) => ({
        mediaType: OCI_MANIFEST,
        digest: c.digest,
        size: c.manifest.length,
        platform: { architecture: i === 0 ? "amd64" : `arch${i}`, os: "linux" },
      })),
    }),
  );
  return { manifest, digest: sha256(manifest) };
}

export class Fixture {
  private constructor(
    readonly dir: string,
    readonly config: Config,
    readonly rt: Runtime,
  ) {}

  static async create(input: Record<string, unknown> = {}): Promise<Fixture> {
    const dir = mkdtempSync(path.join(os.tmpdir(), "berth-gc-unit-"));
    // The tests delete through the registry: deletes are off unless enabled.
    const config = configSchema.parse({
      ...input,
      storage: { filesystem: { rootdirectory: dir }, delete: { enabled: true } },
    });
    const rt = await openRuntime(config);
    return new Fixture(dir, config, rt);
  }

  get registry() {
    return this.rt.registry;
  }

  get db() {
    return this.rt.meta.db;
  }

  async close(): Promise<void> {
    await this.rt.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  async pushBlob(repo: string, b: Blob): Promise<void> {
    await this.registry.monolithicUpload(
      repo,
      b.digest,
      (async function* () {
        yield b.data;
      })(),
      b.size,
    );
  }

  async pushImage(repo: string, ref: string, img: Image): Promise<string> {
    await this.pushBlob(repo, img.config);
    for (const l of img.layers) await this.pushBlob(repo, l);
    return (await this.registry.putManifest(repo, ref, img.manifest, OCI_MANIFEST)).digest;
  }

  async pushIndex(repo: string, ref: string, children: Image[]): Promise<string> {
    for (const c of children) await this.pushImage(repo, c.digest, c);
    const idx = index(children);
    return (await this.registry.putManifest(repo, ref, idx.manifest, OCI_INDEX)).digest;
  }

  /** Moves every timestamp `ms` into the past, as if everything had been pushed that long ago. */
  async age(ms: number): Promise<void> {
    const { sql } = await import("kysely");
    await sql`update blobs set created_at = created_at - ${ms}`.execute(this.db);
    await sql`update repository_blobs set created_at = created_at - ${ms}`.execute(this.db);
    await sql`update manifests set created_at = created_at - ${ms}`.execute(this.db);
    await sql`update tags set created_at = created_at - ${ms}, updated_at = updated_at - ${ms}`.execute(
      this.db,
    );
    await sql`update uploads set created_at = created_at - ${ms}, updated_at = updated_at - ${ms}`.execute(
      this.db,
    );
  }

  async blobOnDisk(digest: string): Promise<boolean> {
    return (await this.rt.storage.stat(digest)) !== null;
  }

  async blobRow(digest: string): Promise<boolean> {
    return (
      (await this.db.selectFrom("blobs").select("digest").where("digest", "=", digest).executeTakeFirst()) !==
      undefined
    );
  }

  async hasManifest(repo: string, digest: string): Promise<boolean> {
    try {
      await this.registry.getManifest(repo, digest);
      return true;
    } catch {
      return false;
    }
  }

  /** Reads a whole blob through the registry (as a pull would). */
  async readBlob(repo: string, digest: string): Promise<Buffer> {
    const { stream } = await this.registry.openBlob(repo, digest);
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  /** A collection with this fixture's configuration (grace 0 unless given), holding the lease. */
  async gc(overrides: Partial<GcOptions> = {}): Promise<GcReport> {
    const base: GcOptions = {
      graceMs: 0,
      batchSize: 50,
      pauseMs: 0,
      untagged: { enabled: false, olderThanMs: 0 },
      uploads: null,
      dryRun: false,
      lease: null,
      ...overrides,
    };
    if (base.dryRun) return collectGarbage({ meta: this.rt.meta, store: this.rt.storage }, base);
    const lease = base.lease ?? (await Lease.acquire(this.rt.meta, "job:gc", { takeIdle: true }));
    if (!lease) throw new Error("gc lease is held");
    try {
      return await collectGarbage({ meta: this.rt.meta, store: this.rt.storage }, { ...base, lease });
    } finally {
      if (!overrides.lease) await lease.release(0);
    }
  }
}
