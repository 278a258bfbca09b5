// A thin promise wrapper over node:http with keep-alive agents, streaming request bodies and
// streaming (hashing, counting, discarding) response bodies. Nothing here buffers a large body.
import { createHash } from "node:crypto";
import http from "node:http";

export function keepAliveAgent(maxSockets = 64) {
  return new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets, keepAliveMsecs: 10_000 });
}

const defaultAgent = keepAliveAgent(64);

export class HttpError extends Error {
  constructor(message, { method, url, status, body, headers } = {}) {
    super(message);
    this.name = "HttpError";
    this.method = method;
    this.url = url;
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

/**
 * Sends one request.
 *  - body: a Buffer or string sent in one go, or
 *  - chunks: an (async) iterable of Buffers streamed with back-pressure (set Content-Length yourself
 *    through `headers` when the size is known; otherwise the request is chunked).
 *  - response: "text" (default, capped at 1 MiB), "json", "discard" or "sha256" (streams, hashes, counts).
 * Resolves with { status, headers, text?, json?, bytes, sha256? }. Never throws on an HTTP status:
 * callers check `status` (see `expectStatus`).
 */
export function request(
  url,
  { method = "GET", headers = {}, body, chunks, response = "text", agent, timeoutMs = 120_000 } = {},
) {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (fn, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn(value);
    };
    const req = http.request(target, { method, headers, agent: agent ?? defaultAgent }, (res) => {
      responded = true;
      const hash = response === "sha256" ? createHash("sha256") : null;
      const parts = [];
      let bytes = 0;
      let kept = 0;
      res.on("data", (chunk) => {
        bytes += chunk.length;
        if (hash) hash.update(chunk);
        else if (response !== "discard" && kept < MiB) {
          parts.push(chunk);
          kept += chunk.length;
        }
      });
      res.on("error", (err) => finish(reject, err));
      res.on("end", () => {
        const out = { status: res.statusCode, headers: res.headers, bytes };
        if (hash) out.sha256 = hash.digest("hex");
        if (response === "text" || response === "json") {
          out.text = Buffer.concat(parts).toString("utf8");
          if (response === "json") {
            try {
              out.json = out.text === "" ? undefined : JSON.parse(out.text);
            } catch {
              out.json = undefined;
            }
          }
        }
        finish(resolve, out);
      });
    });
    let responded = false;
    const timer = setTimeout(() => {
      req.destroy(new Error(`${method} ${target.pathname} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    req.on("error", (err) => finish(reject, err));

    if (chunks === undefined) {
      req.end(body);
      return;
    }
    (async () => {
      for await (const chunk of chunks) {
        // The server may answer (typically with an error) before it has read the whole body.
        if (responded || req.destroyed) break;
        if (!req.write(chunk)) {
          await drained(req);
        }
      }
      if (!req.destroyed) req.end();
    })().catch((err) => req.destroy(err));
  });
}

const MiB = 1024 * 1024;

/** Resolves when the request can take more data (or is closed), leaving no listeners behind. */
function drained(req) {
  return new Promise((resolve) => {
    const done = () => {
      req.off("drain", done);
      req.off("close", done);
      resolve();
    };
    req.on("drain", done);
    req.on("close", done);
  });
}

/** Throws an HttpError unless the response status is one of `expected`. */
export function expectStatus(res, expected, what) {
  const list = Array.isArray(expected) ? expected : [expected];
  if (!list.includes(res.status)) {
    const detail = (res.text ?? "").slice(0, 300).replace(/\s+/g, " ").trim();
    throw new HttpError(
      `${what}: HTTP ${res.status}, expected ${list.join("/")}${detail ? ` — ${detail}` : ""}`,
      {
        status: res.status,
        body: res.text,
        headers: res.headers,
      },
    );
  }
  return res;
}
