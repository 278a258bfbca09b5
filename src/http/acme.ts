/**
 * Certificates from an ACME (RFC 8555) CA, Let's Encrypt by default: http.tls.letsencrypt.
 *
 * The protocol itself is acme-client's (npm `acme-client`: maintained for years, used by many
 * projects, typed, no native code; it handles JWS signing, nonces, account and order objects).
 * This module adds what a registry needs around it: where the state lives, which challenge is
 * answered how across several worker processes, why an attempt failed, and when to try again.
 * Loaded only when http.tls.letsencrypt is configured.
 *
 * State directory (<data>/tls/acme, or http.tls.letsencrypt.cachefile):
 *   account.json               the account key and URL, per directory
 *   certificate.pem            the certificate's key, then the certificate chain (0600)
 *   status.json                the last attempt: when, what failed and why, when to try again
 *   http-01/<token>            key authorizations being validated (read by every worker)
 *   tls-alpn-01/<host>.pem     validation certificates being validated (read by every worker)
 */
import dns from "node:dns/promises";
import fs from "node:fs";
import https from "node:https";
import path from "node:path";
import tls from "node:tls";
import type AcmeClient from "acme-client";
import type { Config } from "../config/schema.js";
import { acmeHosts } from "../config/sections/tls.js";
import { makePrivateDir } from "../storage/private-files.js";
import {
  type AcmePaths,
  type AcmeStatus,
  type ChallengeType,
  type FailureCause,
  type Letsencrypt,
  readStatus,
} from "./acme-state.js";
import { bundle, namesOf, unbundle, validity, writeFileAtomic } from "./tls-certs.js";

export type { AcmePaths, AcmeStatus, ChallengeType, FailureCause, Letsencrypt } from "./acme-state.js";
export { acmePaths, readStatus } from "./acme-state.js";

function writeStatus(paths: AcmePaths, status: AcmeStatus): void {
  writeFileAtomic(paths.status, `${JSON.stringify(status, null, 2)}\n`, 0o644);
}

/** The certificate on disk when it is for exactly these hosts (a change of hosts orders anew). */
export function readCertificate(
  paths: AcmePaths,
  hosts: readonly string[],
): { key: string; cert: string; notBefore: number; notAfter: number } | undefined {
  try {
    const material = unbundle(fs.readFileSync(paths.certificate, "utf8"));
    const names = namesOf(material.cert).map((n) => n.toLowerCase());
    if (hosts.some((h) => !names.includes(h))) return undefined;
    return { ...material, ...validity(material.cert) };
  } catch {
    return undefined;
  }
}

/** When the certificate should be renewed: renewbefore before expiry, else when a third of its life is left. */
export function renewalTime(le: Letsencrypt, cert: { notBefore: number; notAfter: number }): number {
  const life = cert.notAfter - cert.notBefore;
  const before = le.renewbefore ?? life / 3;
  // Never sooner than a tenth into the lifetime: a renewbefore longer than the CA's lifetime must
  // not order in a loop.
  return Math.max(cert.notAfter - before, cert.notBefore + life / 10);
}

/** The next time an attempt is due: renewal time, or at once when there is no certificate, but never during backoff. */
export function nextAttempt(le: Letsencrypt, paths: AcmePaths, hosts: readonly string[]): number {
  const cert = readCertificate(paths, hosts);
  const due = cert ? renewalTime(le, cert) : 0;
  const status = readStatus(paths);
  const sameTarget = status && status.directoryurl === le.directoryurl && sameHosts(status.hosts, hosts);
  return Math.max(due, sameTarget ? (status.notBefore ?? 0) : 0);
}

function sameHosts(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((h) => b.includes(h));
}

/** Backoff after `failures` consecutive failures: 1 minute, doubling, at most 12 hours. */
export function backoffMs(failures: number): number {
  return Math.min(60_000 * 2 ** Math.max(0, failures - 1), 12 * 3_600_000);
}

// ------------------------------------------------------------------------------------------------
// The CA's answers, seen by one interceptor on acme-client's HTTP client

interface Problem {
  type: string;
  detail: string;
  status: number;
  retryAfterMs?: number;
}

let lastProblem: Problem | undefined;
let configuredFor: string | undefined;

function retryAfterMs(header: unknown): number | undefined {
  if (typeof header !== "string" || header === "") return undefined;
  if (/^\d+$/.test(header)) return Number(header) * 1000;
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

type Acme = typeof AcmeClient;

/**
 * acme-client, loaded when an order starts: it takes a good part of a second to load, which a worker
 * that only serves a certificate from disk should not pay at start.
 */
async function loadAcme(): Promise<Acme> {
  const mod = (await import("acme-client")) as Acme & { default?: Acme };
  return mod.default ?? mod;
}

/** Points acme-client's HTTP client at the CAs to trust and records the CA's problem documents. */
function configureHttp(acme: Acme, le: Letsencrypt): void {
  const key = JSON.stringify(le.directorycas);
  if (configuredFor === key) return;
  const extra = le.directorycas.map((file) => {
    try {
      return fs.readFileSync(file, "utf8");
    } catch (err) {
      throw new Error(`http.tls.letsencrypt.directorycas: cannot read ${file}: ${(err as Error).message}`);
    }
  });
  acme.axios.defaults.httpsAgent = new https.Agent({
    ca: extra.length ? [...tls.rootCertificates, ...extra] : undefined,
    keepAlive: true,
  });
  // Berth retries whole attempts itself, honouring Retry-After and backing off (see serve's
  // scheduler), rather than sleeping inside a request for as long as a rate limit lasts.
  (
    acme.axios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number } }
  ).acmeSettings.retryMaxAttempts = 0;
  if (configuredFor === undefined) {
    acme.axios.interceptors.response.use((response) => {
      const data = response.data as {
        type?: unknown;
        detail?: unknown;
        error?: { type?: unknown; detail?: unknown };
      };
      const problem =
        data && typeof data === "object"
          ? typeof data.type === "string" && data.type.startsWith("urn:")
            ? data
            : data.error
          : undefined;
      const type = typeof problem?.type === "string" ? problem.type : "";
      // acme-client retries a bad nonce itself; that is no cause of a failure.
      if ((response.status >= 400 || type) && !type.endsWith(":badNonce")) {
        lastProblem = {
          type,
          detail: typeof problem?.detail === "string" ? problem.detail : `HTTP ${response.status}`,
          status: response.status,
          retryAfterMs: retryAfterMs(response.headers["retry-after"]),
        };
      }
      return response;
    });
  }
  configuredFor = key;
}

/** Classifies a failed attempt from the error and the CA's last problem document. */
export function classify(
  err: unknown,
  challenge: ChallengeType | undefined,
  problem: Problem | undefined = lastProblem,
): { cause: FailureCause; message: string; retryAfterMs?: number } {
  const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const message = e?.message ?? String(err);
  const code = e?.code ?? e?.cause?.code ?? "";
  const type = problem?.type.replace("urn:ietf:params:acme:error:", "") ?? "";
  if (err instanceof DnsError) return { cause: "dns", message };
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|unable to verify/i.test(code + message)) {
    return {
      cause: "directory-untrusted",
      message: `the ACME directory's TLS certificate is not trusted (${message}); add its CA with http.tls.letsencrypt.directorycas`,
    };
  }
  if (/ENOTFOUND|ECONNREFUSED|ETIMEDOUT|ECONNRESET|EAI_AGAIN|EHOSTUNREACH/.test(code) && !type) {
    return { cause: "directory-unreachable", message: `cannot reach the ACME directory: ${message}` };
  }
  if (type === "rateLimited" || problem?.status === 429) {
    return {
      cause: "rate-limit",
      message: `rate limited by the CA: ${problem?.detail ?? message}`,
      retryAfterMs: problem?.retryAfterMs,
    };
  }
  if (type === "dns") return { cause: "dns", message: `DNS: ${problem?.detail ?? message}` };
  if (type === "connection" || type === "tls" || type === "incorrectResponse" || type === "unauthorized") {
    const where =
      challenge === "tls-alpn-01"
        ? "port 443 unreachable (TLS-ALPN-01: the CA connects to port 443 of each host name; forward it to Berth's TLS port)"
        : "port 80 unreachable (HTTP-01: the CA connects to port 80 of each host name; forward it to http.tls.letsencrypt.httpaddr)";
    return {
      cause: challenge === "tls-alpn-01" ? "port-443-unreachable" : "port-80-unreachable",
      message: `${where}: ${problem?.detail ?? message}`,
    };
  }
  if (type) return { cause: "rejected", message: `the CA refused (${type}): ${problem?.detail ?? message}` };
  return { cause: "other", message, retryAfterMs: problem?.retryAfterMs };
}

class DnsError extends Error {}

/** Every host must resolve before an order: a failed validation counts against the CA's limits. */
async function checkDns(hosts: readonly string[]): Promise<void> {
  for (const host of hosts) {
    try {
      await dns.lookup(host);
    } catch (err) {
      throw new DnsError(
        `DNS: ${host} does not resolve (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); point its A/AAAA record at this server`,
      );
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Ordering

interface Account {
  directoryurl: string;
  key: string;
  url?: string;
}

async function loadAccount(acme: Acme, paths: AcmePaths, directoryurl: string): Promise<Account> {
  try {
    const accounts = JSON.parse(fs.readFileSync(paths.account, "utf8")) as Account[];
    const found = accounts.find((a) => a.directoryurl === directoryurl);
    if (found) return found;
  } catch {}
  return { directoryurl, key: (await acme.crypto.createPrivateEcdsaKey("P-256")).toString() };
}

function saveAccount(paths: AcmePaths, account: Account): void {
  let accounts: Account[] = [];
  try {
    accounts = JSON.parse(fs.readFileSync(paths.account, "utf8")) as Account[];
  } catch {}
  accounts = [...accounts.filter((a) => a.directoryurl !== account.directoryurl), account];
  writeFileAtomic(paths.account, `${JSON.stringify(accounts, null, 2)}\n`, 0o600);
}

export interface OrderLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/**
 * Orders a certificate for the configured hosts with one challenge type, writes it, and records the
 * outcome in status.json (with the cause and the time of the next attempt after a failure). Call
 * with the order lease held: one process orders at a time.
 */
export async function orderCertificate(
  config: Config,
  paths: AcmePaths,
  challenge: ChallengeType,
  log: OrderLog,
): Promise<{ ok: boolean; notAfter?: number }> {
  const le = config.http.tls.letsencrypt!;
  const hosts = acmeHosts(config);
  const previous = readStatus(paths);
  const sameTarget =
    previous && previous.directoryurl === le.directoryurl && sameHosts(previous.hosts, hosts);
  const status: AcmeStatus = {
    directoryurl: le.directoryurl,
    hosts,
    failures: sameTarget ? previous.failures : 0,
    lastSuccess: sameTarget ? previous.lastSuccess : undefined,
    certificate: sameTarget ? previous.certificate : undefined,
    lastAttempt: Date.now(),
  };
  lastProblem = undefined;
  makePrivateDir(paths.dir);
  log.info({ hosts, challenge, directory: le.directoryurl }, "acme: ordering a certificate");
  try {
    const acme = await loadAcme();
    configureHttp(acme, le);
    await checkDns(hosts);
    const account = await loadAccount(acme, paths, le.directoryurl);
    const client = new acme.Client({
      directoryUrl: le.directoryurl,
      accountKey: account.key,
      accountUrl: account.url,
      backoffAttempts: 12,
      backoffMin: 500,
      backoffMax: 10_000,
    });
    const key = await acme.crypto.createPrivateEcdsaKey("P-256");
    const [, csr] = await acme.crypto.createCsr({ commonName: hosts[0], altNames: hosts }, key);
    const written: string[] = [];
    const cert = await client
      .auto({
        csr,
        email: le.email,
        termsOfServiceAgreed: true,
        challengePriority: [challenge],
        // The CA's own check says more than a check from here, which NAT and split DNS fool.
        skipChallengeVerification: true,
        challengeCreateFn: async (authz, ch, keyAuthorization) => {
          const type = ch.type as string;
          if (type === "http-01") {
            const file = path.join(paths.http01, path.basename(ch.token));
            writeFileAtomic(file, keyAuthorization, 0o644);
            written.push(file);
          } else if (type === "tls-alpn-01") {
            const [alpnKey, alpnCert] = await acme.crypto.createAlpnCertificate(
              authz,
              keyAuthorization,
              await acme.crypto.createPrivateEcdsaKey("P-256"),
            );
            const file = path.join(paths.tlsAlpn01, `${authz.identifier.value.toLowerCase()}.pem`);
            writeFileAtomic(file, bundle({ key: alpnKey.toString(), cert: alpnCert.toString() }), 0o600);
            written.push(file);
          } else {
            throw new Error(`unexpected challenge type ${type}`);
          }
        },
        challengeRemoveFn: async () => {},
      })
      .finally(() => {
        for (const file of written) fs.rmSync(file, { force: true });
      });
    account.url = client.getAccountUrl();
    saveAccount(paths, account);
    writeFileAtomic(paths.certificate, bundle({ key: key.toString(), cert }), 0o600);
    const { notAfter } = validity(cert);
    status.failures = 0;
    status.lastSuccess = Date.now();
    status.certificate = { notAfter, names: namesOf(cert) };
    status.notBefore = undefined;
    writeStatus(paths, status);
    log.info({ hosts, challenge, notAfter: new Date(notAfter).toISOString() }, "acme: certificate issued");
    return { ok: true, notAfter };
  } catch (err) {
    const failure = classify(err, challenge);
    status.failures += 1;
    const wait = Math.max(backoffMs(status.failures), failure.retryAfterMs ?? 0);
    status.notBefore = Date.now() + wait;
    status.lastError = { cause: failure.cause, message: failure.message, challenge, at: Date.now() };
    writeStatus(paths, status);
    log.error(
      {
        hosts,
        challenge,
        cause: failure.cause,
        failures: status.failures,
        retryAt: new Date(status.notBefore).toISOString(),
      },
      `acme: could not obtain a certificate: ${failure.message}`,
    );
    return { ok: false };
  }
}

/** The key authorization for an HTTP-01 token, if one is being validated. */
export function http01Response(paths: AcmePaths, token: string): string | undefined {
  if (!/^[A-Za-z0-9_-]{1,256}$/.test(token)) return undefined;
  try {
    return fs.readFileSync(path.join(paths.http01, token), "utf8");
  } catch {
    return undefined;
  }
}

/** The TLS-ALPN-01 validation certificate for a host, if one is being validated. */
export function tlsAlpn01Material(paths: AcmePaths, host: string): { key: string; cert: string } | undefined {
  const name = host.toLowerCase();
  if (!/^[a-z0-9.-]{1,253}$/.test(name) || name.includes("..")) return undefined;
  try {
    return unbundle(fs.readFileSync(path.join(paths.tlsAlpn01, `${name}.pem`), "utf8"));
  } catch {
    return undefined;
  }
}
