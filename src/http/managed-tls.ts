/**
 * TLS that Berth manages itself, in every worker process: a certificate from an ACME CA
 * (http.tls.letsencrypt, src/http/acme.ts) or from the private CA of `berth tls init`
 * (src/http/private-ca.ts). Loaded only when one of them is in use (src/http/tls.ts, managedTlsMode).
 *
 * Every worker serves the certificate on disk and reloads it when the file changes; renewal runs in
 * one process at a time, under a lease in the database (the same `locks` table as the background
 * jobs); the others see the new file. ACME challenges are answered by whichever worker the CA
 * reaches, from files in the state directory.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type net from "node:net";
import tls from "node:tls";
import type { FastifyInstance, FastifyServerOptions } from "fastify";
import type { Logger } from "pino";
import { watchFiles } from "../auth/file-watch.js";
import type { Config } from "../config/schema.js";
import { acmeHosts } from "../config/sections/tls.js";
import { Lease, type LockSource } from "../registry/gc.js";
import { makePrivateDir } from "../storage/private-files.js";
import { capConnectionsPerClient, connectionLimits, headerTimeoutOptions } from "./connections.js";
import { type TlsMaterial, tlsMinVersion } from "./tls.js";
import { checkPair, type KeyAndCert, unbundle } from "./tls-certs.js";

export type ManagedMode = "acme" | "private-ca";

export interface ManagedTls {
  /** Fastify options: HTTP/2 with HTTP/1.1 fallback and the current certificate. */
  serverOptions: Partial<FastifyServerOptions> & {
    http2: true;
    https: { allowHTTP1: true; key: string; cert: string; minVersion: TlsMaterial["minVersion"] };
  };
  /** Routes of its own (/ca.crt); call before listen. */
  registerRoutes(app: FastifyInstance): void;
  /** After listen: reloads, renewals, the HTTP listener and challenges. Returns a stop function. */
  start(app: FastifyInstance): Promise<() => Promise<void>>;
}

interface Context {
  config: Config;
  dataDir: string;
  /** The job leases: one process renews a certificate at a time. */
  leases: LockSource;
  log: Logger;
}

export async function openManagedTls(
  mode: ManagedMode,
  config: Config,
  runtime: { dataDir: string; meta: LockSource },
  log: Logger,
): Promise<ManagedTls> {
  const ctx: Context = { config, dataDir: runtime.dataDir, leases: runtime.meta, log };
  return mode === "acme" ? openAcme(ctx) : openPrivateCa(ctx);
}

function options(config: Config, material: KeyAndCert): ManagedTls["serverOptions"] {
  return {
    http2: true,
    https: { allowHTTP1: true, key: material.key, cert: material.cert, minVersion: tlsMinVersion(config) },
  };
}

/**
 * Serves the file's key and certificate from now on, in this process, and again whenever the file
 * changes; keeps the old pair if a new one is bad. `served` is what the server started with: a file
 * written between then and now is loaded at once.
 */
function watchCertificate(app: FastifyInstance, ctx: Context, file: string, served: KeyAndCert): () => void {
  const reload = reloadFrom(app, ctx, file);
  const stop = watchFiles([file], reload, { pollMs: 2_000 });
  try {
    if (unbundle(fs.readFileSync(file, "utf8")).cert !== served.cert) reload();
  } catch {}
  return stop;
}

function reloadFrom(app: FastifyInstance, ctx: Context, file: string): () => void {
  return () => {
    try {
      const material = unbundle(fs.readFileSync(file, "utf8"));
      checkPair(material);
      (app.server as unknown as tls.Server).setSecureContext({
        key: material.key,
        cert: material.cert,
        minVersion: tlsMinVersion(ctx.config),
      });
      const cert = new crypto.X509Certificate(material.cert);
      ctx.log.info({ subject: cert.subject, validTo: cert.validTo }, "TLS certificate reloaded");
    } catch (err) {
      ctx.log.warn(
        { err: (err as Error).message, file },
        "TLS certificate changed but could not be loaded; keeping the previous one",
      );
    }
  };
}

const MAX_TIMER_MS = 6 * 3_600_000;

/**
 * Runs `run` when `dueAt()` has come, in one process at a time (lease `lock`), and again at the next
 * `dueAt()`. Other processes try again shortly after and then find the work done.
 */
function schedule(
  ctx: Context,
  lock: string,
  dueAt: () => number,
  run: () => Promise<void>,
): () => Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let running: Promise<void> = Promise.resolve();
  const arm = (at: number) => {
    if (stopped) return;
    clearTimeout(timer);
    const delay = Math.min(Math.max(at - Date.now(), 1_000), MAX_TIMER_MS);
    timer = setTimeout(() => {
      running = tick();
    }, delay);
    timer.unref();
  };
  const tick = async () => {
    if (stopped) return;
    try {
      if (dueAt() > Date.now()) return arm(dueAt());
      const lease = await Lease.acquire(ctx.leases, lock, { ttlMs: 60_000 });
      if (!lease) return arm(Date.now() + 10_000 + Math.random() * 10_000);
      try {
        if (dueAt() <= Date.now()) await run();
      } finally {
        await lease.release();
      }
      arm(dueAt());
    } catch (err) {
      ctx.log.error(
        { err: (err as Error).message, lock },
        "TLS certificate renewal failed; trying again in a minute",
      );
      arm(Date.now() + 60_000);
    }
  };
  arm(Date.now());
  return async () => {
    stopped = true;
    clearTimeout(timer);
    await running;
  };
}

// ------------------------------------------------------------------------------------------------
// The private CA

async function openPrivateCa(ctx: Context): Promise<ManagedTls> {
  const ca = await import("./private-ca.js");
  const paths = ca.privateCaPaths(ctx.dataDir);
  const material = unbundle(fs.readFileSync(paths.server, "utf8"));
  checkPair(material);
  return {
    serverOptions: options(ctx.config, material),
    registerRoutes(app) {
      app.get("/ca.crt", async (_request, reply) => {
        reply.header("content-type", "application/x-x509-ca-cert").header("cache-control", "no-cache");
        return reply.send(fs.readFileSync(paths.caCert));
      });
    },
    async start(app) {
      const stopWatch = watchCertificate(app, ctx, paths.server, material);
      const stopRenewal = schedule(
        ctx,
        "tls:private-ca",
        () => ca.serverCertInfo(ctx.dataDir).renewAt,
        async () => {
          const { notAfter } = await ca.renewServerCert(ctx.dataDir);
          ctx.log.info(
            { notAfter: new Date(notAfter).toISOString() },
            "private CA: server certificate renewed",
          );
        },
      );
      return async () => {
        stopWatch();
        await stopRenewal();
      };
    },
  };
}

// ------------------------------------------------------------------------------------------------
// ACME

async function openAcme(ctx: Context): Promise<ManagedTls> {
  const acme = await import("./acme.js");
  const le = ctx.config.http.tls.letsencrypt!;
  const hosts = acmeHosts(ctx.config);
  const paths = acme.acmePaths(le, ctx.dataDir);
  makePrivateDir(paths.dir);
  const current = acme.readCertificate(paths, hosts);
  if (!current) {
    ctx.log.warn(
      { hosts },
      "acme: no certificate yet; serving a temporary self-signed one until the CA issues it",
    );
  }
  const material = current ?? (await (await import("./tls-issue.js")).selfSigned(hosts, 7 * 86_400_000));
  return {
    serverOptions: options(ctx.config, material),
    registerRoutes() {},
    async start(app) {
      const stops: (() => unknown)[] = [];
      stops.push(watchCertificate(app, ctx, paths.certificate, material));
      if (le.challenges.includes("tls-alpn-01")) {
        stops.push(
          answerTlsAlpn(
            app.server as unknown as tls.Server,
            (host) => acme.tlsAlpn01Material(paths, host),
            material,
          ),
        );
      }
      let httpOk = false;
      if (le.httpaddr !== "") {
        const server = redirectServer(ctx.config, hosts, (token) => acme.http01Response(paths, token));
        capConnectionsPerClient(server, connectionLimits(ctx.config), ctx.log);
        httpOk = await listenHttp(server, le.httpaddr, ctx.log);
        if (httpOk) stops.push(() => new Promise((r) => server.close(() => r(undefined))));
      }
      const usable = le.challenges.filter((c) => c !== "http-01" || httpOk);
      if (usable.length === 0) {
        ctx.log.error(
          { httpaddr: le.httpaddr },
          "acme: no challenge can be answered: http-01 needs the HTTP listener (http.tls.letsencrypt.httpaddr) and tls-alpn-01 is not enabled (http.tls.letsencrypt.challenges)",
        );
      } else {
        stops.push(
          schedule(
            ctx,
            "tls:acme",
            () => acme.nextAttempt(le, paths, hosts),
            async () => {
              // After a failure, the next attempt uses the next challenge type.
              const status = acme.readStatus(paths);
              const failed = status?.failures ? status.lastError?.challenge : undefined;
              const index = failed ? (usable.indexOf(failed) + 1) % usable.length : 0;
              await acme.orderCertificate(ctx.config, paths, usable[index]!, ctx.log);
            },
          ),
        );
      }
      return async () => {
        for (const stop of stops.reverse()) await stop();
      };
    },
  };
}

/** Listens; on failure logs the cause (permission, address in use) and returns false. */
function listenHttp(server: http.Server, addr: string, log: Logger): Promise<boolean> {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(addr)!;
  const host = m[1] ?? (m[2] || undefined);
  const port = Number(m[3]);
  return new Promise((resolve) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      const why =
        err.code === "EACCES"
          ? `permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep $(command -v node)), or set http.tls.letsencrypt.httpaddr to a higher port that port 80 is forwarded to`
          : err.code === "EADDRINUSE"
            ? "the address is in use by another program (a web server?)"
            : err.message;
      log.error(
        { httpaddr: addr, code: err.code },
        `acme: cannot listen on ${addr} for HTTP-01 and the HTTPS redirect: ${why}; only TLS-ALPN-01 can be used`,
      );
      resolve(false);
    });
    server.listen({ host, port }, () => {
      log.info({ httpaddr: addr }, "acme: HTTP listener for HTTP-01 challenges and redirects to HTTPS");
      resolve(true);
    });
  });
}

/**
 * The plain-HTTP listener: answers HTTP-01 challenges and sends everything else to HTTPS with 301.
 * It never serves the registry's API in plain text.
 */
export function redirectServer(
  config: Config,
  hosts: readonly string[],
  challenge: (token: string) => string | undefined,
): http.Server {
  const publicUrl = config.http.host ? new URL(config.http.host) : undefined;
  const listenPort = Number(/:(\d+)$/.exec(config.http.addr)?.[1] ?? 443);
  // Its requests are a line and a few headers: the header deadline, and as long again for the whole.
  const timeouts = headerTimeoutOptions(connectionLimits(config));
  const options = { ...timeouts, requestTimeout: 2 * timeouts.headersTimeout };
  return http.createServer(options, (req, res) => {
    const target = req.url?.startsWith("/") ? req.url : "/";
    const token = /^\/\.well-known\/acme-challenge\/([^/?#]+)(?:\?.*)?$/.exec(target)?.[1];
    if (token !== undefined) {
      const body = challenge(token);
      res.writeHead(body === undefined ? 404 : 200, { "content-type": "text/plain" });
      res.end(req.method === "HEAD" ? undefined : body);
      return;
    }
    let origin: string;
    if (publicUrl) {
      origin = `https://${publicUrl.host}`;
    } else {
      const asked = (req.headers.host ?? "").replace(/:\d+$/, "").toLowerCase();
      const host = hosts.includes(asked) ? asked : (hosts[0] ?? "localhost");
      origin = `https://${host}${listenPort === 443 ? "" : `:${listenPort}`}`;
    }
    res.writeHead(301, { location: origin + target, "content-length": "0", connection: "close" });
    res.end();
    req.resume();
  });
}

// ------------------------------------------------------------------------------------------------
// TLS-ALPN-01 (RFC 8737) on the TLS listener

/**
 * Connections that offer the ALPN protocol acme-tls/1 (only the CA's validator does) get the
 * validation certificate; every other connection goes to the server untouched. Node picks the
 * certificate before it knows the ALPN protocol, so the ClientHello is read here first and handed
 * on with its bytes put back.
 */
function answerTlsAlpn(
  server: tls.Server,
  material: (host: string) => KeyAndCert | undefined,
  fallback: KeyAndCert,
): () => void {
  const validator = tls.createServer({
    key: fallback.key,
    cert: fallback.cert,
    ALPNProtocols: ["acme-tls/1"],
    SNICallback: (name, cb) => {
      const m = material(name);
      if (!m) return cb(new Error(`no TLS-ALPN-01 challenge for ${name}`), undefined);
      cb(null, tls.createSecureContext({ key: m.key, cert: m.cert }));
    },
  });
  validator.on("secureConnection", (socket) => socket.end());
  validator.on("tlsClientError", () => {});
  const original = server.listeners("connection") as ((socket: net.Socket) => void)[];
  server.removeAllListeners("connection");
  const onConnection = (socket: net.Socket) => {
    peekClientHello(socket, (hello) => {
      if (hello?.alpn.includes("acme-tls/1")) {
        validator.emit("connection", socket);
        return;
      }
      for (const listener of original) listener.call(server, socket);
    });
  };
  server.on("connection", onConnection);
  return () => {
    server.removeListener("connection", onConnection);
    for (const listener of original) server.on("connection", listener);
    validator.close();
  };
}

const MAX_HELLO = 16_384 + 5;

function peekClientHello(socket: net.Socket, done: (hello: ClientHello | null) => void): void {
  let buffered = Buffer.alloc(0);
  let finished = false;
  const finish = (hello: ClientHello | null) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.removeListener("data", onData);
    socket.removeListener("error", onClose);
    socket.removeListener("end", onClose);
    socket.pause();
    if (buffered.length) socket.unshift(buffered);
    done(hello);
  };
  const onData = (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    const parsed = parseClientHello(buffered);
    if (parsed === "more" && buffered.length < MAX_HELLO) return;
    finish(parsed === "more" ? null : parsed);
  };
  const onClose = () => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.destroy();
  };
  const timer = setTimeout(() => finish(null), 10_000);
  timer.unref();
  socket.on("data", onData);
  socket.once("error", onClose);
  socket.once("end", onClose);
}

export interface ClientHello {
  servername?: string;
  alpn: string[];
}

/** SNI and ALPN from the first TLS record; "more" when incomplete, null when not a ClientHello. */
export function parseClientHello(buf: Buffer): ClientHello | null | "more" {
  if (buf.length < 5) return "more";
  if (buf[0] !== 0x16) return null;
  const recordEnd = 5 + buf.readUInt16BE(3);
  if (buf.length < recordEnd) return "more";
  let p = 5;
  const need = (n: number) => p + n <= recordEnd;
  if (!need(4) || buf[p] !== 0x01) return null;
  p += 4 + 2 + 32; // handshake header, client_version, random
  if (!need(1)) return null;
  p += 1 + buf[p]!; // session id
  if (!need(2)) return null;
  p += 2 + buf.readUInt16BE(p); // cipher suites
  if (!need(1)) return null;
  p += 1 + buf[p]!; // compression methods
  const hello: ClientHello = { alpn: [] };
  if (!need(2)) return hello;
  const extEnd = Math.min(p + 2 + buf.readUInt16BE(p), recordEnd);
  p += 2;
  while (p + 4 <= extEnd) {
    const type = buf.readUInt16BE(p);
    const len = buf.readUInt16BE(p + 2);
    const start = p + 4;
    const end = start + len;
    if (end > extEnd) break;
    if (type === 0 && len >= 5) {
      const nameLen = buf.readUInt16BE(start + 3);
      if (buf[start + 2] === 0 && start + 5 + nameLen <= end) {
        hello.servername = buf.toString("latin1", start + 5, start + 5 + nameLen);
      }
    } else if (type === 16 && len >= 2) {
      let q = start + 2;
      while (q < end) {
        const l = buf[q]!;
        if (q + 1 + l > end) break;
        hello.alpn.push(buf.toString("latin1", q + 1, q + 1 + l));
        q += 1 + l;
      }
    }
    p = end;
  }
  return hello;
}
