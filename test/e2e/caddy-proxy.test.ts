/**
 * Berth behind Caddy with the recipe from deploy/caddy/Caddyfile (docs/reverse-proxy.md): TLS with
 * a certificate from a CA made here instead of ACME, otherwise unchanged. skopeo pushes and pulls a
 * five-layer image through it, Location headers name Caddy's address, and a 160 MiB chunked body
 * passes in one request.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import type { ClientRequest } from "node:http";
import https from "node:https";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type Berth, freePort, ROOT, startBerth } from "../helpers/server.js";
import { makePki } from "../integration/auth-fixtures.js";
import { ContainerTools } from "./clients/containers.js";
import { findTool, sleep, waitFor } from "./clients/exec.js";
import { type Image, testImage, writeOciLayout } from "./clients/images.js";
import { cleanupAll } from "./clients/suite.js";

const caddyBin = findTool("caddy");

let berth: Berth;
let tools: ContainerTools;
let caddy: ChildProcess | undefined;
let caddyLogs = "";
let dir: string;
let certDir: string;
let ca: Buffer;
let port: number;
let host: string;
let image: Image;
let src: string;

function renderRecipe(): string {
  let conf = readFileSync(path.join(ROOT, "deploy/caddy/Caddyfile"), "utf8");
  const replace = (from: RegExp, to: string) => {
    if (!from.test(conf)) throw new Error(`the Caddy recipe no longer has ${from}`);
    conf = conf.replace(from, to);
  };
  replace(
    /^registry\.example\.com \{/m,
    `https://127.0.0.1:${port} {\n\ttls ${dir}/registry.crt ${dir}/registry.key`,
  );
  replace(/reverse_proxy 127\.0\.0\.1:5000 \{/, `reverse_proxy 127.0.0.1:${berth.port} {`);
  return `{\n\tadmin off\n\tauto_https disable_redirects\n\tstorage file_system ${dir}/caddy-data\n}\n\n${conf}`;
}

function request(method: string, pathname: string, body?: Buffer | ((req: ClientRequest) => void)) {
  return new Promise<{
    status: number;
    headers: Record<string, string | string[] | undefined>;
    body: Buffer;
  }>((resolve, reject) => {
    const req = https.request({ host: "127.0.0.1", port, method, path: pathname, ca }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    if (typeof body === "function") body(req);
    else req.end(body);
  });
}

beforeAll(async () => {
  if (!caddyBin) return;
  tools = ContainerTools.create("berth-e2e-caddy-");
  dir = tools.subdir("proxy");
  // The test CA and a server certificate chain for 127.0.0.1, made as the TLS tests make them.
  const pki = makePki(dir);
  copyFileSync(pki.serverChain, path.join(dir, "registry.crt"));
  copyFileSync(pki.serverKey, path.join(dir, "registry.key"));
  ca = readFileSync(pki.caCert);
  certDir = path.join(dir, "certs.d");
  mkdirSync(certDir);
  writeFileSync(path.join(certDir, "ca.crt"), ca);

  berth = await startBerth();
  port = await freePort();
  host = `127.0.0.1:${port}`;
  const caddyfile = path.join(dir, "Caddyfile");
  writeFileSync(caddyfile, renderRecipe());
  caddy = spawn(caddyBin, ["run", "--config", caddyfile, "--adapter", "caddyfile"], {
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
    env: {
      ...process.env,
      HOME: dir,
      XDG_DATA_HOME: path.join(dir, "xdg-data"),
      XDG_CONFIG_HOME: path.join(dir, "xdg-config"),
    },
  });
  caddy.stdout?.on("data", (c: Buffer) => {
    caddyLogs += c.toString();
  });
  caddy.stderr?.on("data", (c: Buffer) => {
    caddyLogs += c.toString();
  });
  await waitFor(`caddy on ${host}`, async () => {
    if (caddy?.exitCode !== null) throw new Error(`caddy exited:\n${caddyLogs}`);
    return (await request("GET", "/v2/")).status === 200;
  });
  image = testImage("caddy-proxy");
  src = tools.subdir("src");
  writeOciLayout(src, { five: image });
});

afterAll(async () => {
  await cleanupAll(
    async () => {
      if (caddy && caddy.exitCode === null) {
        caddy.kill("SIGTERM");
        await Promise.race([new Promise((r) => caddy!.once("exit", r)), sleep(10_000)]);
        try {
          process.kill(-caddy.pid!, "SIGKILL");
        } catch {}
      }
    },
    () => berth?.cleanup(),
    () => tools?.cleanup(),
  );
}, 60_000);

describe.skipIf(!caddyBin)("through Caddy with TLS", () => {
  test("Location headers name Caddy's address", async () => {
    const start = await request("POST", "/v2/e2e/caddy/loc/blobs/uploads/");
    expect(start.status).toBe(202);
    expect(start.headers.location).toMatch(
      new RegExp(`^https://127\\.0\\.0\\.1:${port}/v2/e2e/caddy/loc/blobs/uploads/`),
    );
  });

  test("a 160 MiB chunked body passes in one request", async () => {
    const size = 160 * 1024 * 1024;
    const chunk = randomBytes(1024 * 1024);
    const hash = createHash("sha256");
    for (let i = 0; i < size / chunk.length; i++) hash.update(chunk);
    const digest = `sha256:${hash.digest("hex")}`;
    const start = await request("POST", "/v2/e2e/caddy/big/blobs/uploads/");
    const location = new URL(start.headers.location as string);
    const patch = await request("PATCH", location.pathname + location.search, (req) => {
      let sent = 0;
      const pump = () => {
        while (sent < size) {
          sent += chunk.length;
          if (!req.write(chunk)) {
            req.once("drain", pump);
            return;
          }
        }
        req.end();
      };
      pump();
    });
    expect(patch.status, patch.body.toString()).toBe(202);
    expect(patch.headers.range).toBe(`0-${size - 1}`);
    const next = new URL(patch.headers.location as string);
    const put = await request(
      "PUT",
      `${next.pathname}${next.search}${next.search ? "&" : "?"}digest=${digest}`,
      Buffer.alloc(0),
    );
    expect(put.status, put.body.toString()).toBe(201);
  });

  test("skopeo pushes and pulls, verifying the certificate", async () => {
    const ref = `docker://${host}/e2e/caddy/skopeo:v1`;
    await tools.skopeo(["copy", "--preserve-digests", "--dest-cert-dir", certDir, `oci:${src}:five`, ref]);
    const out = tools.subdir("out");
    await tools.skopeo(["copy", "--src-cert-dir", certDir, ref, `oci:${out}:five`]);
    const index = JSON.parse(readFileSync(path.join(out, "index.json"), "utf8")) as {
      manifests: { digest: string }[];
    };
    expect(index.manifests[0]?.digest).toBe(image.manifest.digest);
    const tags = await fetch(`${berth.url}/v2/e2e/caddy/skopeo/tags/list`);
    expect(((await tags.json()) as { tags: string[] }).tags).toEqual(["v1"]);
  });
});
