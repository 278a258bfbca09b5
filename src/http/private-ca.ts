/**
 * The private CA of `berth tls init`: a CA and a server certificate signed by it, kept in the data
 * directory, for registries on a LAN with no public name. `berth serve` uses the server certificate
 * when no other is configured and renews it before it expires (src/http/managed-tls.ts).
 *
 *   <data>/tls/ca.crt      the CA certificate (what clients trust; also served at /ca.crt)
 *   <data>/tls/ca.key      the CA's private key (0600; never leaves this directory)
 *   <data>/tls/server.pem  the server's private key, then its certificate and the CA (0600)
 */
import fs from "node:fs";
import path from "node:path";
import {
  bundle,
  fingerprint,
  type KeyAndCert,
  namesOf,
  nominalLifetime,
  unbundle,
  validity,
  writeFileAtomic,
} from "./tls-certs.js";

export const DAY_MS = 86_400_000;
/** The CA lives long: replacing it means every client must trust the new one. */
export const CA_VALID_MS = 20 * 365 * DAY_MS;
/** Server certificates: one year (under the 398 days that browsers and Apple's clients accept). */
export const SERVER_VALID_MS = 365 * DAY_MS;

export interface PrivateCaPaths {
  dir: string;
  caCert: string;
  caKey: string;
  server: string;
}

export function privateCaPaths(dataDir: string): PrivateCaPaths {
  const dir = path.join(dataDir, "tls");
  return {
    dir,
    caCert: path.join(dir, "ca.crt"),
    caKey: path.join(dir, "ca.key"),
    server: path.join(dir, "server.pem"),
  };
}

/** True when `berth tls init` has made a server certificate in this data directory. */
export function hasPrivateCa(dataDir: string): boolean {
  return fs.existsSync(privateCaPaths(dataDir).server);
}

export interface InitResult {
  paths: PrivateCaPaths;
  /** False when an existing CA was kept (clients that trust it keep working). */
  createdCa: boolean;
  names: string[];
  fingerprint: string;
  notAfter: number;
}

function readCa(paths: PrivateCaPaths): KeyAndCert {
  return { key: fs.readFileSync(paths.caKey, "utf8"), cert: fs.readFileSync(paths.caCert, "utf8") };
}

/**
 * Creates the CA (unless one exists: it is kept, so that clients that trust it keep working) and a
 * new server certificate for `names`.
 */
export async function initPrivateCa(
  dataDir: string,
  names: string[],
  options: { serverValidMs?: number; newCa?: boolean } = {},
): Promise<InitResult> {
  const paths = privateCaPaths(dataDir);
  const unique = [...new Set(names.map((n) => n.trim()).filter(Boolean))];
  if (unique.length === 0) throw new Error("name at least one --host or --ip");
  const { createCa, issueServerCert } = await import("./tls-issue.js");
  let createdCa = false;
  let ca: KeyAndCert;
  if (!options.newCa && fs.existsSync(paths.caCert) && fs.existsSync(paths.caKey)) {
    ca = readCa(paths);
  } else {
    ca = await createCa(`Berth private CA (${unique[0]})`, CA_VALID_MS);
    writeFileAtomic(paths.caKey, ca.key, 0o600);
    writeFileAtomic(paths.caCert, ca.cert, 0o644);
    createdCa = true;
  }
  const server = await issueServerCert(ca, unique, options.serverValidMs ?? SERVER_VALID_MS);
  writeFileAtomic(paths.server, bundle(server), 0o600);
  return {
    paths,
    createdCa,
    names: unique,
    fingerprint: fingerprint(ca.cert),
    notAfter: validity(server.cert).notAfter,
  };
}

/** The server certificate in force: names, validity, and when it should be renewed. */
export function serverCertInfo(dataDir: string): {
  names: string[];
  notBefore: number;
  notAfter: number;
  /** The lifetime it was issued with. */
  lifetime: number;
  renewAt: number;
} {
  const { cert } = unbundle(fs.readFileSync(privateCaPaths(dataDir).server, "utf8"));
  const { notBefore, notAfter } = validity(cert);
  const lifetime = nominalLifetime(notBefore, notAfter);
  // Renew when a third of the lifetime is left (four months of a year), like Let's Encrypt's advice.
  return { names: namesOf(cert), notBefore, notAfter, lifetime, renewAt: notAfter - lifetime / 3 };
}

/** Issues a new server certificate for the same names and the same lifetime. */
export async function renewServerCert(dataDir: string): Promise<{ notAfter: number }> {
  const paths = privateCaPaths(dataDir);
  const info = serverCertInfo(dataDir);
  const { issueServerCert } = await import("./tls-issue.js");
  const server = await issueServerCert(readCa(paths), info.names, info.lifetime);
  writeFileAtomic(paths.server, bundle(server), 0o600);
  return { notAfter: validity(server.cert).notAfter };
}

/** What `berth config check` says about the private CA when `berth serve` would use it. */
export function privateCaReport(dataDir: string): string[] {
  if (!hasPrivateCa(dataDir)) return [];
  const paths = privateCaPaths(dataDir);
  try {
    const info = serverCertInfo(dataDir);
    return [
      `private CA: ${paths.caCert} (SHA-256 ${fingerprint(fs.readFileSync(paths.caCert, "utf8"))})`,
      `private CA: server certificate for ${info.names.join(", ")} valid until ${new Date(info.notAfter).toISOString()}, renewed from ${new Date(info.renewAt).toISOString()}`,
    ];
  } catch (err) {
    return [`private CA: ${paths.server} cannot be read: ${(err as Error).message}`];
  }
}
