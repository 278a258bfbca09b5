import { readFileSync } from "node:fs";
import path from "node:path";
import type { ConnectionOptions } from "node:tls";
import type pg from "pg";
import type { DatabaseConfig } from "../config/sections/database.js";
import type { DatabaseTarget } from "./db.js";

/** Where the embedded SQLite database lives inside the data directory. */
export function sqlitePath(dataDir: string): string {
  return path.join(dataDir, "berth", "berth.db");
}

/**
 * Turns the `database` section into connection settings: SQLite when it names no PostgreSQL server,
 * otherwise a node-postgres pool configuration. `url` and the separate keys combine; a key set
 * beside the URL wins over the URL's part.
 */
export function databaseTarget(database: DatabaseConfig): DatabaseTarget {
  if (!usesPostgres(database)) return { kind: "sqlite" };
  const pool: pg.PoolConfig = {};
  if (database.url) pool.connectionString = database.url;
  if (database.host !== undefined) pool.host = database.host;
  if (database.port !== undefined) pool.port = database.port;
  if (database.user !== undefined) pool.user = database.user;
  if (database.password !== undefined) pool.password = database.password;
  if (database.dbname !== undefined) pool.database = database.dbname;
  const ssl = sslOptions(database);
  if (ssl !== undefined) pool.ssl = ssl;
  if (database.connecttimeout !== undefined) pool.connectionTimeoutMillis = database.connecttimeout;
  pool.max = database.pool.maxopen ?? 10;
  if (database.pool.maxlifetime !== undefined)
    pool.maxLifetimeSeconds = Math.max(1, Math.round(database.pool.maxlifetime / 1000));
  if (database.pool.maxidletime !== undefined) pool.idleTimeoutMillis = database.pool.maxidletime;
  pool.application_name = "berth";
  return { kind: "postgres", pool };
}

/**
 * libpq's sslmode in node-postgres terms. node-postgres cannot try TLS and fall back, so `allow`
 * and `prefer` connect without TLS, as `disable` does. Undefined leaves the URL's own settings.
 */
function sslOptions(database: DatabaseConfig): false | ConnectionOptions | undefined {
  const files: ConnectionOptions = {};
  if (database.sslrootcert) files.ca = readFileSync(database.sslrootcert, "utf8");
  if (database.sslcert) files.cert = readFileSync(database.sslcert, "utf8");
  if (database.sslkey) files.key = readFileSync(database.sslkey, "utf8");
  switch (database.sslmode) {
    case undefined:
      return Object.keys(files).length > 0 ? { ...files, rejectUnauthorized: true } : undefined;
    case "disable":
    case "allow":
    case "prefer":
      return false;
    case "require":
      return { ...files, rejectUnauthorized: false };
    case "verify-ca":
      // The chain is checked against sslrootcert; the host name is not.
      return { ...files, rejectUnauthorized: true, checkServerIdentity: () => undefined };
    case "verify-full":
      return { ...files, rejectUnauthorized: true };
  }
}

/** A one-line description without secrets, for logs: `postgresql host:port/db` or `sqlite file`. */
export function describeTarget(target: DatabaseTarget, dataDir: string): string {
  if (target.kind === "sqlite") return `sqlite ${sqlitePath(dataDir)}`;
  const p = target.pool;
  let host = p.host;
  let port = p.port;
  let db = p.database;
  if (p.connectionString) {
    try {
      const u = new URL(p.connectionString);
      host ??= u.hostname || undefined;
      port ??= u.port ? Number(u.port) : undefined;
      db ??= u.pathname.replace(/^\//, "") || undefined;
    } catch {}
  }
  return `postgresql ${host ?? "localhost"}:${port ?? 5432}/${db ?? "(default)"}`;
}

/** Whether the configuration puts the metadata on PostgreSQL. */
export function usesPostgres(database: DatabaseConfig): boolean {
  if (database.enabled === false) return false;
  return database.enabled === true || database.url !== undefined;
}
