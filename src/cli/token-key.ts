import type { Logger } from "pino";
import { type SigningKey, sharedSigningKey } from "../auth/token.js";
import type { Config } from "../config/schema.js";
import type { MetadataDb } from "../metadata/db.js";
import { readSetting, settleSetting } from "../metadata/settings-queries.js";

/**
 * The token signing key kept in the metadata database, when Berth issues tokens with a key of its own
 * making (auth.token without signingkey or rootcertbundle); undefined otherwise.
 */
export async function openTokenKey(
  config: Config,
  metadata: MetadataDb,
  dataDir: string,
  log?: Logger,
): Promise<SigningKey | undefined> {
  const token = config.auth.token;
  if (!token || token.signingkey || token.rootcertbundle) return undefined;
  const settings = {
    read: (name: string) => readSetting(metadata.db, name),
    settle: (name: string, candidate: string) => settleSetting(metadata.db, name, candidate),
  };
  return sharedSigningKey(settings, dataDir, log);
}
