/**
 * Berth behind Debian's nginx with the recipe from deploy/nginx/berth.conf (docs/reverse-proxy.md),
 * TLS with a certificate from a CA made here, htpasswd auth in Berth: docker, podman and skopeo push
 * and pull a five-layer image through it; Location headers name the proxy; a 160 MiB body passes.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import https from "node:https";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type Berth, freePort, ROOT, startBerth } from "../helpers/server.js";
import { makePki } from "../integration/auth-fixtures.js";
import { ContainerTools } from "./clients/containers.js";
import { type Dockerd, startDockerd } from "./clients/dockerd.js";
import { requireTool, sleep, waitFor } from "./clients/exec.js";
import { type Image, testImage, writeOciLayout } from "./clients/images.js";
import { cleanupAll } from "./clients/suite.js";

const USER = "pusher";
const PASSWORD = "through-nginx";

let berth: Berth;
let tools: ContainerTools;
let dockerd: Dockerd | undefined;
let nginx: ChildProcess | undefined;
let nginxLogs = "";
let dir: string;
let certDir: string;
let ca: Buffer;
let port: number;
let host: string;
let image: Image;
let src: string;

/** A CA and a server certificate for 127.0.0.1 and localhost. */
function makeCertificates(): void {
  // The test CA and a server certificate chain for 127.0.0.1, made as the TLS tests make them.
  const pki = makePki(dir);
  copyFileSync(pki.serverChain, path.join(dir, "registry.crt"));
  copyFileSync(pki.serverKey, path.join(dir, "registry.key"));
  ca = readFileSync(pki.caCert);
  // containers/image reads *.crt in a --cert-dir as CAs.
  certDir = path.join(dir, "certs.d");
  mkdirSync(certDir);
  writeFileSync(path.join(certDir, "ca.crt"), ca);
}

/** The recipe, with only the addresses and file names changed. */
function renderRecipe(): string {
  let conf = readFileSync(path.join(ROOT, "deploy/nginx/berth.conf"), "utf8");
  const replace = (from: RegExp, to: string) => {
    if (!from.test(conf)) throw new Error(`the nginx recipe no longer has ${from}`);
    conf = conf.replace(from, to);
  };
  replace(/server 127\.0\.0\.1:5000;/, `server 127.0.0.1:${berth.port};`);
  replace(/listen 443 ssl;/, `listen 127.0.0.1:${port} ssl;`);
  replace(/\n\s*listen \[::\]:443 ssl;/, "");
  replace(
    /ssl_certificate\s+\/etc\/nginx\/certs\/registry\.crt;/,
    `ssl_certificate ${path.join(dir, "registry.crt")};`,
  );
  replace(
    /ssl_certificate_key\s+\/etc\/nginx\/certs\/registry\.key;/,
    `ssl_certificate_key ${path.join(dir, "registry.key")};`,
  );
  // The plain-HTTP redirect server is not needed here (and port 80 may be taken).
  replace(/\n# Optional: send plain HTTP[\s\S]*$/, "\n");
  return conf;
}

async function startNginx(): Promise<void> {
  const bin = requireTool("nginx");
  const prefix = path.join(dir, "nginx");
  for (const d of ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
    mkdirSync(path.join(prefix, d), { recursive: true });
  writeFileSync(path.join(prefix, "berth.conf"), renderRecipe());
  writeFileSync(
    path.join(prefix, "nginx.conf"),
    [
      "user root;",
      "daemon off;",
      "worker_processes 1;",
      `pid ${prefix}/nginx.pid;`,
      `error_log ${prefix}/error.log info;`,
      "events { worker_connections 512; }",
      "http {",
      `  access_log ${prefix}/access.log;`,
      `  client_body_temp_path ${prefix}/client_body;`,
      `  proxy_temp_path ${prefix}/proxy;`,
      `  fastcgi_temp_path ${prefix}/fastcgi;`,
      `  uwsgi_temp_path ${prefix}/uwsgi;`,
      `  scgi_temp_path ${prefix}/scgi;`,
      `  include ${prefix}/berth.conf;`,
      "}",
      "",
    ].join("\n"),
  );
  nginx = spawn(
    bin,
    ["-p", prefix, "-c", path.join(prefix, "nginx.conf"), "-e", path.join(prefix, "error.log")],
    {
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    },
  );
  nginx.stdout?.on("data", (c: Buffer) => {
    nginxLogs += c.toString();
  });
  nginx.stderr?.on("data", (c: Buffer) => {
    nginxLogs += c.toString();
  });
  await waitFor(`nginx on 127.0.0.1:${port}`, async () => {
    if (nginx?.exitCode !== null) throw new Error(`nginx exited: ${nginxLogs}${readLog("error.log")}`);
    return (await request("GET", "/v2/")).status === 200;
  });
}

function readLog(name: string): string {
  try {
    return readFileSync(path.join(dir, "nginx", name), "utf8");
  } catch {
    return "";
  }
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** HTTPS through nginx, trusting only the test CA. */
function request(
  method: string,
  pathname: string,
  body?: Buffer | ((req: import("node:http").ClientRequest) => void),
  headers: Record<string, string> = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port,
        method,
        path: pathname,
        ca,
        headers: Object.fromEntries(
          Object.entries({
            authorization: `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString("base64")}`,
            ...headers,
          }).filter(([, v]) => v !== ""),
        ),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    if (typeof body === "function") body(req);
    else req.end(body);
  });
}

beforeAll(async () => {
  tools = ContainerTools.create("berth-e2e-nginx-");
  dir = tools.subdir("proxy");
  makeCertificates();
  const htpasswd = path.join(dir, "htpasswd");
  writeFileSync(htpasswd, execFileSync("htpasswd", ["-Bbn", USER, PASSWORD]));
  berth = await startBerth({
    env: {
      REGISTRY_AUTH: "htpasswd",
      REGISTRY_AUTH_HTPASSWD_REALM: "Registry Realm",
      REGISTRY_AUTH_HTPASSWD_PATH: htpasswd,
    },
  });
  port = await freePort();
  host = `127.0.0.1:${port}`;
  await startNginx();
  image = testImage("nginx-proxy");
  src = tools.subdir("src");
  writeOciLayout(src, { five: image });
});

afterAll(async () => {
  try {
    mkdirSync(path.join(ROOT, "test-output", "e2e"), { recursive: true });
    writeFileSync(
      path.join(ROOT, "test-output", "e2e", "nginx-proxy.berth.log"),
      `${berth?.logs.join("\n") ?? ""}\n`,
    );
    writeFileSync(
      path.join(ROOT, "test-output", "e2e", "nginx-proxy.nginx.log"),
      `${nginxLogs}${readLog("error.log")}`,
    );
  } catch {}
  await cleanupAll(
    () => dockerd?.stop(),
    async () => {
      if (nginx && nginx.exitCode === null) {
        nginx.kill("SIGQUIT");
        await Promise.race([new Promise((r) => nginx!.once("exit", r)), sleep(10_000)]);
        try {
          process.kill(-nginx.pid!, "SIGKILL");
        } catch {}
      }
    },
    () => berth?.cleanup(),
    () => tools?.cleanup(),
  );
}, 120_000);

describe("through nginx with TLS", () => {
  test("the challenge and Location headers name the proxy, not Berth", async () => {
    const challenge = await request("GET", "/v2/", undefined, { authorization: "" });
    expect(challenge.status).toBe(401);
    expect(challenge.headers["www-authenticate"]).toBe('Basic realm="Registry Realm"');
    const start = await request("POST", "/v2/e2e/nginx/loc/blobs/uploads/");
    expect(start.status).toBe(202);
    expect(start.headers.location).toMatch(
      new RegExp(`^https://127\\.0\\.0\\.1:${port}/v2/e2e/nginx/loc/blobs/uploads/`),
    );
  });

  test("a 160 MiB blob streams through in one request (no body limit, no buffering)", async () => {
    const size = 160 * 1024 * 1024;
    const hash = createHash("sha256");
    const chunk = randomBytes(1024 * 1024);
    const start = await request("POST", "/v2/e2e/nginx/big/blobs/uploads/");
    expect(start.status).toBe(202);
    const location = new URL(start.headers.location as string);
    // Chunked, as docker sends layers: the digest is only known at the end.
    for (let i = 0; i < size / chunk.length; i++) hash.update(chunk);
    const digest = `sha256:${hash.digest("hex")}`;
    const patch = await request(
      "PATCH",
      location.pathname + location.search,
      (req) => {
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
      },
      { "content-type": "application/octet-stream" },
    );
    expect(patch.status, patch.body.toString()).toBe(202);
    expect(patch.headers.range).toBe(`0-${size - 1}`);
    const next = new URL(patch.headers.location as string);
    const sep = next.search ? "&" : "?";
    const put = await request("PUT", `${next.pathname}${next.search}${sep}digest=${digest}`, Buffer.alloc(0));
    expect(put.status, put.body.toString()).toBe(201);
    const head = await request("HEAD", `/v2/e2e/nginx/big/blobs/${digest}`);
    expect(head.status).toBe(200);
    expect(head.headers["content-length"]).toBe(String(size));
  });

  test("skopeo pushes and pulls, verifying the certificate", async () => {
    const ref = `docker://${host}/e2e/nginx/skopeo:v1`;
    await tools.skopeo([
      "copy",
      "--preserve-digests",
      "--dest-cert-dir",
      certDir,
      "--dest-creds",
      `${USER}:${PASSWORD}`,
      `oci:${src}:five`,
      ref,
    ]);
    const out = tools.subdir("skopeo-out");
    await tools.skopeo([
      "copy",
      "--src-cert-dir",
      certDir,
      "--src-creds",
      `${USER}:${PASSWORD}`,
      ref,
      `oci:${out}:five`,
    ]);
    const index = JSON.parse(readFileSync(path.join(out, "index.json"), "utf8")) as {
      manifests: { digest: string }[];
    };
    expect(index.manifests[0]?.digest).toBe(image.manifest.digest);
    // Without the CA, the certificate is refused: the test does check TLS.
    const refused = await tools.skopeo(["inspect", "--creds", `${USER}:${PASSWORD}`, ref], {
      allowFailure: true,
    });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/certificate|x509/);
  });

  test("podman pulls what skopeo pushed and pushes it to another repository", async () => {
    const auth = ["--cert-dir", certDir, "--creds", `${USER}:${PASSWORD}`];
    await tools.podman(["pull", ...auth, `${host}/e2e/nginx/skopeo:v1`]);
    await tools.podman(["tag", `${host}/e2e/nginx/skopeo:v1`, `${host}/e2e/nginx/podman:v1`]);
    await tools.podman(["push", ...auth, `${host}/e2e/nginx/podman:v1`]);
    await tools.podman(["rmi", "--all", "--force"]);
    await tools.podman(["pull", ...auth, `${host}/e2e/nginx/podman:v1`]);
    const inspected = JSON.parse(
      (await tools.podman(["image", "inspect", `${host}/e2e/nginx/podman:v1`])).stdout,
    ) as {
      RootFS: { Layers: string[] };
    }[];
    expect(inspected[0]?.RootFS.Layers).toEqual(image.diffIds);
  });

  test("docker logs in, pushes and pulls", async () => {
    dockerd = await startDockerd();
    const d = (args: string[], input?: string) => dockerd!.docker(args, input ? { input } : {});
    // 127.0.0.0/8 is an insecure registry for docker: it speaks TLS to nginx without checking the CA.
    await d(["login", host, "--username", USER, "--password-stdin"], PASSWORD);
    await d(["pull", `${host}/e2e/nginx/skopeo:v1`]);
    await d(["tag", `${host}/e2e/nginx/skopeo:v1`, `${host}/e2e/nginx/docker:v1`]);
    const pushed = await d(["push", `${host}/e2e/nginx/docker:v1`]);
    const digest = /digest: (sha256:[0-9a-f]{64})/.exec(pushed.stdout)?.[1];
    expect(digest).toBeDefined();
    const ids = (await d(["images", "-aq"])).stdout.split("\n").filter(Boolean);
    await d(["rmi", "--force", ...new Set(ids)]);
    const pulled = await d(["pull", `${host}/e2e/nginx/docker:v1`]);
    expect(pulled.stdout).toContain(`Digest: ${digest}`);
    const inspected = JSON.parse((await d(["image", "inspect", `${host}/e2e/nginx/docker:v1`])).stdout) as {
      Id: string;
      RootFS: { Layers: string[] };
    }[];
    expect(inspected[0]?.Id).toBe(image.config.digest);
    expect(inspected[0]?.RootFS.Layers).toEqual(image.diffIds);
    // Berth itself, asked directly, has the tag docker pushed.
    const direct = await fetch(`${berth.url}/v2/e2e/nginx/docker/tags/list`, {
      headers: { authorization: `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString("base64")}` },
    });
    expect(((await direct.json()) as { tags: string[] }).tags).toEqual(["v1"]);
  });

  test("deploy/compose/nginx.conf is the tested recipe with the compose service as upstream", () => {
    const normalize = (text: string) =>
      text
        .split("\n")
        .filter((l) => !l.startsWith("#") && !/listen \[::\]:/.test(l))
        .join("\n")
        .replace("server registry:5000;", "server 127.0.0.1:5000;")
        .trim();
    const recipe = readFileSync(path.join(ROOT, "deploy/nginx/berth.conf"), "utf8");
    const compose = readFileSync(path.join(ROOT, "deploy/compose/nginx.conf"), "utf8");
    expect(normalize(compose)).toBe(normalize(recipe));
  });

  test("nginx saw every request (nothing bypassed the proxy) and logged no body-size errors", () => {
    const access = readLog("access.log");
    expect(access).toContain("PATCH /v2/e2e/nginx/big/blobs/uploads/");
    expect(access).not.toMatch(/" 413 /);
    expect(readLog("error.log")).not.toMatch(/client intended to send too large body/);
  });
});
