/**
 * The shapes of `berth events --json` and GET /api/v1/events (issue 14). No imports: the web UI, a
 * separate browser build, reads this file too.
 */

export interface EndpointStatus {
  name: string;
  /** The URL with any password in it masked; headers and secrets are never shown. */
  url: string;
  disabled: boolean;
  format: string;
  /** The last event id passed (delivered or filtered out). */
  cursor: number;
  /** Events after the cursor, before the endpoint's filters. */
  backlog: number;
  delivered: number;
  /** Failed attempts since the last success. */
  failures: number;
  /** Whether the endpoint has failed `threshold` times in a row. */
  failing: boolean;
  failingSince: string | null;
  lastError: string | null;
  lastAttemptAt: string | null;
  lastSuccessAt: string | null;
  nextAttemptAt: string | null;
  /** The process delivering to it (`host:pid:…`) while its lease lasts. */
  deliveredBy: string | null;
}

export interface DeliveryView {
  id: number;
  endpoint: string;
  firstEvent: number;
  lastEvent: number;
  events: number;
  status: number | null;
  ok: boolean;
  error: string | null;
  at: string;
  ms: number;
}

export interface EventsStatus {
  lastEvent: number;
  endpoints: EndpointStatus[];
  deliveries: DeliveryView[];
}
