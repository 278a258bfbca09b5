import { type Kysely, PostgresAdapter, sql, type Transaction } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: any database shape
type Q = Kysely<any> | Transaction<any>;

/** Whether `q` (a database or a transaction) talks to PostgreSQL. */
export function isPostgres(q: Q): boolean {
  return q.getExecutor().adapter instanceof PostgresAdapter;
}

/**
 * PostgreSQL only: takes transaction-scoped advisory locks keyed by digest, in a fixed order (so two
 * transactions locking overlapping sets cannot deadlock). Used where a row may not exist yet, so
 * that there is no row to lock: a blob being recorded against the collector's orphan-file sweep.
 * SQLite needs none: its writers are serialized by the database lock.
 */
export async function lockDigests(q: Q, digests: Iterable<string>): Promise<void> {
  if (!isPostgres(q)) return;
  for (const digest of [...new Set(digests)].sort()) {
    await sql`select pg_advisory_xact_lock(hashtextextended(${digest}, 0))`.execute(q);
  }
}

/** Errors that a database connection raised (a socket reset looks like a client's otherwise). */
const connectionErrors = new WeakSet<object>();

/** Marks `err` as raised by a database connection (src/metadata/db.ts, on every pooled client). */
export function markConnectionError(err: unknown): void {
  if (err && typeof err === "object") connectionErrors.add(err);
}

/**
 * When `err` says the metadata database cannot answer right now (PostgreSQL down or restarting, a
 * connection cut, the pool exhausted, a serialization failure or deadlock worth retrying), a short
 * explanation and how many seconds to wait; null for any other error. Nothing was committed.
 */
export function databaseUnavailable(err: unknown): { message: string; retryAfter: number } | null {
  if (!err || typeof err !== "object") return null;
  const e = err as { code?: unknown; message?: unknown; syscall?: unknown };
  const code = typeof e.code === "string" ? e.code : "";
  const message = typeof e.message === "string" ? e.message : "";
  if (connectionErrors.has(err))
    return { message: "the metadata database is unavailable (restarting or unreachable)", retryAfter: 5 };
  if (code === "40001" || code === "40P01")
    return { message: "the metadata database aborted a conflicting transaction; retry", retryAfter: 1 };
  // SQLSTATE classes 08 (connection exception) and 57P0x (server shutting down or starting), 53300.
  if (/^08...$/.test(code) || /^57P0[1-3]$/.test(code) || code === "53300")
    return { message: "the metadata database is unavailable (restarting or unreachable)", retryAfter: 5 };
  if (
    (code === "ECONNREFUSED" && e.syscall === "connect") ||
    /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Connection terminated due to connection timeout/.test(
      message,
    )
  )
    return { message: "the metadata database is unavailable (restarting or unreachable)", retryAfter: 5 };
  return null;
}
