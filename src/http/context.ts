import type { Logger } from "pino";
import type { Config } from "../config/schema.js";
import type { MetadataDb } from "../metadata/db.js";
import type { Registry } from "../registry/registry.js";
import type { BlobStore } from "../storage/blob-store.js";

/** Everything a route module needs, built once per process by `berth serve`. */
export interface AppContext {
  config: Config;
  dataDir: string;
  registry: Registry;
  metadata: MetadataDb;
  storage: BlobStore;
  log: Logger;
}
