import type { Logger } from "pino";
import type { SigningKey } from "../auth/token.js";
import type { Config } from "../config/schema.js";
import type { MetadataStore } from "../metadata/store.js";
import type { Registry } from "../registry/registry.js";
import type { BlobStore } from "../storage/blob-store.js";

/** Everything a route module needs, built once per process by `berth serve`. */
export interface AppContext {
  config: Config;
  dataDir: string;
  registry: Registry;
  /** The metadata store, in domain terms: src/http runs no SQL of its own. */
  metadata: MetadataStore;
  storage: BlobStore;
  log: Logger;
  /** The token signing key shared through the metadata database (src/cli/token-key.ts), when one is used. */
  tokenKey?: SigningKey;
}
