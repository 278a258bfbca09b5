import { ReadStream } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { TLSSocket } from "node:tls";
import { isSocketBody, socketFd } from "../storage/socket-body.js";
import { packageRoot } from "./package-root.js";

/**
 * The fast path for blob GETs: the bytes go from the file to the socket with sendfile(2), in the
 * kernel, instead of being read into buffers and written out again by Node (about twice the speed).
 * From S3 over plain HTTP the same: the store's response socket is spliced into the client's with
 * splice(2) (src/storage/socket-body.ts).
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
  /** Older builds of the addon have no splice. */
  splice?(
    inFd: number,
    outFd: number,
    length: number,
    done: (errno: number, sent: number) => void,
    idleMs?: number,
  ): unknown;
  cancelSplice?(transfer: unknown): void;
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

/**
 * Whether a body for `request` can be spliced from another socket (see ReadOptions in
 * src/storage/blob-store.ts): plain HTTP/1.x and an addon with splice. BERTH_SPLICE=0 turns it off.
 */
export function spliceable(request: IncomingMessage): boolean {
  if (process.env.BERTH_SPLICE === "0") return false;
  const native = loadAddon();
  return typeof native?.splice === "function" && plainSocketFd(request) !== null;
}

/** The socket's descriptor when the request came over plain TCP with HTTP/1.x, else null. */
function plainSocketFd(request: IncomingMessage): number | null {
  if (request.httpVersionMajor !== 1) return null;
  const socket = request.socket as IncomingMessage["socket"] | null;
  if (!socket || socket instanceof TLSSocket) return null;
  return socketFd(socket);
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
  if (!native || plainSocketFd(request) === null) return stream;
  if (isSocketBody(stream)) {
    const fd = stream.fd();
    if (fd === null || !native.splice || !native.cancelSplice || stream.length !== length) return stream;
    return new NativeBody(
      stream,
      stream.head,
      (out, done) => native.splice!(fd, out, length - stream.head.length, done, stream.idleMs),
      (t) => native.cancelSplice!(t),
      () => stream.handOver(),
    );
  }
  if (!(stream instanceof ReadStream)) return stream;
  // fs.ReadStream keeps its descriptor in this (untyped) field.
  const fd = (stream as ReadStream & { fd?: unknown }).fd;
  if (typeof fd !== "number") return stream;
  return new NativeBody(
    stream,
    EMPTY,
    (out, done) => native.start(out, fd, offset, length, done),
    (t) => native.cancel(t),
  );
}

const EMPTY = Buffer.alloc(0);

/** Bytes each socket carried by sendfile(2), which its bytesWritten does not count. */
const sentBySocket = new WeakMap<object, number>();

/** What `socket` has sent through sendfile(2) so far (add it to socket.bytesWritten). */
export function sendfileBytes(socket: object): number {
  return sentBySocket.get(socket) ?? 0;
}

type Done = (errno: number, sent: number) => void;

/**
 * A Readable that carries no data through JavaScript: piped into an http.ServerResponse (which is
 * what Fastify does with a stream body), it flushes the response's headers and `head` (bytes of the
 * body already in hand), then has the addon send the rest on the response's socket (`begin`: sendfile(2)
 * from a file, or splice(2) from the store's socket), then ends the response. It ends ('end') when every
 * byte was sent, and is destroyed with the error when the client goes away; destroying it (Fastify does
 * when the response closes early) stops the transfer and destroys the source.
 */
class NativeBody extends Readable {
  private transfer: unknown = null;

  constructor(
    private readonly source: Readable,
    private readonly head: Buffer,
    private readonly begin: (socketFd: number, done: Done) => unknown,
    private readonly cancel: (transfer: unknown) => void,
    private readonly handOver: () => void = () => {},
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
      // Not the plain HTTP/1.x response it was made for: stream the source after all.
      this.source.on("end", () => {
        this.push(null);
        this.resume();
      });
      this.source.on("error", (err) => this.destroy(err));
      return this.source.pipe(destination, options);
    }
    const socket = res.socket!;
    this.handOver();
    res.flushHeaders();
    // Once the headers (and the head of the body) are in the kernel, the rest may follow on the socket.
    socket.write(this.head, (err) => {
      if (err) return this.destroy(err);
      if (this.destroyed) return;
      try {
        this.transfer = this.begin(fd, (errno, sent) => {
          this.transfer = null;
          sentBySocket.set(socket, sendfileBytes(socket) + sent);
          if (errno !== 0) {
            const name =
              Object.entries(os.constants.errno).find(([, n]) => n === errno)?.[0] ?? `errno ${errno}`;
            const error = Object.assign(new Error(`zero-copy send: ${name} after ${sent} bytes`), {
              code: name,
            });
            this.destroy(error);
            return;
          }
          this.source.destroy();
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
      this.cancel(this.transfer);
      this.transfer = null;
    }
    this.source.destroy();
    callback(err);
  }
}
