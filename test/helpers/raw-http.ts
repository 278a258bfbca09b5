import net from "node:net";

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** Everything the server sent, as text. */
  raw: string;
}

/** Parses one HTTP/1.1 response (head and a Content-Length or close-delimited body) out of `text`. */
export function parseResponse(text: string): RawResponse {
  const end = text.indexOf("\r\n\r\n");
  const head = end >= 0 ? text.slice(0, end) : text;
  const [statusLine = "", ...lines] = head.split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let body = end >= 0 ? text.slice(end + 4) : "";
  const length = headers["content-length"];
  if (length !== undefined) body = body.slice(0, Number(length));
  return { status, headers, body, raw: text };
}

export interface RawExchange {
  socket: net.Socket;
  /** Resolves with all the server sent once it closes the connection (or `timeoutMs` passes). */
  done: Promise<string>;
}

/**
 * Opens a TCP connection and writes `head` and then `body` exactly as given, so that tests can send what
 * `fetch` refuses to: absolute-form targets, bodies shorter than their Content-Length. With `halfClose`
 * the client ends its side after writing (FIN), and keeps reading the answer.
 */
export function rawExchange(
  port: number,
  head: string,
  body: Buffer | string = "",
  options: { halfClose?: boolean; timeoutMs?: number } = {},
): RawExchange {
  const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
  const chunks: Buffer[] = [];
  const done = new Promise<string>((resolve) => {
    const finish = () => resolve(Buffer.concat(chunks).toString("latin1"));
    const timer = setTimeout(() => {
      socket.destroy();
      finish();
    }, options.timeoutMs ?? 10_000);
    socket.on("data", (chunk) => chunks.push(chunk));
    // The server closed its side: the answer is complete; close ours too.
    socket.on("end", () => socket.end());
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      finish();
    });
  });
  socket.on("connect", () => {
    socket.write(head);
    if (body.length > 0) socket.write(body);
    if (options.halfClose) socket.end();
  });
  return { socket, done };
}

/** Sends one request with `Connection: close` semantics and returns the parsed answer. */
export async function rawRequest(
  port: number,
  head: string,
  body: Buffer | string = "",
  options: { halfClose?: boolean; timeoutMs?: number } = {},
): Promise<RawResponse> {
  return parseResponse(await rawExchange(port, head, body, options).done);
}
