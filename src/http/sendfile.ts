import { ReadStream } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { TLSSocket } from "node:tls";
import { packageRoot } from "./package-root.js";

/**
 * The fast path for blob GETs: the bytes go from the file to the socket with sendfile(2), in the
 * kernel, instead of being read into buffers and written out again by Node (about twice the speed).
 *
 * It needs the optional native addon (native/sendfile, built by node-gyp at install and by
 * `npm run build`) and a plain HTTP/1.x connection: TLS encrypts in user space and HTTP/2 frames
 * the body, so both stream as before, as does everything when the addon is not built. Set
 * BERTH_SENDFILE=0 to turn the fast path off.
 */

interface Addon {
  start(
    socketFd: number,
    fileFd: number,
    offset: number,
    length: number,
    done: (errno: number, sent: number) => void,
  ): unknown;
  cancel(transfer: unknown): void;
}

let addon: Addon | null | undefined;

function loadAddon(): Addon | null {
  if (addon !== undefined) return addon;
  addon = null;
  if (process.env.BERTH_SENDFILE === "0" || process.platform !== "linux") return addon;
  try {
    const file = path.join(packageRoot(), "native", "sendfile", "build", "Release", "berth_sendfile.node");
    const loaded = createRequire(import.meta.url)(file) as Partial<Addon>;
    if (typeof loaded.start === "function" && typeof loaded.cancel === "function") addon = loaded as Addon;
  } catch {
    // Not built: stream instead.
  }
  return addon;
}

/** Whether the sendfile addon is loaded (for tests and the start-up log). */
export function sendfileAvailable(): boolean {
  return loadAddon() !== null;
}

/** The socket's descriptor when the request came over plain TCP with HTTP/1.x, else null. */
function plainSocketFd(request: IncomingMessage): number | null {
  if (request.httpVersionMajor !== 1) return null;
  const socket = request.socket as (IncomingMessage["socket"] & { _handle?: { fd?: number } }) | null;
  if (!socket || socket instanceof TLSSocket) return null;
  const fd = socket._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : null;
}

/**
 * The body to send for `length` bytes of a blob from `offset`, read by `stream` (a file stream from
 * the filesystem store): a sendfile body when the fast path applies, the stream itself otherwise.
 */
export function blobBody(
  request: IncomingMessage,
  stream: Readable,
  offset: number,
  length: number,
): Readable {
  const native = loadAddon();
  if (!native || !(stream instanceof ReadStream) || plainSocketFd(request) === null) return stream;
  // fs.ReadStream keeps its descriptor in this (untyped) field.
  const fd = (stream as ReadStream & { fd?: unknown }).fd;
  if (typeof fd !== "number") return stream;
  return new SendfileBody(native, stream, fd, offset, length);
}

const EMPTY = Buffer.alloc(0);

/** Bytes each socket carried by sendfile(2), which its bytesWritten does not count. */
const sentBySocket = new WeakMap<object, number>();

/** What `socket` has sent through sendfile(2) so far (add it to socket.bytesWritten). */
export function sendfileBytes(socket: object): number {
  return sentBySocket.get(socket) ?? 0;
}

/**
 * A Readable that carries no data through JavaScript: piped into an http.ServerResponse (which is
 * what Fastify does with a stream body), it flushes the response's headers and hands the file range
 * to sendfile(2) on the response's socket, then ends the response. It ends ('end') when every byte
 * was sent, and is destroyed with the error when the client goes away; destroying it (Fastify does
 * when the response closes early) stops the transfer and closes the file.
 */
class SendfileBody extends Readable {
  private transfer: unknown = null;

  constructor(
    private readonly native: Addon,
    private readonly source: ReadStream,
    private readonly fileFd: number,
    private readonly offset: number,
    private readonly length: number,
  ) {
    super();
  }

  override _read(): void {
    // Nothing flows through JavaScript.
  }

  override pipe<T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T {
    const res = destination as unknown as ServerResponse;
    const fd = res.req ? plainSocketFd(res.req) : null;
    if (fd === null || options?.end === false) {
      // Not the plain HTTP/1.x response it was made for: stream the file after all.
      this.source.on("end", () => {
        this.push(null);
        this.resume();
      });
      this.source.on("error", (err) => this.destroy(err));
      return this.source.pipe(destination, options);
    }
    const socket = res.socket!;
    res.flushHeaders();
    // Once the headers are in the kernel, the body may follow them on the socket.
    socket.write(EMPTY, (err) => {
      if (err) return this.destroy(err);
      if (this.destroyed) return;
      try {
        this.transfer = this.native.start(fd, this.fileFd, this.offset, this.length, (errno, sent) => {
          this.transfer = null;
          sentBySocket.set(socket, sendfileBytes(socket) + sent);
          if (errno !== 0) {
            const name =
              Object.entries(os.constants.errno).find(([, n]) => n === errno)?.[0] ?? `errno ${errno}`;
            const error = Object.assign(new Error(`sendfile: ${name} after ${sent} bytes`), { code: name });
            this.destroy(error);
            return;
          }
          this.push(null);
          this.resume();
          res.end();
        });
      } catch (err) {
        this.destroy(err as Error);
      }
    });
    return destination;
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (this.transfer !== null) {
      this.native.cancel(this.transfer);
      this.transfer = null;
    }
    this.source.destroy();
    callback(err);
  }
}
