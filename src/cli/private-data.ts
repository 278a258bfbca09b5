import path from "node:path";
import type { Logger } from "pino";
import { legacyKeyFile } from "../auth/token.js";
import type { Config } from "../config/schema.js";
import { acmePaths, type Letsencrypt } from "../http/acme-state.js";
import { privateCaPaths } from "../http/private-ca.js";
import { sqlitePath } from "../metadata/target.js";
import { octal, tightenPrivate } from "../storage/private-files.js";

/**
 * The folders and files of a data directory that hold secrets: the SQLite database with its -wal and
 * -shm (the token signing key is in its `settings` table), the token key file of an older Berth, the
 * private CA's key and the server key of `berth tls init`, the ACME account key and certificate key.
 */
export function privateDataPaths(config: Config, dataDir: string): { dirs: string[]; files: string[] } {
  const db = sqlitePath(dataDir);
  const ca = privateCaPaths(dataDir);
  // acmePaths reads nothing of the section but cachefile: the default place when ACME is not configured.
  const acme = acmePaths(config.http.tls.letsencrypt ?? ({} as Letsencrypt), dataDir);
  return {
    dirs: [path.dirname(db), ca.dir, acme.dir],
    files: [
      db,
      `${db}-wal`,
      `${db}-shm`,
      legacyKeyFile(dataDir),
      ca.caKey,
      ca.server,
      acme.account,
      acme.certificate,
    ],
  };
}

/**
 * Takes every group and other permission away from the data directory's secrets (0700 folders, 0600
 * files), at the start of `berth serve`, before any other worker opens the database; says in one line
 * what it changed, and warns about what it could not change.
 */
export function tightenDataDir(config: Config, dataDir: string, log: Logger): void {
  const { changed, failed } = tightenPrivate(privateDataPaths(config, dataDir));
  if (changed.length > 0) {
    const list = changed.map(
      (c) => `${path.relative(dataDir, c.path) || c.path} ${octal(c.from)} -> ${octal(c.to)}`,
    );
    // A file that others could read may have been read: the key in it is to be replaced.
    const files = changed.some((c) => c.kind === "file");
    log.warn(
      { dataDir, changed: list },
      `made private what other local users could read: ${list.join(", ")}` +
        (files
          ? "; a key in a file that others could read may have been copied: rotate it (docs/auth.md)"
          : ""),
    );
  }
  if (failed.length > 0) {
    const list = failed.map((f) => `${f.path} ${octal(f.mode)} (${f.error})`);
    log.warn(
      { dataDir, failed: list },
      `could not make private (0600 files, 0700 folders): ${list.join(", ")}`,
    );
  }
}
