import net from "node:net";
import { Readable } from "node:stream";

const BRAND = Symbol.for("berth.SocketBody");

/** A TCP socket's descriptor (kept by Node in an untyped field), or null when it has none. */
export function socketFd(socket: net.Socket): number | null {
  const fd = (socket as net.Socket & { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : null;
}

/**
 * Whether `stream` is a SocketBody. Not `instanceof`: the S3 store is a module of its own beside the
 * bundled worker (scripts/bundle-worker.mjs), so the class can exist twice in one process.
 */
export function isSocketBody(stream: Readable): stream is SocketBody {
  return (stream as Readable & { [BRAND]?: unknown })[BRAND] === true;
}

/**
 * A blob's bytes straight off the socket of a plain-HTTP GET to the object store (S3 without TLS), for the
 * zero-copy path of blob GETs (src/http/sendfile.ts splices them from this socket into the client's).
 *
 * `httpGetBody` writes the GET itself on a connection of its own (`Connection: close`), reads the status
 * line and headers, and stops reading (libuv stops too: the socket reads through `onread`, whose pause
 * is a real readStop). What it had read past the headers is `head`; the rest, `length - head.length`
 * bytes, is still in the kernel. The object's bytes never pass through JavaScript when spliced; read as a
 * stream (any other consumer), the body reads the socket like any Readable, to `length` bytes.
 */
export class SocketBody extends Readable {
  readonly [BRAND] = true;
  private received: number;
  private reading = false;
  /** Taken by the splice: nothing reads the socket from JavaScript from then on. */
  private taken = false;

  constructor(
    readonly socket: net.Socket,
    readonly head: Buffer,
    readonly length: number,
    private readonly onChunk: { fn: (chunk: Buffer) => boolean },
    /** How long the store may send nothing mid-body before the read is cut (0: no limit). */
    readonly idleMs = 0,
  ) {
    super();
    this.received = head.length;
    socket.on("error", (err) => this.destroy(err));
    socket.on("close", () => {
      if (this.received < this.length && !this.taken) this.destroy(new Error("the store closed early"));
    });
    if (idleMs > 0) {
      socket.setTimeout(idleMs, () => {
        if (!this.taken) this.destroy(new Error(`the store sent nothing for ${idleMs} ms`));
      });
    }
  }

  /** The socket's descriptor for splice(2), or null (not a plain TCP socket any more). */
  fd(): number | null {
    return socketFd(this.socket);
  }

  /**
   * The splice takes the socket over: JavaScript reads nothing more from it (and no longer sees it move:
   * the splice keeps its own idle timeout, `idleMs`).
   */
  handOver(): void {
    this.taken = true;
    this.socket.setTimeout(0);
  }

  override _read(): void {
    if (this.taken) return;
    if (!this.reading) {
      this.reading = true;
      this.onChunk.fn = (chunk) => {
        const room = this.length - this.received;
        const piece = chunk.length > room ? chunk.subarray(0, room) : chunk;
        this.received += piece.length;
        // The onread buffer is reused: copy.
        const more = this.push(Buffer.from(piece));
        if (this.received >= this.length) {
          this.push(null);
          this.socket.destroy();
          return false;
        }
        return more;
      };
      if (this.received >= this.length) {
        if (this.head.length > 0) this.push(this.head);
        this.push(null);
        this.socket.destroy();
        return;
      }
      if (this.head.length > 0 && !this.push(this.head)) return;
    }
    this.socket.resume();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy();
    callback(err);
  }
}

/** The parts of an HTTP response head that decide whether its body can be taken as bytes. */
interface ResponseHead {
  status: number;
  headers: Map<string, string>;
}

function parseHead(text: string): ResponseHead | null {
  const lines = text.split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "");
  if (!m) return null;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return { status: Number(m[1]), headers };
}

const MAX_HEAD = 64 * 1024;

/**
 * GET `url` (http: only; presigned, so no other header needs signing) with an optional byte range, on a
 * new connection. Resolves a SocketBody for a 200 or 206 whose Content-Length is `expected`, "missing" for
 * a 404, and null for anything else (another status, chunked encoding, a connection error, no head within
 * `timeoutMs`): the caller then reads through its SDK, which retries and reports errors properly. Once the
 * body flows, a store that sends nothing for `idleMs` (read or spliced) has the body cut with an error.
 */
export function httpGetBody(
  url: URL,
  range: { start: number; end: number } | undefined,
  expected: number,
  timeoutMs: number,
  idleMs = 0,
): Promise<SocketBody | "missing" | null> {
  if (url.protocol !== "http:") return Promise.resolve(null);
  return new Promise((resolve) => {
    let settled = false;
    let head = Buffer.alloc(0);
    const onChunk = { fn: (_chunk: Buffer): boolean => true };
    const settle = (value: SocketBody | "missing" | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (value === null || value === "missing") socket.destroy();
      resolve(value);
    };
    const socket = net.connect({
      host: url.hostname.replace(/^\[|\]$/g, ""),
      port: Number(url.port || 80),
      noDelay: true,
      onread: {
        buffer: Buffer.allocUnsafe(64 * 1024),
        callback: (nread: number, buffer: Uint8Array): boolean => {
          const chunk = Buffer.from(buffer.buffer, buffer.byteOffset, nread);
          if (settled) return onChunk.fn(chunk);
          head = Buffer.concat([head, chunk]);
          const end = head.indexOf("\r\n\r\n");
          if (end < 0) {
            if (head.length > MAX_HEAD) settle(null);
            return true;
          }
          const parsed = parseHead(head.subarray(0, end).toString("latin1"));
          const body = Buffer.from(head.subarray(end + 4)); // a copy: `buffer` is reused
          if (!parsed || parsed.status === 404) {
            settle(parsed ? "missing" : null);
            return false;
          }
          const length = Number(parsed.headers.get("content-length"));
          const plain = !parsed.headers.has("transfer-encoding");
          const wanted = range ? 206 : 200;
          if (parsed.status !== wanted || !plain || length !== expected || body.length > length) {
            settle(null);
            return false;
          }
          socket.pause();
          settle(new SocketBody(socket, body, length, onChunk, idleMs));
          return false;
        },
      },
    });
    const timer = setTimeout(() => settle(null), timeoutMs);
    socket.on("error", () => settle(null));
    socket.on("close", () => settle(null));
    const target = `${url.pathname}${url.search}`;
    const lines = [
      `GET ${target} HTTP/1.1`,
      `Host: ${url.host}`,
      ...(range ? [`Range: bytes=${range.start}-${range.end}`] : []),
      "Connection: close",
      "",
      "",
    ];
    socket.write(lines.join("\r\n"));
  });
}
