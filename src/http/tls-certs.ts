/**
 * Keys and X.509 certificates for Berth's own TLS: the private CA of `berth tls init`, its server
 * certificates, and the temporary certificate served while the first ACME certificate is ordered.
 *
 * Built on @peculiar/x509 over Node's WebCrypto: a maintained, typed library (it is also what
 * acme-client uses), so that no ASN.1 is written by hand and no openssl runs at runtime. Loaded only
 * when Berth manages a certificate itself.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import * as x509 from "@peculiar/x509";

type CryptoKey = crypto.webcrypto.CryptoKey;
type CryptoKeyPair = crypto.webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(crypto.webcrypto as never);

const EC: crypto.webcrypto.EcKeyGenParams & crypto.webcrypto.EcdsaParams = {
  name: "ECDSA",
  namedCurve: "P-256",
  hash: "SHA-256",
};

export interface KeyAndCert {
  /** PKCS#8 PEM. */
  key: string;
  /** PEM certificate (followed by its chain, when there is one). */
  cert: string;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString("base64");
  return `-----BEGIN ${label}-----\n${b64.replace(/.{1,64}/g, "$&\n")}-----END ${label}-----\n`;
}

async function newKeys(): Promise<CryptoKeyPair> {
  return (await crypto.webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as CryptoKeyPair;
}

async function exportKey(key: CryptoKey): Promise<string> {
  return pem("PRIVATE KEY", await crypto.webcrypto.subtle.exportKey("pkcs8", key));
}

async function importSigningKey(keyPem: string): Promise<CryptoKey> {
  const der = crypto.createPrivateKey(keyPem).export({ format: "der", type: "pkcs8" });
  return crypto.webcrypto.subtle.importKey("pkcs8", der, EC, false, ["sign"]) as Promise<CryptoKey>;
}

/** A positive random serial number, as hex. */
function serial(): string {
  const bytes = crypto.randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f;
  return bytes.toString("hex");
}

/** Subject alternative names: IP addresses as iPAddress, everything else as dNSName. */
function altNames(names: readonly string[]): x509.JsonGeneralNames {
  return names.map((n) => (net.isIP(n) ? { type: "ip", value: n } : { type: "dns", value: n.toLowerCase() }));
}

/** `cn` must be short: RFC 5280 limits a common name to 64 characters. */
function commonName(text: string): string {
  return `CN=${text.replace(/[,+="\\<>;#]/g, " ").slice(0, 64)}`;
}

function pemOf(cert: x509.X509Certificate): string {
  const text = cert.toString("pem").replace(/\r\n/g, "\n");
  return text.endsWith("\n") ? text : `${text}\n`;
}

/** A CA certificate and key (ECDSA P-256), valid for `validMs` from now. */
export async function createCa(name: string, validMs: number): Promise<KeyAndCert> {
  const keys = await newKeys();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: commonName(name),
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + validMs),
    signingAlgorithm: EC,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { key: await exportKey(keys.privateKey), cert: pemOf(cert) };
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

/** A server certificate for `names` (DNS names and IP addresses), signed by `ca`. */
export async function issueServerCert(
  ca: KeyAndCert,
  names: readonly string[],
  validMs: number,
): Promise<KeyAndCert> {
  if (names.length === 0) throw new Error("a server certificate needs at least one host name or address");
  const caCert = new x509.X509Certificate(ca.cert);
  const keys = await newKeys();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: commonName(names[0]!),
    issuer: caCert.subject,
    notBefore: new Date(now - backdateMs(validMs)),
    notAfter: new Date(now + validMs),
    signingAlgorithm: EC,
    publicKey: keys.publicKey,
    signingKey: await importSigningKey(ca.key),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension(altNames(names), false),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { key: await exportKey(keys.privateKey), cert: pemOf(cert) + ca.cert };
}

/** A throw-away self-signed certificate, served until a real one exists. */
export async function selfSigned(names: readonly string[], validMs: number): Promise<KeyAndCert> {
  const keys = await newKeys();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: commonName(names[0] ?? "berth"),
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + validMs),
    signingAlgorithm: EC,
    keys,
    extensions: names.length ? [new x509.SubjectAlternativeNameExtension(altNames(names), false)] : [],
  });
  return { key: await exportKey(keys.privateKey), cert: pemOf(cert) };
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
export function writeFileAtomic(file: string, content: string | Buffer, mode = 0o600): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
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
