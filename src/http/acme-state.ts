/**
 * Where the ACME state lives and what the last attempt left in status.json: read by the server
 * (src/http/acme.ts) and by `berth config check`, without loading the ACME client.
 */
import fs from "node:fs";
import path from "node:path";
import type { Config } from "../config/schema.js";

export type ChallengeType = "http-01" | "tls-alpn-01";
export type Letsencrypt = NonNullable<Config["http"]["tls"]["letsencrypt"]>;

export interface AcmePaths {
  dir: string;
  account: string;
  certificate: string;
  status: string;
  http01: string;
  tlsAlpn01: string;
}

/** Where the ACME state lives: <data>/tls/acme, or the directory named by cachefile. */
export function acmePaths(le: Letsencrypt, dataDir: string): AcmePaths {
  let dir = path.join(dataDir, "tls", "acme");
  if (le.cachefile) {
    // registry:2 kept one cache file there; Berth keeps a directory beside it rather than reuse it.
    const isFile = fs.existsSync(le.cachefile) && !fs.statSync(le.cachefile).isDirectory();
    dir = isFile ? `${le.cachefile}.berth` : le.cachefile;
  }
  return {
    dir,
    account: path.join(dir, "account.json"),
    certificate: path.join(dir, "certificate.pem"),
    status: path.join(dir, "status.json"),
    http01: path.join(dir, "http-01"),
    tlsAlpn01: path.join(dir, "tls-alpn-01"),
  };
}

/** Why an attempt failed, in words an operator can act on. */
export type FailureCause =
  | "dns"
  | "port-80-unreachable"
  | "port-443-unreachable"
  | "rate-limit"
  | "directory-unreachable"
  | "directory-untrusted"
  | "rejected"
  | "other";

export interface AcmeStatus {
  directoryurl: string;
  hosts: string[];
  lastAttempt?: number;
  lastSuccess?: number;
  /** Consecutive failures; the wait before the next attempt doubles with each. */
  failures: number;
  lastError?: { cause: FailureCause; message: string; challenge?: ChallengeType; at: number };
  /** No attempt before this time (backoff, or the CA's Retry-After). */
  notBefore?: number;
  certificate?: { notAfter: number; names: string[] };
}

export function readStatus(paths: AcmePaths): AcmeStatus | undefined {
  try {
    return JSON.parse(fs.readFileSync(paths.status, "utf8")) as AcmeStatus;
  } catch {
    return undefined;
  }
}

/**
 * What `berth config check` says about ACME: the certificate in force and the last failure with its
 * cause. Empty when http.tls.letsencrypt is not set.
 */
export function acmeReport(config: Config, dataDir: string): { notes: string[]; problems: string[] } {
  const le = config.http.tls.letsencrypt;
  if (!le) return { notes: [], problems: [] };
  const paths = acmePaths(le, dataDir);
  const status = readStatus(paths);
  const notes = [`acme: state in ${paths.dir}, directory ${le.directoryurl}`];
  const problems: string[] = [];
  if (!status) {
    notes.push("acme: no attempt yet; `berth serve` orders a certificate at start");
    return { notes, problems };
  }
  if (status.certificate) {
    notes.push(
      `acme: certificate for ${status.certificate.names.join(", ")} valid until ${new Date(status.certificate.notAfter).toISOString()}`,
    );
  }
  if (status.failures > 0 && status.lastError) {
    const e = status.lastError;
    problems.push(
      `acme: ${status.failures} failed attempt(s), the last at ${new Date(e.at).toISOString()}${e.challenge ? ` with ${e.challenge}` : ""} (cause: ${e.cause}): ${e.message}` +
        (status.notBefore ? `; next attempt after ${new Date(status.notBefore).toISOString()}` : ""),
    );
  }
  return { notes, problems };
}
