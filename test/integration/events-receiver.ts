import { createHmac, timingSafeEqual } from "node:crypto";
import http from "node:http";
import type net from "node:net";

/**
 * A webhook receiver on loopback for the notification tests, written against registry:2's documented
 * format (docs/notifications.md of Distribution): a POST whose body is `{"events": [...]}` with
 * Content-Type application/vnd.docker.distribution.events.v1+json. `parseEnvelope` checks every field
 * the documentation names, so that a receiver written for registry:2 would accept what Berth sends.
 */

export interface Registry2Event {
  id: string;
  timestamp: string;
  action: "push" | "pull" | "mount" | "delete";
  target: {
    mediaType?: string;
    size?: number;
    digest?: string;
    length?: number;
    repository: string;
    url?: string;
    tag?: string;
    references?: { mediaType: string; digest: string; size: number }[];
    fromRepository?: string;
  };
  request: { id: string; addr: string; host: string; method: string; useragent: string };
  actor: { name?: string };
  source: { addr: string; instanceID: string };
}

const STRING_FIELDS = ["mediaType", "digest", "repository", "url", "tag", "fromRepository"] as const;

/** Throws unless `body` is a registry:2 envelope; returns its events. */
export function parseEnvelope(body: string): Registry2Event[] {
  const parsed = JSON.parse(body) as { events?: unknown };
  if (!parsed || !Array.isArray(parsed.events)) throw new Error("envelope without an events array");
  return parsed.events.map((raw, i) => {
    const e = raw as Registry2Event;
    const where = `events[${i}]`;
    if (typeof e.id !== "string" || e.id === "") throw new Error(`${where}.id`);
    if (typeof e.timestamp !== "string" || Number.isNaN(Date.parse(e.timestamp)))
      throw new Error(`${where}.timestamp`);
    if (!["push", "pull", "mount", "delete"].includes(e.action)) throw new Error(`${where}.action`);
    if (typeof e.target !== "object" || typeof e.target.repository !== "string")
      throw new Error(`${where}.target.repository`);
    for (const f of STRING_FIELDS) {
      if (e.target[f] !== undefined && typeof e.target[f] !== "string")
        throw new Error(`${where}.target.${f}`);
    }
    for (const f of ["size", "length"] as const) {
      if (e.target[f] !== undefined && !Number.isInteger(e.target[f]))
        throw new Error(`${where}.target.${f}`);
    }
    if (e.target.digest !== undefined && !/^[a-z0-9]+:[a-f0-9]{32,}$/.test(e.target.digest))
      throw new Error(`${where}.target.digest`);
    for (const f of ["id", "addr", "host", "method", "useragent"] as const) {
      if (typeof e.request?.[f] !== "string") throw new Error(`${where}.request.${f}`);
    }
    if (typeof e.actor !== "object") throw new Error(`${where}.actor`);
    if (typeof e.source?.addr !== "string" || typeof e.source?.instanceID !== "string")
      throw new Error(`${where}.source`);
    return e;
  });
}

export function verifySignature(secret: string, body: string, header: string | undefined): boolean {
  if (!header?.startsWith("sha256=")) return false;
  const expected = Buffer.from(createHmac("sha256", secret).update(body).digest("hex"));
  const given = Buffer.from(header.slice(7));
  return expected.length === given.length && timingSafeEqual(expected, given);
}

export type Mode = "ok" | "fail" | "hang";

export interface Delivery {
  headers: http.IncomingHttpHeaders;
  body: string;
  status: number;
}

export class Receiver {
  mode: Mode = "ok";
  /** Milliseconds to wait before answering (a slow receiver). */
  delayMs = 0;
  /** Every request, answered or not. */
  readonly requests: Delivery[] = [];
  /** Events of the requests answered 2xx, in arrival order (duplicates included). */
  readonly events: Registry2Event[] = [];
  private server: http.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  async start(port = 0): Promise<this> {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        const mode = this.mode;
        if (mode === "hang") {
          this.requests.push({ headers: req.headers, body, status: 0 });
          return; // never answers
        }
        const status = mode === "ok" ? 200 : 500;
        const answer = () => {
          this.requests.push({ headers: req.headers, body, status });
          if (status === 200) {
            const type = String(req.headers["content-type"]);
            if (type.startsWith("application/vnd.docker.distribution.events.v1+json"))
              this.events.push(...parseEnvelope(body));
          }
          res.writeHead(status).end();
        };
        if (this.delayMs > 0) setTimeout(answer, this.delayMs);
        else answer();
      });
    });
    server.on("connection", (s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port || this.port, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
    return this;
  }

  /** Closes the port (receiver down); `start()` brings it back on the same port. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** The events with duplicates (same id) dropped, as a receiver would. */
  unique(): Registry2Event[] {
    const seen = new Set<string>();
    return this.events.filter((e) => {
      if (seen.has(e.id)) return false;
      seen.add(e.id);
      return true;
    });
  }

  async waitFor(predicate: () => boolean, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`receiver: condition not met within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}
