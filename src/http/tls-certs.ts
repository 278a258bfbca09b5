/**
 * PEM files of Berth's own TLS (issue 15): key and chain bundled in one file, written atomically,
 * read back, checked. Certificates are made in src/http/tls-issue.ts.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { makePrivateDir, PRIVATE_FILE_MODE } from "../storage/private-files.js";

export interface KeyAndCert {
  /** PKCS#8 PEM. */
  key: string;
  /** PEM certificate (followed by its chain, when there is one). */
  cert: string;
}

/** How far notBefore is set back against clocks that lag: a minute, less for very short lifetimes. */
export function backdateMs(validMs: number): number {
  return Math.min(60_000, validMs / 10);
}

/** The lifetime a certificate was asked for, from its notBefore and notAfter (undoing backdateMs). */
export function nominalLifetime(notBefore: number, notAfter: number): number {
  const total = notAfter - notBefore;
  return total >= 660_000 ? total - 60_000 : total / 1.1;
}

/** The names (DNS and IP) a certificate is for. */
export function namesOf(certPem: string): string[] {
  const cert = new crypto.X509Certificate(certPem);
  return (cert.subjectAltName ?? "")
    .split(/,\s*/)
    .map((entry) => /^(?:DNS|IP Address):(.+)$/.exec(entry)?.[1])
    .filter((n): n is string => Boolean(n));
}

/** SHA-256 fingerprint of a certificate, as colon-separated upper-case hex (openssl's format). */
export function fingerprint(certPem: string): string {
  return new crypto.X509Certificate(certPem).fingerprint256;
}

/** Writes a file so that a reader sees the old or the new content, never a part: temp, fsync, rename. */
export function writeFileAtomic(file: string, content: string | Buffer, mode = PRIVATE_FILE_MODE): void {
  makePrivateDir(path.dirname(file));
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString("hex")}.tmp`;
  const fd = fs.openSync(tmp, "w", mode);
  try {
    fs.writeSync(fd, typeof content === "string" ? Buffer.from(content) : content);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  try {
    const dir = fs.openSync(path.dirname(file), "r");
    fs.fsyncSync(dir);
    fs.closeSync(dir);
  } catch {}
}

/** Key and certificate chain kept as one PEM file, so that one rename replaces both at once. */
export function bundle(material: KeyAndCert): string {
  return material.key + material.cert;
}

/** Splits a bundle written by `bundle` (the key, then the certificate chain). */
export function unbundle(text: string): KeyAndCert {
  const key =
    /-----BEGIN (?:EC |RSA )?PRIVATE KEY-----[\s\S]+?-----END (?:EC |RSA )?PRIVATE KEY-----\n?/.exec(text);
  const certs = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g);
  if (!key || !certs) throw new Error("expected a private key and a certificate in one PEM file");
  return { key: key[0], cert: certs.join("") };
}

/** Validity of the first certificate of a chain. */
export function validity(certPem: string): { notBefore: number; notAfter: number } {
  const cert = new crypto.X509Certificate(certPem);
  return { notBefore: Date.parse(cert.validFrom), notAfter: Date.parse(cert.validTo) };
}

/** Throws unless the key belongs to the first certificate. */
export function checkPair(material: KeyAndCert): void {
  const cert = new crypto.X509Certificate(material.cert);
  if (!cert.checkPrivateKey(crypto.createPrivateKey(material.key))) {
    throw new Error("the private key does not match the certificate");
  }
}
