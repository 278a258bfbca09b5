import path from "node:path";
import type { Config } from "./schema.js";

/** The data directory (blobs, database, keys), absolute. Apart from the schema: workers never load zod. */
export function dataDirOf(config: Config): string {
  return path.resolve(config.storage.filesystem.rootdirectory);
}

/**
 * Whether registry:2's link files are kept: `storage.s3.distributionlinks` for blobs in a bucket,
 * `storage.filesystem.distributionlinks` for a directory; unset, on for adopted data, off for new.
 */
export function distributionLinksWanted(config: Config): boolean | undefined {
  return config.storage.s3
    ? config.storage.s3.distributionlinks
    : config.storage.filesystem.distributionlinks;
}
