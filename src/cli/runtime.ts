import { constants as fsc } from "node:fs";
import fs from "node:fs/promises";
import { dataDirOf, distributionLinksWanted } from "../config/data-dir.js";
import type { Config } from "../config/schema.js";
import { type MetadataDb, openMetadata } from "../metadata/db.js";
import { SqlMetadataStore } from "../metadata/store.js";
import { databaseTarget } from "../metadata/target.js";
import { EventRecorder } from "../registry/events.js";
import { Registry } from "../registry/registry.js";
import { type BlobStore, isStoreUnavailable } from "../storage/blob-store.js";
import { DistributionLayout, type DistributionTree } from "../storage/distribution-layout.js";
import { FilesystemBlobStore } from "../storage/filesystem.js";
import type { S3BlobStore } from "../storage/s3.js";
import { openProxy } from "./proxy-runtime.js";

export interface Runtime {
  dataDir: string;
  metadata: MetadataDb;
  meta: SqlMetadataStore;
  storage: BlobStore;
  registry: Registry;
  /** registry:2's link files are kept in step with the rows (src/cli/distribution.ts). */
  distributionLinks: boolean;
  close(): Promise<void>;
}

/** Opens the stores named by the configuration and the domain on top of them (for serve and the other commands). */
export async function openRuntime(
  config: Config,
  options: { migrate?: boolean; adopt?: boolean } = {},
): Promise<Runtime> {
  const dataDir = dataDirOf(config);
  await assertWritableDataDir(dataDir);
  const storage = await openBlobStore(config, dataDir);
  const metadata = await openMetadata(databaseTarget(config.database), dataDir, { migrate: options.migrate });
  const meta = new SqlMetadataStore(metadata);
  const registry = new Registry(meta, storage, {
    deleteEnabled: config.storage.delete.enabled,
    readOnly: config.storage.maintenance.readonly.enabled,
    maxManifestBytes: config.http.maxmanifestbytes,
    linkRefreshMs: config.gc.graceperiod / 2,
    events: EventRecorder.fromConfig(meta.events, config), // [events, issue 14]
  });
  registry.proxy = openProxy(config, meta, storage); // [pull-through cache, issue 13]
  // [adoption, issues 12 and 20] registry:2 data beside the blobs (a directory, or a bucket) is adopted by the
  // migrating process and its link files kept in step; without any, this costs one stat (a directory) or
  // one listing of at most one key (a bucket).
  const tree = await distributionTree(storage, dataDir);
  let present: boolean;
  try {
    present = await tree.present();
  } catch (err) {
    if (!isStoreUnavailable(err)) throw err;
    // A bucket that cannot be reached now: serve (blob requests answer 503 until it is back) and look for
    // registry:2 data at the next start. The collector never takes its objects meanwhile (gc.ts refuses
    // orphans while it cannot list them).
    process.emitWarning(
      `registry:2 data in the blob store was not looked for (${(err as Error).message}); it is looked for at the next start`,
    );
    present = false;
  }
  const distribution =
    present || distributionLinksWanted(config) === true
      ? await (await import("./distribution.js")).openDistribution(
          config,
          { dataDir, meta, tree },
          { adopt: options.adopt ?? options.migrate !== false, present },
        )
      : null;
  return {
    dataDir,
    metadata,
    meta,
    storage,
    registry,
    distributionLinks: distribution !== null,
    close: async () => {
      registry.proxy?.close();
      await distribution?.close();
      await metadata.close();
      storage.close?.();
    },
  };
}

/** Where registry:2's repositories would be beside the blobs: the data directory, or the bucket. */
export async function distributionTree(storage: BlobStore, dataDir: string): Promise<DistributionTree> {
  if (storage instanceof FilesystemBlobStore) return new DistributionLayout(dataDir);
  if (storage.kind === "s3")
    return new (await import("../storage/distribution-s3.js")).S3DistributionTree(storage as S3BlobStore);
  throw new Error(`no registry:2 layout for the ${storage.kind} store`);
}

/**
 * The data directory holds the database, keys and scratch whatever store holds the blobs: one that this
 * user cannot write stops the start with the path and the command that fixes it, instead of an EACCES from
 * deep inside SQLite (a registry:2 volume is owned by root; Berth's image runs as an unprivileged user).
 */
export async function assertWritableDataDir(dataDir: string): Promise<void> {
  try {
    await fs.mkdir(dataDir, { recursive: true });
    await fs.access(dataDir, fsc.W_OK | fsc.X_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "EACCES" && code !== "EPERM" && code !== "EROFS") throw err;
    const uid = process.getuid?.();
    const gid = process.getgid?.();
    const who = uid === undefined ? "this user" : `uid ${uid}`;
    throw new Error(
      `the data directory ${dataDir} (storage.filesystem.rootdirectory) is not writable by ${who} (${code}). ` +
        (code === "EROFS"
          ? "It is on a read-only filesystem: mount a writable volume there."
          : `Give it to Berth's user, as root: chown -R ${uid ?? "USER"}:${gid ?? "GROUP"} ${dataDir} ` +
            "(for a container's volume, in any container that mounts it), or point storage.filesystem.rootdirectory elsewhere."),
    );
  }
}

/**
 * The one place the blob store is chosen: storage.s3 when configured, else the filesystem under the data
 * directory. With S3 the data directory still holds the SQLite database and local scratch, no blob bytes.
 */
export async function openBlobStore(config: Config, dataDir: string): Promise<BlobStore> {
  const s3 = config.storage.s3;
  // Loaded only when configured: the AWS SDK is large, and most registries never need it.
  if (s3) return new (await import("../storage/s3.js")).S3BlobStore(s3);
  const fsStore = new FilesystemBlobStore(dataDir);
  await fsStore.init();
  return fsStore;
}
