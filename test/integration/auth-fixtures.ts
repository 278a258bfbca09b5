// Shared by the auth tests (unit, integration, e2e): a test PKI made with openssl, htpasswd files,
// and small HTTP helpers. Nothing here is a test by itself.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import http2 from "node:http2";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import bcrypt from "bcryptjs";

export function tmp(prefix = "berth-auth-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

export interface Pki {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  /** Server certificate followed by the intermediate (a chain file). */
  serverChain: string;
  serverKey: string;
  clientCaCert: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate from a CA the server does not trust. */
  strangerCert: string;
  strangerKey: string;
  /** Issues another server certificate (new serial) into the given paths. */
  reissueServer(certPath: string, keyPath: string, cn: string): void;
}

/**
 * A root CA, an intermediate CA that signs the server certificate (so the served file is a chain),
 * a client CA with one client certificate, and a stranger certificate. SANs: 127.0.0.1, ::1, localhost.
 */
export function makePki(dir = tmp("berth-pki-")): Pki {
  const ext = path.join(dir, "ext.cnf");
  fs.writeFileSync(
    ext,
    [
      "[ca]",
      "basicConstraints=critical,CA:TRUE",
      "keyUsage=critical,keyCertSign,cRLSign",
      "[server]",
      "basicConstraints=CA:FALSE",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      "extendedKeyUsage=serverAuth",
      "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost",
      "[client]",
      "basicConstraints=CA:FALSE",
      "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=clientAuth",
      "",
    ].join("\n"),
  );
  const key = (name: string) =>
    openssl(
      ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", `${name}.key`],
      dir,
    );
  const selfSigned = (name: string, cn: string) =>
    openssl(
      [
        "req",
        "-x509",
        "-new",
        "-key",
        `${name}.key`,
        "-subj",
        `/CN=${cn}`,
        "-days",
        "2",
        "-out",
        `${name}.crt`,
        "-extensions",
        "ca",
        "-config",
        ext,
      ],
      dir,
    );
  const sign = (name: string, cn: string, ca: string, section: string, out = `${name}.crt`) => {
    openssl(["req", "-new", "-key", `${name}.key`, "-subj", `/CN=${cn}`, "-out", `${name}.csr`], dir);
    openssl(
      [
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        `${ca}.crt`,
        "-CAkey",
        `${ca}.key`,
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        out,
        "-extfile",
        ext,
        "-extensions",
        section,
      ],
      dir,
    );
  };
  // openssl req -x509 needs a config with a [req] section for -extensions; give it a minimal one.
  fs.appendFileSync(ext, "[req]\ndistinguished_name=dn\n[dn]\n");
  key("ca");
  selfSigned("ca", "Berth Test Root CA");
  key("intermediate");
  sign("intermediate", "Berth Test Intermediate CA", "ca", "ca");
  key("server");
  sign("server", "berth-test-server", "intermediate", "server");
  fs.writeFileSync(
    path.join(dir, "server-chain.crt"),
    fs.readFileSync(path.join(dir, "server.crt"), "utf8") +
      fs.readFileSync(path.join(dir, "intermediate.crt"), "utf8"),
  );
  key("clientca");
  selfSigned("clientca", "Berth Test Client CA");
  key("client");
  sign("client", "berth-test-client", "clientca", "client");
  key("strangerca");
  selfSigned("strangerca", "Somebody Else's CA");
  key("stranger");
  sign("stranger", "stranger", "strangerca", "client");
  const p = (f: string) => path.join(dir, f);
  return {
    dir,
    caCert: p("ca.crt"),
    caKey: p("ca.key"),
    serverCert: p("server.crt"),
    serverChain: p("server-chain.crt"),
    serverKey: p("server.key"),
    clientCaCert: p("clientca.crt"),
    clientCert: p("client.crt"),
    clientKey: p("client.key"),
    strangerCert: p("stranger.crt"),
    strangerKey: p("stranger.key"),
    reissueServer(certPath: string, keyPath: string, cn: string) {
      const name = `server-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
      key(name);
      sign(name, cn, "intermediate", "server");
      const chain =
        fs.readFileSync(p(`${name}.crt`), "utf8") + fs.readFileSync(p("intermediate.crt"), "utf8");
      // Key first, then certificate, each replaced by rename as certbot-like tools do.
      fs.copyFileSync(p(`${name}.key`), `${keyPath}.new`);
      fs.renameSync(`${keyPath}.new`, keyPath);
      fs.writeFileSync(`${certPath}.new`, chain);
      fs.renameSync(`${certPath}.new`, certPath);
    },
  };
}

/** An htpasswd text for the given users (bcrypt cost 4, `$2y$` as Apache writes it, unless cost given). */
export function htpasswdText(users: Record<string, string>, cost = 4): string {
  return Object.entries(users)
    .map(([u, pw]) => `${u}:${bcrypt.hashSync(pw, cost).replace(/^\$2b\$/, "$2y$")}`)
    .join("\n")
    .concat("\n");
}

export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}

export interface SimpleResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** For TLS connections: the certificate the server presented. */
  peerSubject?: string;
  alpn?: string | false;
}

/** One HTTPS/1.1 request with a given CA (and optional client certificate). */
export function httpsRequest(
  url: string,
  options: {
    ca?: string | Buffer;
    cert?: Buffer;
    key?: Buffer;
    method?: string;
    headers?: Record<string, string>;
  } = {},
): Promise<SimpleResponse> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: options.method ?? "GET",
        headers: options.headers,
        ca: options.ca,
        cert: options.cert,
        key: options.key,
        agent: false,
        ALPNProtocols: ["http/1.1"],
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const socket = res.socket as import("node:tls").TLSSocket;
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString("utf8"),
            peerSubject: socket.getPeerCertificate?.()?.subject?.CN as string | undefined,
            alpn: socket.alpnProtocol,
          });
        });
      },
    );
    req.on("error", reject);
    req.end();
  });
}

/** One HTTP/2 request (ALPN h2) with a given CA. */
export function http2Request(
  url: string,
  options: { ca?: string | Buffer; cert?: Buffer; key?: Buffer; headers?: Record<string, string> } = {},
): Promise<SimpleResponse> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const session = http2.connect(u.origin, { ca: options.ca, cert: options.cert, key: options.key });
    session.on("error", reject);
    const req = session.request({ ":path": u.pathname + u.search, ...(options.headers ?? {}) });
    let status = 0;
    let headers: Record<string, string | string[] | undefined> = {};
    req.on("response", (h) => {
      status = Number(h[":status"]);
      headers = h as Record<string, string | string[] | undefined>;
    });
    const chunks: Buffer[] = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const socket = session.socket as import("node:tls").TLSSocket;
      const result = {
        status,
        headers,
        body: Buffer.concat(chunks).toString("utf8"),
        peerSubject: socket.getPeerCertificate?.()?.subject?.CN as string | undefined,
        alpn: socket.alpnProtocol,
      };
      session.close();
      resolve(result);
    });
    req.on("error", reject);
    req.end();
  });
}

export async function waitFor<T>(
  fn: () => Promise<T> | T,
  ok: (v: T) => boolean,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T = await fn();
  while (!ok(last) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    last = await fn();
  }
  return last;
}
