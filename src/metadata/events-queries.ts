import { type Kysely, type SelectQueryBuilder, sql, type Transaction } from "kysely";
import { isPostgres } from "./dialect.js";
import type { Database, EventDeliveriesTable, EventEndpointsTable } from "./schema.js";

/** The advisory lock that orders outbox inserts on PostgreSQL (an arbitrary constant of Berth's own). */
const OUTBOX_LOCK_KEY = 0x6265727468_01n;

/**
 * The queries of the notification outbox (issue 14). The domain (src/registry/events.ts) decides;
 * these only read and write rows. Writes that must agree with a delivery (cursor, health, the log
 * line) happen in one transaction and only while the caller holds the endpoint's lease.
 */

type Q = Kysely<Database> | Transaction<Database>;

export interface NewEvent {
  eventId: string;
  createdAt: number;
  action: string;
  repository: string;
  body: string;
}

export interface EventRow {
  id: number;
  event_id: string;
  created_at: number;
  action: string;
  repository: string;
  body: string;
}

export type EndpointRow = EventEndpointsTable;
export type DeliveryRow = Omit<EventDeliveriesTable, "id"> & { id: number };

/**
 * Appends events to the outbox, inside the transaction of the change they describe. Endpoint cursors
 * assume that ids become visible in increasing order. SQLite's single writer makes that so; on PostgreSQL
 * ids are drawn at insert time and transactions may commit in another order, so the inserting transaction
 * first takes one transaction-scoped advisory lock: writers that record events take their ids and commit
 * one after the other (the lock is held only from the insert, the last statement of a change, to commit).
 */
export async function insertEvents(q: Q, events: NewEvent[]): Promise<void> {
  if (events.length === 0) return;
  if (isPostgres(q)) await sql`select pg_advisory_xact_lock(${OUTBOX_LOCK_KEY})`.execute(q);
  await q
    .insertInto("events")
    .values(
      events.map((e) => ({
        event_id: e.eventId,
        created_at: e.createdAt,
        action: e.action,
        repository: e.repository,
        body: e.body,
      })),
    )
    .execute();
}

export async function lastEventId(q: Q): Promise<number> {
  const row = await q
    .selectFrom("events")
    .select((eb) => eb.fn.max("id").as("max"))
    .executeTakeFirst();
  return Number(row?.max ?? 0);
}

/** Adds a row for each endpoint not seen before; a new endpoint starts after the newest event. */
export async function ensureEndpoints(
  db: Kysely<Database>,
  names: string[],
  now = Date.now(),
): Promise<void> {
  if (names.length === 0) return;
  await db.transaction().execute(async (trx) => {
    const existing = new Set(
      (await trx.selectFrom("event_endpoints").select("name").where("name", "in", names).execute()).map(
        (r) => r.name,
      ),
    );
    const missing = names.filter((n) => !existing.has(n));
    if (missing.length === 0) return;
    const cursor = await lastEventId(trx);
    await trx
      .insertInto("event_endpoints")
      .values(
        missing.map((name) => ({
          name,
          cursor,
          created_at: now,
          next_attempt_at: 0,
          delivered: 0,
          failures: 0,
        })),
      )
      .onConflict((oc) => oc.column("name").doNothing())
      .execute();
  });
}

export async function endpointRow(q: Q, name: string): Promise<EndpointRow | null> {
  const row = await q.selectFrom("event_endpoints").selectAll().where("name", "=", name).executeTakeFirst();
  return row ? normalizeEndpoint(row) : null;
}

export async function endpointRows(q: Q): Promise<EndpointRow[]> {
  const rows = await q.selectFrom("event_endpoints").selectAll().orderBy("name").execute();
  return rows.map(normalizeEndpoint);
}

function normalizeEndpoint(row: EndpointRow): EndpointRow {
  const n = (v: number | null) => (v === null ? null : Number(v));
  return {
    ...row,
    cursor: Number(row.cursor),
    failures: Number(row.failures),
    next_attempt_at: Number(row.next_attempt_at),
    failing_since: n(row.failing_since),
    last_attempt_at: n(row.last_attempt_at),
    last_success_at: n(row.last_success_at),
    delivered: Number(row.delivered),
    lease_until: n(row.lease_until),
    created_at: Number(row.created_at),
  };
}

/**
 * Takes or renews the lease on an endpoint: when free, expired, already ours, or held by `stale`
 * (a holder known to be dead). Returns whether this process now holds it.
 */
export async function leaseEndpoint(
  db: Kysely<Database>,
  name: string,
  holder: string,
  ttlMs: number,
  stale: string | null,
  now = Date.now(),
): Promise<boolean> {
  const result = await db
    .updateTable("event_endpoints")
    .set({ lease_holder: holder, lease_until: now + ttlMs })
    .where("name", "=", name)
    .where((eb) => {
      const free = [
        eb("lease_holder", "is", null),
        eb("lease_holder", "=", holder),
        eb("lease_until", "is", null),
        eb("lease_until", "<", now),
      ];
      if (stale !== null) free.push(eb("lease_holder", "=", stale));
      return eb.or(free);
    })
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

export async function releaseEndpoint(db: Kysely<Database>, name: string, holder: string): Promise<void> {
  await db
    .updateTable("event_endpoints")
    .set({ lease_holder: null, lease_until: null })
    .where("name", "=", name)
    .where("lease_holder", "=", holder)
    .execute();
}

/** The events after `cursor`, oldest first. */
export async function eventsAfter(q: Q, cursor: number, limit: number): Promise<EventRow[]> {
  const rows = await q
    .selectFrom("events")
    .selectAll()
    .where("id", ">", cursor)
    .orderBy("id")
    .limit(limit)
    .execute();
  return rows.map((r) => ({ ...r, id: Number(r.id), created_at: Number(r.created_at) }));
}

export interface Outcome {
  name: string;
  holder: string;
  /** The cursor the delivery started from: if it moved meanwhile (a redelivery), nothing is recorded. */
  from: number;
  /** Where the cursor moves to (unchanged on failure). */
  cursor: number;
  delivered: number;
  failures: number;
  nextAttemptAt: number;
  failingSince: number | null;
  error: string | null;
  success: boolean;
  attempt: Omit<DeliveryRow, "id" | "endpoint"> | null;
  now: number;
}

/** Records what a delivery came to, only while `holder` still holds the lease. False when it does not. */
export async function recordOutcome(db: Kysely<Database>, o: Outcome): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const result = await trx
      .updateTable("event_endpoints")
      .set({
        cursor: o.cursor,
        delivered: sql<number>`delivered + ${o.delivered}`,
        failures: o.failures,
        next_attempt_at: o.nextAttemptAt,
        failing_since: o.failingSince,
        ...(o.attempt ? { last_attempt_at: o.now } : {}),
        ...(o.success ? { last_success_at: o.now, last_error: null } : { last_error: o.error }),
      })
      .where("name", "=", o.name)
      .where("lease_holder", "=", o.holder)
      .where("cursor", "=", o.from)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) === 0) return false;
    if (o.attempt)
      await trx
        .insertInto("event_deliveries")
        .values({ endpoint: o.name, ...o.attempt })
        .execute();
    return true;
  });
}

/** Moves an endpoint's cursor back so that every event after `cursor` is sent again; clears its backoff. */
export async function rewindEndpoint(db: Kysely<Database>, name: string, cursor: number): Promise<boolean> {
  const result = await db
    .updateTable("event_endpoints")
    .set({ cursor, next_attempt_at: 0, failures: 0 })
    .where("name", "=", name)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/** The id of the oldest kept event at or after `at` (ms), or of the event with stable id `eventId`. */
export async function findEvent(q: Q, by: { at?: number; eventId?: string }): Promise<number | null> {
  let query = q.selectFrom("events").select("id").orderBy("id").limit(1);
  if (by.at !== undefined) query = query.where("created_at", ">=", by.at);
  if (by.eventId !== undefined) query = query.where("event_id", "=", by.eventId);
  const row = await query.executeTakeFirst();
  return row ? Number(row.id) : null;
}

/** Events after `cursor` (before the endpoint's filters). */
export async function backlog(q: Q, cursor: number): Promise<number> {
  const row = await q
    .selectFrom("events")
    .select((eb) => eb.fn.countAll().as("n"))
    .where("id", ">", cursor)
    .executeTakeFirst();
  return Number(row?.n ?? 0);
}

export async function recentDeliveries(
  q: Q,
  options: { endpoint?: string; failuresOnly?: boolean; limit: number },
): Promise<DeliveryRow[]> {
  let query = q.selectFrom("event_deliveries").selectAll().orderBy("id", "desc").limit(options.limit);
  if (options.endpoint !== undefined) query = query.where("endpoint", "=", options.endpoint);
  if (options.failuresOnly) {
    query = query.where((eb) =>
      eb.or([eb("status", "is", null), eb("status", "<", 200), eb("status", ">=", 400)]),
    );
  }
  const rows = await query.execute();
  return rows.map((r) => ({
    ...r,
    id: Number(r.id),
    first_event: Number(r.first_event),
    last_event: Number(r.last_event),
    attempted_at: Number(r.attempted_at),
  }));
}

export async function recentEvents(q: Q, limit: number): Promise<EventRow[]> {
  const rows = await q.selectFrom("events").selectAll().orderBy("id", "desc").limit(limit).execute();
  return rows.map((r) => ({ ...r, id: Number(r.id), created_at: Number(r.created_at) }));
}

/**
 * Drops events older than `before` that every endpoint in `endpoints` has passed (never one still to
 * be delivered), and delivery log lines older than `before`.
 */
export async function pruneEvents(db: Kysely<Database>, endpoints: string[], before: number): Promise<void> {
  let upTo = Number.MAX_SAFE_INTEGER;
  if (endpoints.length > 0) {
    const row = await db
      .selectFrom("event_endpoints")
      .select((eb) => eb.fn.min("cursor").as("min"))
      .where("name", "in", endpoints)
      .executeTakeFirst();
    upTo = Number(row?.min ?? 0);
  }
  // In batches, so that the write lock is never held long (pushes wait on it).
  await pruneInBatches(db, "events", (q) => q.where("created_at", "<", before).where("id", "<=", upTo));
  await pruneInBatches(db, "event_deliveries", (q) => q.where("attempted_at", "<", before));
}

const PRUNE_BATCH = 2_000;

/** Deletes the rows of `table` that `where` selects, PRUNE_BATCH at a time in id order. */
async function pruneInBatches<T extends "events" | "event_deliveries">(
  db: Kysely<Database>,
  table: T,
  where: (
    q: SelectQueryBuilder<Database, T, { id: number }>,
  ) => SelectQueryBuilder<Database, T, { id: number }>,
): Promise<void> {
  for (;;) {
    const query = db.selectFrom(table as "events").select("id") as unknown as SelectQueryBuilder<
      Database,
      T,
      { id: number }
    >;
    const batch = await where(query).orderBy("id").limit(PRUNE_BATCH).execute();
    if (batch.length === 0) break;
    await db
      .deleteFrom(table as "events")
      .where(
        "id",
        "in",
        batch.map((r) => r.id),
      )
      .execute();
    if (batch.length < PRUNE_BATCH) break;
  }
}

/** Appends events in a transaction of their own (pull events, which describe no change of rows). */
export async function appendEvents(db: Kysely<Database>, events: NewEvent[]): Promise<void> {
  // A transaction of its own: on PostgreSQL the outbox's ordering lock lasts until commit.
  await db.transaction().execute((trx) => insertEvents(trx, events));
}

/** The queries above, as the store's `events` facet binds them (src/metadata/store.ts). */
export const eventQueries = {
  appendEvents,
  lastEventId,
  ensureEndpoints,
  endpointRow,
  endpointRows,
  leaseEndpoint,
  releaseEndpoint,
  eventsAfter,
  recordOutcome,
  rewindEndpoint,
  findEvent,
  backlog,
  recentDeliveries,
  recentEvents,
  pruneEvents,
};

/** The outbox as the domain sees it: the queries above with the database given (declared in facets.ts). */
export type { EventStore } from "./facets.js";
