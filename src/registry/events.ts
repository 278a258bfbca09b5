import { randomUUID } from "node:crypto";
import os from "node:os";
import type { Config } from "../config/schema.js";
import type { EventStore, NewEvent } from "../metadata/events-queries.js";
import { patternRegex } from "./retention.js";

/**
 * Notifications (issue 14): the events of Distribution's webhook format, recorded in an outbox table
 * in the same transaction as the change they describe, and delivered from there by the dispatcher
 * (src/registry/event-dispatch.ts). Nothing here knows HTTP: the request's facts arrive as a small
 * RequestInfo built by src/http.
 */

export type EventAction = "push" | "pull" | "mount" | "delete";

/** Distribution's media type for the envelope (registry:2 2.8). */
export const EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json";
/** What registry:2 puts in target.mediaType for a blob (layer or config) pushed or pulled. */
export const BLOB_MEDIA_TYPE = "application/octet-stream";

/** Who asked and how: what the HTTP layer knows about a request, for the event's `request` and `actor`. */
export interface RequestInfo {
  id: string;
  addr: string;
  host: string;
  method: string;
  useragent: string;
  /** The authenticated user, if any. */
  actor?: string;
  /** Where `/v2/...` URLs start for this client ("https://registry.example.com"). */
  baseUrl: string;
}

export interface EventTarget {
  mediaType?: string;
  digest?: string;
  size?: number;
  repository: string;
  tag?: string;
  references?: { mediaType: string; digest: string; size: number }[];
  fromRepository?: string;
}

/** One event exactly as Distribution serializes it (empty fields left out). */
export interface DistributionEvent {
  id: string;
  timestamp: string;
  action: EventAction;
  target: {
    mediaType?: string;
    size?: number;
    digest?: string;
    length?: number;
    repository: string;
    fromRepository?: string;
    url?: string;
    tag?: string;
    references?: { mediaType: string; digest: string; size: number }[];
  };
  request: { id: string; addr: string; host: string; method: string; useragent: string };
  actor: { name?: string };
  source: { addr: string; instanceID: string };
}

export type EndpointConfig = Config["notifications"]["endpoints"][number];

/** An endpoint's filters, compiled. */
export interface EndpointFilter {
  name: string;
  ignoredMediaTypes: Set<string>;
  ignoredActions: Set<string>;
  actions: Set<string> | null;
  repositories: RegExp[] | null;
}

export function compileFilter(e: EndpointConfig): EndpointFilter {
  return {
    name: e.name,
    ignoredMediaTypes: new Set([...(e.ignoredmediatypes ?? []), ...(e.ignore?.mediatypes ?? [])]),
    ignoredActions: new Set(e.ignore?.actions ?? []),
    actions: e.actions ? new Set(e.actions) : null,
    repositories: e.repositories ? e.repositories.map(patternRegex) : null,
  };
}

/** Whether an endpoint wants an event (registry:2's ignore lists, then Berth's actions and repositories). */
export function accepts(
  f: EndpointFilter,
  e: { action: string; repository: string; mediaType?: string | undefined },
): boolean {
  if (f.ignoredActions.has(e.action)) return false;
  if (e.mediaType !== undefined && f.ignoredMediaTypes.has(e.mediaType)) return false;
  if (f.actions && !f.actions.has(e.action)) return false;
  if (f.repositories && !f.repositories.some((re) => re.test(e.repository))) return false;
  return true;
}

/** The enabled endpoints of a configuration. */
export function enabledEndpoints(config: Config): EndpointConfig[] {
  return config.notifications.endpoints.filter((e) => !e.disabled);
}

const PULL_FLUSH_MS = 1_000;
/** A batch this large is written at once rather than at the next second. */
const PULL_FLUSH_AT = 1_000;
/** Pull events waiting in memory while the database does not take them; beyond this they are dropped. */
const PULL_PENDING_MAX = 100_000;

/**
 * Records events. `rows` builds what the metadata store appends in the transaction of the change: one
 * small INSERT, or nothing at all when no enabled endpoint would take the event. Pull events are batched (like pull times for
 * retention) so that a GET never waits on a write. `onRecorded` wakes this process's dispatcher.
 */
export class EventRecorder {
  readonly instanceId = randomUUID();
  private readonly filters: EndpointFilter[];
  private readonly sourceAddr: string;
  private pulls: NewEvent[] = [];
  private pullTimer: NodeJS.Timeout | null = null;
  private readonly listeners = new Set<() => void>();

  constructor(
    private readonly outbox: Pick<EventStore, "appendEvents"> | null,
    endpoints: EndpointConfig[],
    private readonly options: { includeReferences: boolean; pull: boolean; listenPort: string },
  ) {
    this.filters = endpoints.map(compileFilter);
    this.sourceAddr = `${os.hostname()}:${options.listenPort}`;
  }

  /** A recorder that records nothing (no notifications configured, or a command that does not push). */
  static disabled(): EventRecorder {
    return new EventRecorder(null, [], { includeReferences: false, pull: false, listenPort: "" });
  }

  static fromConfig(outbox: Pick<EventStore, "appendEvents">, config: Config): EventRecorder {
    const port = /:(\d+)$/.exec(config.http.addr)?.[1] ?? "";
    return new EventRecorder(outbox, enabledEndpoints(config), {
      includeReferences: config.notifications.events.includereferences,
      pull: config.notifications.events.pull,
      listenPort: port,
    });
  }

  get active(): boolean {
    return this.outbox !== null && this.filters.length > 0;
  }

  get includeReferences(): boolean {
    return this.options.includeReferences;
  }

  /** Called after events were recorded (and, for `record`, once the caller's transaction is likely done). */
  onRecorded(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private wanted(action: EventAction, target: EventTarget): boolean {
    return this.filters.some((f) =>
      accepts(f, { action, repository: target.repository, mediaType: target.mediaType }),
    );
  }

  /** Builds the event as Distribution would send it. */
  build(action: EventAction, target: EventTarget, request: RequestInfo | undefined): DistributionEvent {
    const t: DistributionEvent["target"] = { repository: target.repository };
    if (target.mediaType !== undefined) t.mediaType = target.mediaType;
    if (target.size !== undefined) {
      t.size = target.size;
      t.length = target.size;
    }
    if (target.digest !== undefined) t.digest = target.digest;
    if (target.fromRepository !== undefined) t.fromRepository = target.fromRepository;
    if (request && target.digest !== undefined) {
      const kind = target.mediaType === BLOB_MEDIA_TYPE ? "blobs" : "manifests";
      t.url = `${request.baseUrl}/v2/${target.repository}/${kind}/${target.digest}`;
    }
    if (target.tag !== undefined) t.tag = target.tag;
    if (target.references && this.options.includeReferences) t.references = target.references;
    return {
      id: randomUUID(),
      timestamp: new Date().toISOString(),
      action,
      target: t,
      request: {
        id: request?.id ?? "",
        addr: request?.addr ?? "",
        host: request?.host ?? "",
        method: request?.method ?? "",
        useragent: request?.useragent ?? "",
      },
      actor: request?.actor ? { name: request.actor } : {},
      source: { addr: this.sourceAddr, instanceID: this.instanceId },
    };
  }

  private row(event: DistributionEvent): NewEvent {
    return {
      eventId: event.id,
      createdAt: Date.now(),
      action: event.action,
      repository: event.target.repository,
      body: JSON.stringify(event),
    };
  }

  /**
   * The outbox rows of events, for the metadata store to append in the transaction that makes the change
   * they describe (none when no enabled endpoint would take them). Call `recorded` once it committed.
   */
  rows(request: RequestInfo | undefined, action: EventAction, ...targets: EventTarget[]): NewEvent[] {
    if (!this.active) return [];
    return targets.filter((t) => this.wanted(action, t)).map((t) => this.row(this.build(action, t, request)));
  }

  /** After a change that appended `rows` committed: wakes the dispatcher. */
  recorded(rows: NewEvent[]): void {
    if (rows.length > 0) setImmediate(() => this.notify());
  }

  /** A pull (manifest or blob GET): recorded within a second, in a batch, never on the request's path. */
  notePull(request: RequestInfo | undefined, target: EventTarget): void {
    if (!this.active || !this.options.pull || !this.wanted("pull", target)) return;
    if (this.pulls.length >= PULL_PENDING_MAX) return;
    this.pulls.push(this.row(this.build("pull", target, request)));
    if (this.pulls.length === PULL_FLUSH_AT) {
      void this.flush();
      return;
    }
    if (this.pullTimer) return;
    this.pullTimer = setTimeout(() => {
      this.pullTimer = null;
      void this.flush();
    }, PULL_FLUSH_MS);
    this.pullTimer.unref();
  }

  /** Writes the pull events noted so far (also on shutdown). */
  async flush(): Promise<void> {
    if (this.pulls.length === 0 || !this.outbox) return;
    const batch = this.pulls;
    this.pulls = [];
    try {
      // In slices: SQLite takes at most 32,766 parameters per statement.
      for (let i = 0; i < batch.length; i += 2_000) {
        const slice = batch.slice(i, i + 2_000);
        await this.outbox.appendEvents(slice);
      }
      this.notify();
    } catch {
      // A pull event is not a change: a batch the database refused is dropped rather than retried forever.
    }
  }

  private notify(): void {
    for (const listener of this.listeners) listener();
  }
}
