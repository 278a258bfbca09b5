import { maskUrlPassword } from "../config/provenance.js";
import type { Config } from "../config/schema.js";
import type { EventStore } from "../metadata/events-queries.js";
import { RegistryError } from "./errors.js";
import type { DeliveryView, EndpointStatus, EventsStatus } from "./event-view.js";

export type { DeliveryView, EndpointStatus, EventsStatus };

/**
 * What `berth events` and GET /api/v1/events show (issue 14): each configured endpoint's state,
 * backlog and recent deliveries; and redelivery, which moves an endpoint's cursor back so that the
 * dispatcher sends the kept events from there again, in order, with their original ids.
 */

const iso = (ms: number | null) => (ms === null || ms === 0 ? null : new Date(ms).toISOString());

export async function eventsStatus(
  outbox: EventStore,
  config: Config,
  options: { limit?: number; endpoint?: string; failuresOnly?: boolean } = {},
): Promise<EventsStatus> {
  const rows = new Map((await outbox.endpointRows()).map((r) => [r.name, r]));
  const now = Date.now();
  const endpoints: EndpointStatus[] = [];
  for (const e of config.notifications.endpoints) {
    if (options.endpoint !== undefined && e.name !== options.endpoint) continue;
    const row = rows.get(e.name);
    endpoints.push({
      name: e.name,
      url: maskUrlPassword(e.url),
      disabled: e.disabled,
      format: e.format,
      cursor: row?.cursor ?? 0,
      backlog: row ? await outbox.backlog(row.cursor) : 0,
      delivered: row?.delivered ?? 0,
      failures: row?.failures ?? 0,
      failing: row?.failing_since != null,
      failingSince: iso(row?.failing_since ?? null),
      lastError: row?.last_error ?? null,
      lastAttemptAt: iso(row?.last_attempt_at ?? null),
      lastSuccessAt: iso(row?.last_success_at ?? null),
      nextAttemptAt: row && row.next_attempt_at > now ? iso(row.next_attempt_at) : null,
      deliveredBy: row?.lease_holder && (row.lease_until ?? 0) >= now ? row.lease_holder : null,
    });
  }
  if (options.endpoint !== undefined && endpoints.length === 0) throw unknownEndpoint(options.endpoint);
  const deliveries = await outbox.recentDeliveries({
    endpoint: options.endpoint,
    failuresOnly: options.failuresOnly,
    limit: options.limit ?? 20,
  });
  return {
    lastEvent: await outbox.lastEventId(),
    endpoints,
    deliveries: deliveries.map((d) => ({
      id: d.id,
      endpoint: d.endpoint,
      firstEvent: d.first_event,
      lastEvent: d.last_event,
      events: d.events,
      status: d.status,
      ok: d.status !== null && d.status >= 200 && d.status < 400,
      error: d.error,
      at: new Date(d.attempted_at).toISOString(),
      ms: d.duration_ms,
    })),
  };
}

export type RedeliverFrom = { event: string } | { since: number } | { all: true };

/**
 * Sends an endpoint's kept events again from an event (its stable id or its number), from a time,
 * or all of them. Returns how many events are now waiting for it.
 */
export async function redeliver(
  outbox: EventStore,
  config: Config,
  endpoint: string,
  from: RedeliverFrom,
): Promise<{ endpoint: string; from: number; backlog: number }> {
  if (!config.notifications.endpoints.some((e) => e.name === endpoint)) throw unknownEndpoint(endpoint);
  let first: number | null;
  if ("all" in from) first = await outbox.findEvent({});
  else if ("since" in from) first = await outbox.findEvent({ at: from.since });
  else if (/^\d+$/.test(from.event)) first = Number(from.event);
  else first = await outbox.findEvent({ eventId: from.event });
  if (first === null) {
    throw new RegistryError("NOT_FOUND", "no kept event matches; nothing to redeliver", { from });
  }
  if (!(await outbox.rewindEndpoint(endpoint, first - 1))) {
    throw new RegistryError(
      "NOT_FOUND",
      "the endpoint has no delivery state yet (start berth serve with it configured first)",
      { endpoint },
    );
  }
  return { endpoint, from: first, backlog: await outbox.backlog(first - 1) };
}

function unknownEndpoint(name: string): RegistryError {
  return new RegistryError("NOT_FOUND", `no notification endpoint named "${name}" is configured`, {
    endpoint: name,
  });
}
