/**
 * What Berth does with Distribution (registry:2) configuration it does not implement.
 *
 * A registry:2 config.yml or set of REGISTRY_* variables must start Berth or stop it with a clear
 * message: never be ignored silently. Keys are dotted paths; `*` stands for a list index or a
 * mapping key. An entry covers everything below it.
 */
export interface CompatEntry {
  /** Said at start-up next to the key's name. */
  note: string;
  /**
   * Refuse to start: running without the setting would be unsafe or would put data in the wrong
   * place (an authentication method, a storage driver, TLS the clients expect).
   */
  fatal?: boolean;
}

/** Distribution keys that Berth's schema does not have. Removed from the configuration after the warning. */
export const DISTRIBUTION_ONLY: Record<string, CompatEntry> = {
  "log.hooks": { note: "log hooks (mail on error) are not implemented; ignored" },
  "log.reportcaller": { note: "not implemented; ignored" },
  "storage.filesystem.maxthreads": { note: "Berth does not limit filesystem threads; ignored" },
  "storage.cache.blobdescriptorsize": { note: "Berth keeps blob descriptors in its database; ignored" },
  "storage.tag": { note: "not needed: tags live in Berth's database; ignored" },
  "storage.s3.v4auth": { note: "Berth always signs with AWS Signature Version 4; ignored" },
  "storage.gcs": { note: "the gcs storage driver is not implemented", fatal: true },
  "storage.azure": { note: "the azure storage driver is not implemented", fatal: true },
  "storage.swift": { note: "the swift storage driver is not implemented", fatal: true },
  "storage.oss": { note: "the oss storage driver is not implemented", fatal: true },
  "storage.inmemory": {
    note: "the inmemory storage driver is not implemented; use storage.filesystem with a temporary directory",
    fatal: true,
  },
  "auth.silly": {
    note: "the silly authentication method is not implemented; refusing to start without the authentication you asked for",
    fatal: true,
  },
  "auth.token.autoredirect": { note: "not implemented; ignored" },
  "auth.token.autoredirectpath": { note: "not implemented; ignored" },
  "auth.token.signingalgorithms": { note: "not implemented; the default algorithms are accepted" },
  "auth.token.jwks": {
    note: "JWKS files are not implemented; use auth.token.rootcertbundle",
    fatal: true,
  },
  middleware: {
    note: "registry, repository and storage middleware (cloudfront, redirect, ...) are not implemented; ignored",
  },
  reporting: { note: "bugsnag and newrelic reporting are not implemented; ignored" },
  "http.tls.clientauth": {
    note: "client certificate policies are not implemented; refusing to start without the client authentication you asked for",
    fatal: true,
  },
  "http.tls.ciphersuites": { note: "not implemented; Node's default cipher suites are used" },
  "http.http2": { note: "not implemented; Berth serves HTTP/1.1 (put a reverse proxy in front for HTTP/2)" },
  "http.h2c": { note: "not implemented; Berth serves HTTP/1.1" },
  validation: { note: "manifest URL and platform validation is not implemented; ignored" },
  compatibility: { note: "schema1 manifests are not supported; ignored" },
  policy: { note: "repository class policies are not implemented; ignored" },
  catalog: { note: "catalog.maxentries is not implemented; the catalog is paginated with n and last" },
};

/**
 * Keys Berth's schema accepts (so that their values are checked) but does not act on yet.
 * A warning names each one that is set, by the file, the environment or a flag.
 */
export const NOT_IMPLEMENTED: Record<string, string> = {
  "proxy.exec":
    "credential helpers are not implemented; use proxy.username with proxy.password or proxy.passwordfile",
  health:
    "Distribution's periodic health checks are not implemented; Berth's /readyz checks storage and the database on every call",
  redis: "Berth keeps shared state in its database; redis is not used",
  "storage.cache": "Berth keeps blob descriptors in its database; storage.cache is not used",
  "http.debug.addr":
    "the debug server (pprof, expvar) is not implemented; only Prometheus metrics are served there when http.debug.prometheus.enabled is true",
};

/** Distribution's spellings that Berth maps onto its own. */
export const VALUE_ALIASES: Record<string, Record<string, string>> = {
  "log.level": { warning: "warn", panic: "fatal" },
};

/** Storage driver names (the one key of `storage` that names the driver). */
export const STORAGE_DRIVERS = ["filesystem", "s3", "gcs", "azure", "swift", "oss", "inmemory"];
/** Authentication methods (the one key of `auth` that names the method). */
export const AUTH_METHODS = ["htpasswd", "token", "silly"];

/** Finds the entry covering a path (pattern with `*` for indices and mapping keys). */
export function lookupCompat<T>(
  table: Record<string, T>,
  pattern: string[],
): { key: string; entry: T } | undefined {
  for (let n = pattern.length; n > 0; n--) {
    const key = pattern.slice(0, n).join(".");
    const entry = table[key];
    if (entry !== undefined) return { key, entry };
  }
  return undefined;
}
