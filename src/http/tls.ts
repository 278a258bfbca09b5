import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type tls from "node:tls";
import type { FastifyServerOptions } from "fastify";
import type { Logger } from "pino";
import { watchFiles } from "../auth/file-watch.js";
import type { Config } from "../config/schema.js";

const TLS_VERSIONS: Record<string, tls.SecureVersion> = {
  "tls1.0": "TLSv1",
  "tls1.1": "TLSv1.1",
  "tls1.2": "TLSv1.2",
  "tls1.3": "TLSv1.3",
};

export interface TlsMaterial {
  key: Buffer;
  /** The certificate followed by its chain, as one PEM file. */
  cert: Buffer;
  /** CA certificates that client certificates must chain to (mutual TLS). */
  ca?: Buffer[];
  minVersion: tls.SecureVersion;
}

/** http.tls.minimumtls as Node names it (TLS 1.2 by default). */
export function tlsMinVersion(config: Config): tls.SecureVersion {
  const minimum = config.http.tls.minimumtls;
  const minVersion = minimum ? TLS_VERSIONS[minimum.toLowerCase()] : "TLSv1.2";
  if (!minVersion) {
    throw new Error(
      `http.tls.minimumtls must be one of ${Object.keys(TLS_VERSIONS).join(", ")}, got "${minimum}"`,
    );
  }
  return minVersion;
}

/**
 * Whether Berth manages its certificate itself (src/http/managed-tls.ts, loaded only then): from an
 * ACME CA (http.tls.letsencrypt), or from the private CA that `berth tls init` left in the data
 * directory. Certificate files named by the configuration come first.
 */
export function managedTlsMode(config: Config, dataDir: string): "acme" | "private-ca" | undefined {
  if (tlsFiles(config)) return undefined;
  if (config.http.tls.letsencrypt) return "acme";
  if (fs.existsSync(path.join(dataDir, "tls", "server.pem"))) return "private-ca";
  return undefined;
}

function tlsFiles(config: Config): { certificate: string; key: string; clientcas: string[] } | undefined {
  const t = config.http.tls;
  if (!t?.certificate && !t?.key) return undefined;
  if (!t.certificate || !t.key) {
    throw new Error("TLS needs both http.tls.certificate and http.tls.key (--tls-cert and --tls-key)");
  }
  return { certificate: t.certificate, key: t.key, clientcas: t.clientcas ?? [] };
}

/** Reads certificate, key and client CAs named by the configuration; undefined when TLS is off. */
export function readTlsMaterial(config: Config): TlsMaterial | undefined {
  const files = tlsFiles(config);
  if (!files) return undefined;
  const minVersion = tlsMinVersion(config);
  const read = (file: string, what: string) => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new Error(`cannot read TLS ${what} ${file}: ${(err as Error).message}`);
    }
  };
  const material: TlsMaterial = {
    key: read(files.key, "key"),
    cert: read(files.certificate, "certificate"),
    minVersion,
  };
  if (files.clientcas.length > 0) material.ca = files.clientcas.map((f) => read(f, "client CA bundle"));
  return material;
}

/** Checks that a key and certificate belong together (and parse), as the TLS stack will. */
function checkMaterial(material: TlsMaterial): void {
  const key = crypto.createPrivateKey(material.key);
  const cert = new crypto.X509Certificate(material.cert);
  if (!cert.checkPrivateKey(key)) throw new Error("the TLS key does not match the certificate");
}

/**
 * Fastify server options for TLS: HTTP/2 with HTTP/1.1 fallback (ALPN), the certificate with its
 * chain, and, when http.tls.clientcas names CA bundles, required client certificates (mutual TLS).
 * Undefined when no certificate is configured.
 */
export function tlsServerOptions(config: Config):
  | (Partial<FastifyServerOptions> & {
      http2: true;
      https: {
        allowHTTP1: true;
        key: Buffer;
        cert: Buffer;
        ca?: Buffer[];
        requestCert: boolean;
        rejectUnauthorized: boolean;
        minVersion: tls.SecureVersion;
      };
    })
  | undefined {
  const material = readTlsMaterial(config);
  if (!material) return undefined;
  checkMaterial(material);
  const mutual = material.ca !== undefined;
  return {
    http2: true,
    https: {
      allowHTTP1: true,
      key: material.key,
      cert: material.cert,
      ...(mutual ? { ca: material.ca } : {}),
      requestCert: mutual,
      rejectUnauthorized: mutual,
      minVersion: material.minVersion,
    },
  };
}

interface SecureContextTarget {
  setSecureContext(options: tls.SecureContextOptions): void;
}

function targetOf(server: unknown): SecureContextTarget | undefined {
  const candidates = [server, (server as { server?: unknown } | null)?.server];
  for (const c of candidates) {
    if (c && typeof (c as SecureContextTarget).setSecureContext === "function")
      return c as SecureContextTarget;
  }
  return undefined;
}

/**
 * Reloads certificate, key and client CAs when their files change (renewals, replaced symlinks),
 * without a restart: new connections get the new certificate, open ones keep theirs. A broken or
 * half-written pair is logged and the previous one stays in use. `server` is the Fastify instance
 * or its node server. Returns a function that stops watching.
 */
export function watchTls(server: unknown, config: Config, log?: Logger): () => void {
  const files = tlsFiles(config);
  const target = targetOf(server);
  if (!files || !target) return () => {};
  const reload = (announce: boolean) => {
    try {
      const material = readTlsMaterial(config)!;
      checkMaterial(material);
      target.setSecureContext({
        key: material.key,
        cert: material.cert,
        ...(material.ca ? { ca: material.ca } : {}),
        minVersion: material.minVersion,
      });
      if (!announce) return;
      const cert = new crypto.X509Certificate(material.cert);
      log?.info({ subject: cert.subject, validTo: cert.validTo }, "TLS certificate reloaded");
    } catch (err) {
      log?.warn(
        { err: (err as Error).message },
        "TLS files changed but could not be loaded; keeping the previous certificate",
      );
    }
  };
  const stop = watchFiles([files.certificate, files.key, ...files.clientcas], () => reload(true), {
    pollMs: 2_000,
    debounceMs: 200,
  });
  // The files may have changed between the server's first read of them and the watcher's first look
  // (a worker that starts slowly while a certificate is renewed): read them once more, now that any
  // later change is seen, so that no worker keeps serving the older pair.
  reload(false);
  return stop;
}
