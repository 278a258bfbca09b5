// The outbox queries against a real SQLite database in a temporary directory.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type MetadataDb, openSqlite } from "../../src/metadata/db.js";
import {
  endpointRow,
  ensureEndpoints,
  eventsAfter,
  insertEvents,
  leaseEndpoint,
  pruneEvents,
  recordOutcome,
  rewindEndpoint,
} from "../../src/metadata/events-queries.js";
import { SqlMetadataStore } from "../../src/metadata/store.js";
import { EventRecorder } from "../../src/registry/events.js";

let dir: string;
let m: MetadataDb;
beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "berth-outbox-"));
  m = await openSqlite(dir);
});
afterEach(async () => {
  await m.close();
  rmSync(dir, { recursive: true, force: true });
});

const event = (i: number, createdAt = Date.now()) => ({
  eventId: `e${i}`,
  createdAt,
  action: "push",
  repository: "r",
  body: JSON.stringify({ id: `e${i}` }),
});

const outcome = (name: string, holder: string, from: number, cursor: number) => ({
  name,
  holder,
  from,
  cursor,
  delivered: cursor - from,
  failures: 0,
  nextAttemptAt: 0,
  failingSince: null,
  error: null,
  success: true,
  attempt: null,
  now: Date.now(),
});

describe("the outbox", () => {
  it("starts a new endpoint after the newest event and keeps an existing endpoint's cursor", async () => {
    await insertEvents(m.db, [event(1), event(2)]);
    await ensureEndpoints(m.db, ["a"]);
    expect((await endpointRow(m.db, "a"))?.cursor).toBe(2);
    await insertEvents(m.db, [event(3)]);
    await ensureEndpoints(m.db, ["a", "b"]);
    expect((await endpointRow(m.db, "a"))?.cursor).toBe(2);
    expect((await endpointRow(m.db, "b"))?.cursor).toBe(3);
    expect((await eventsAfter(m.db, 2, 10)).map((e) => e.event_id)).toEqual(["e3"]);
  });

  it("lets one holder at a time move an endpoint's cursor, and a redelivery wins over a delivery in flight", async () => {
    await ensureEndpoints(m.db, ["a"]);
    await insertEvents(m.db, [event(1), event(2), event(3)]);
    expect(await leaseEndpoint(m.db, "a", "h1", 30_000, null)).toBe(true);
    expect(await leaseEndpoint(m.db, "a", "h2", 30_000, null)).toBe(false);
    // A holder known to be dead can be replaced; an expired lease too.
    expect(await leaseEndpoint(m.db, "a", "h2", 30_000, "h1")).toBe(true);
    expect(await recordOutcome(m.db, outcome("a", "h1", 0, 3))).toBe(false);
    expect(await leaseEndpoint(m.db, "a", "h3", 30_000, null, Date.now() + 60_000)).toBe(true);
    expect(await recordOutcome(m.db, outcome("a", "h3", 0, 2))).toBe(true);
    expect((await endpointRow(m.db, "a"))?.cursor).toBe(2);
    // Redelivery moves the cursor back while h3 is sending event 3: h3's outcome is not recorded.
    expect(await rewindEndpoint(m.db, "a", 0)).toBe(true);
    expect(await recordOutcome(m.db, outcome("a", "h3", 2, 3))).toBe(false);
    expect((await endpointRow(m.db, "a"))?.cursor).toBe(0);
  });

  it("prunes only old events that every configured endpoint has passed", async () => {
    const old = Date.now() - 3_600_000;
    await ensureEndpoints(m.db, ["a", "b"]);
    await insertEvents(
      m.db,
      Array.from({ length: 4500 }, (_, i) => event(i + 1, old)),
    );
    await insertEvents(m.db, [event(4501)]);
    await leaseEndpoint(m.db, "a", "h", 30_000, null);
    await recordOutcome(m.db, outcome("a", "h", 0, 4501));
    await leaseEndpoint(m.db, "b", "h", 30_000, null);
    await recordOutcome(m.db, outcome("b", "h", 0, 4000));
    await pruneEvents(m.db, ["a", "b"], Date.now() - 60_000);
    // b has not passed 4001..4500; 4501 is recent.
    const left = await eventsAfter(m.db, 0, 10_000);
    expect(left[0]?.id).toBe(4001);
    expect(left).toHaveLength(501);
    // An endpoint no longer configured holds nothing back.
    await pruneEvents(m.db, ["a"], Date.now() - 60_000);
    expect((await eventsAfter(m.db, 0, 10_000)).map((e) => e.id)).toEqual([4501]);
  });

  it("writes pull events in batches, never losing one to a burst, and only what some endpoint wants", async () => {
    const endpoint = {
      name: "a",
      url: "http://h/x",
      disabled: false,
      timeout: 1000,
      threshold: 10,
      backoff: 1000,
      maxbackoff: 300_000,
      format: "distribution" as const,
      repositories: ["team/*"],
    };
    const recorder = new EventRecorder(new SqlMetadataStore(m).events, [endpoint], {
      includeReferences: false,
      pull: true,
      listenPort: "5000",
    });
    const info = {
      id: "r1",
      addr: "127.0.0.1:1",
      host: "h",
      method: "GET",
      useragent: "ua",
      baseUrl: "http://h",
    };
    for (let i = 0; i < 2500; i++)
      recorder.notePull(info, { repository: "team/app", digest: `sha256:${"a".repeat(64)}` });
    recorder.notePull(info, { repository: "other/app", digest: `sha256:${"b".repeat(64)}` });
    // The 1,000th pull starts a write at once; the rest wait for the timer or a flush (shutdown).
    await new Promise((r) => setTimeout(r, 50));
    expect((await eventsAfter(m.db, 0, 10_000)).length).toBeGreaterThanOrEqual(1000);
    await recorder.flush();
    const rows = await eventsAfter(m.db, 0, 10_000);
    expect(rows).toHaveLength(2500);
    expect(new Set(rows.map((r) => r.event_id)).size).toBe(2500);
    expect(rows.every((r) => r.action === "pull" && r.repository === "team/app")).toBe(true);
    const off = new EventRecorder(new SqlMetadataStore(m).events, [endpoint], {
      includeReferences: false,
      pull: false,
      listenPort: "5000",
    });
    off.notePull(info, { repository: "team/app" });
    await off.flush();
    expect(await eventsAfter(m.db, 0, 10_000)).toHaveLength(2500);
  });
});
