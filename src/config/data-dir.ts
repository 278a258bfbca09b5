import path from "node:path";
import type { Config } from "./schema.js";

/** The data directory (blobs, database, keys), absolute. Apart from the schema: workers never load zod. */
export function dataDirOf(config: Config): string {
  return path.resolve(config.storage.filesystem.rootdirectory);
}
