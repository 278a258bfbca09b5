import { type Config, dataDirOf } from "../config/schema.js";
import { type MetadataDb, openSqlite } from "../metadata/db.js";
import { MetadataStore } from "../metadata/store.js";
import { Registry } from "../registry/registry.js";
import type { BlobStore } from "../storage/blob-store.js";
import { FilesystemBlobStore } from "../storage/filesystem.js";
import { S3BlobStore } from "../storage/s3.js";

export interface Runtime {
  dataDir: string;
  metadata: MetadataDb;
  meta: MetadataStore;
  storage: BlobStore;
  registry: Registry;
  close(): Promise<void>;
}

/** Opens the stores named by the configuration and the domain on top of them (for serve and the other commands). */
export async function openRuntime(config: Config, options: { migrate?: boolean } = {}): Promise<Runtime> {
  const dataDir = dataDirOf(config);
  const storage = await openBlobStore(config, dataDir);
  const metadata = await openSqlite(dataDir, { migrate: options.migrate });
  const meta = new MetadataStore(metadata);
  const registry = new Registry(meta, storage, {
    deleteEnabled: config.storage.delete.enabled,
    readOnly: config.storage.maintenance.readonly.enabled,
    maxManifestBytes: config.http.maxmanifestbytes,
    linkRefreshMs: config.gc.graceperiod / 2,
  });
  return {
    dataDir,
    metadata,
    meta,
    storage,
    registry,
    close: async () => {
      await metadata.close();
      storage.close?.();
    },
  };
}

/**
 * The one place the blob store is chosen: storage.s3 when configured, else the filesystem under the data
 * directory. With S3 the data directory still holds the SQLite database and local scratch, no blob bytes.
 */
export async function openBlobStore(config: Config, dataDir: string): Promise<BlobStore> {
  const s3 = config.storage.s3;
  if (s3) return new S3BlobStore(s3);
  const fsStore = new FilesystemBlobStore(dataDir);
  await fsStore.init();
  return fsStore;
}
