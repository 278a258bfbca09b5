/**
 * Keys and X.509 certificates for Berth's own TLS: the private CA of `berth tls init`, its server
 * certificates, and the temporary certificate served while the first ACME certificate is ordered.
 *
 * Built on @peculiar/x509 over Node's WebCrypto: a maintained, typed library (it is also what
 * acme-client uses), so that no ASN.1 is written by hand and no openssl runs at runtime. Loaded only
 * when a certificate is made (it takes a few hundred milliseconds to load).
 */
import crypto from "node:crypto";
import net from "node:net";
import * as x509 from "@peculiar/x509";
import { backdateMs, type KeyAndCert } from "./tls-certs.js";

type CryptoKey = crypto.webcrypto.CryptoKey;
type CryptoKeyPair = crypto.webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(crypto.webcrypto as never);

const EC: crypto.webcrypto.EcKeyGenParams & crypto.webcrypto.EcdsaParams = {
  name: "ECDSA",
  namedCurve: "P-256",
  hash: "SHA-256",
};

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
