/**
 * Issue 22: the container image. deploy/Dockerfile itself is built, by a dockerd of this file's own,
 * with local base images (test/e2e/clients/base-image.ts: debootstrap and the host's Node, since no
 * image can be pulled) as its NODE_IMAGE and BUILD_IMAGE arguments. Then, with that image alone:
 *  - what the image is: berth on the PATH, a non-root user, port, volume, healthcheck, all three addons,
 *    no compilers, source maps or TypeScript;
 *  - the seed recipe, a compose file as registry:2 users write it (htpasswd, deletes on, a named volume
 *    on /var/lib/registry, port 5000), run by Debian's docker-compose: a wrong password refused, push
 *    and pull with docker and skopeo, the healthcheck healthy, the data owned by the image's user, a
 *    request in flight finished across `docker-compose stop`, restart and `down` + `up` keep everything;
 *  - a volume that Distribution 2.8 (`docker-registry`, as root on the host) filled: the container says
 *    what to chown, and once that is done serves every image Distribution stored;
 *  - the compose files under deploy/ are valid for docker-compose.
 * Skipped only where docker cannot run at all (not root, or no dockerd).
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { freePort, ROOT } from "../helpers/server.js";
import { buildLocalBase } from "./clients/base-image.js";
import { ContainerTools } from "./clients/containers.js";
import { type Dockerd, startDockerd } from "./clients/dockerd.js";
import { findTool, type RunOptions, requireTool, run, sleep, waitFor } from "./clients/exec.js";
import { type Image, testImage, writeOciLayout } from "./clients/images.js";
import { startDistribution } from "./clients/registry.js";
import { cleanupAll, saveLogs } from "./clients/suite.js";

const canRunDocker = process.getuid?.() === 0 && findTool("dockerd") !== null;

const IMAGE = "berth-e2e/berth:test";
const USER = "admin";
const PASSWORD = "a password for e2e";
const UID = "10001";

let dockerd: Dockerd;
let tools: ContainerTools;
let src: string;
let image: Image;
let composeBin: string;

/** The seed recipe: what a registry:2 user has in compose.yaml, with Berth's image in place of registry:2. */
function seedCompose(port: number): string {
  return [
    "services:",
    "  registry:",
    `    image: ${IMAGE}`,
    "    restart: always",
    "    ports:",
    `      - "${port}:5000"`,
    "    environment:",
    "      REGISTRY_AUTH: htpasswd",
    "      REGISTRY_AUTH_HTPASSWD_REALM: Registry Realm",
    "      REGISTRY_AUTH_HTPASSWD_PATH: /auth/htpasswd",
    '      REGISTRY_STORAGE_DELETE_ENABLED: "true"',
    "    volumes:",
    "      - registry-data:/var/lib/registry",
    "      - ./auth:/auth",
    // Not in the recipe: the image's healthcheck, asked every second instead of every 30 s.
    "    healthcheck:",
    "      interval: 1s",
    "volumes:",
    "  registry-data:",
    "",
  ].join("\n");
}

interface Project {
  name: string;
  dir: string;
  port: number;
  host: string;
  compose(args: string[], options?: RunOptions): Promise<string>;
  container(): Promise<string>;
}

async function project(label: string): Promise<Project> {
  const name = `berthe2e${label}${randomBytes(3).toString("hex")}`;
  const dir = tools.subdir(name);
  mkdirSync(path.join(dir, "auth"), { recursive: true });
  const port = await freePort();
  writeFileSync(path.join(dir, "compose.yaml"), seedCompose(port));
  const htpasswd = await run(requireTool("htpasswd"), ["-Bbn", USER, PASSWORD]);
  writeFileSync(path.join(dir, "auth", "htpasswd"), htpasswd.stdout);
  const env = {
    DOCKER_HOST: dockerd.host,
    DOCKER_CONFIG: path.join(dockerd.dir, "cli"),
  };
  const compose = async (args: string[], options: RunOptions = {}) =>
    (
      await run(composeBin, ["--project-name", name, "--file", path.join(dir, "compose.yaml"), ...args], {
        timeoutMs: 180_000,
        ...options,
        cwd: dir,
        env: { ...env, ...options.env },
      })
    ).stdout;
  const container = async () => (await compose(["ps", "-q", "registry"])).trim();
  return { name, dir, port, host: `127.0.0.1:${port}`, compose, container };
}

async function docker(args: string[], options: RunOptions = {}): Promise<string> {
  return (await dockerd.docker(args, { timeoutMs: 300_000, ...options })).stdout;
}

async function waitHealthy(p: Project): Promise<void> {
  const id = await waitFor(`${p.name}'s container`, () => p.container(), 60_000, 500);
  await waitFor(
    `${p.name}'s container to turn healthy`,
    async () => (await docker(["inspect", "--format", "{{.State.Health.Status}}", id])).trim() === "healthy",
    90_000,
    500,
  );
}

const creds = `${USER}:${PASSWORD}`;

async function skopeoPush(p: Project, ref: string): Promise<void> {
  await tools.skopeo([
    "copy",
    "--dest-tls-verify=false",
    "--dest-creds",
    creds,
    "--preserve-digests",
    `oci:${src}:five`,
    `docker://${p.host}/${ref}`,
  ]);
}

/** The manifest digest skopeo reads for `ref` (with the credentials). */
async function skopeoDigest(p: Project, ref: string): Promise<string> {
  const out = await tools.skopeo([
    "inspect",
    "--tls-verify=false",
    "--creds",
    creds,
    `docker://${p.host}/${ref}`,
  ]);
  return (JSON.parse(out.stdout) as { Digest: string }).Digest;
}

async function skopeoPull(p: Project, ref: string): Promise<void> {
  const dest = tools.subdir(`pull-${randomBytes(4).toString("hex")}`);
  await tools.skopeo([
    "copy",
    "--src-tls-verify=false",
    "--src-creds",
    creds,
    `docker://${p.host}/${ref}`,
    `oci:${dest}:x`,
  ]);
}

async function login(p: Project, password: string) {
  return dockerd.docker(["login", "--username", USER, "--password-stdin", p.host], {
    input: password,
    allowFailure: true,
  });
}

async function dockerPull(p: Project, ref: string): Promise<string> {
  const out = await docker(["pull", `${p.host}/${ref}`]);
  const m = /Digest: (sha256:[0-9a-f]{64})/.exec(out);
  if (!m) throw new Error(`docker pull printed no digest:\n${out}`);
  await docker(["rmi", "--force", `${p.host}/${ref}`]);
  return m[1]!;
}

/** A monolithic blob upload whose body arrives over `ms`, with `during` run once the body has begun. */
async function slowUpload(p: Project, repo: string, during: () => Promise<unknown>, ms: number) {
  const auth = `Basic ${Buffer.from(creds).toString("base64")}`;
  const start = await fetch(`http://${p.host}/v2/${repo}/blobs/uploads/`, {
    method: "POST",
    headers: { authorization: auth },
  });
  expect(start.status).toBe(202);
  const location = new URL(start.headers.get("location")!, `http://${p.host}`);
  const chunks = Array.from({ length: 10 }, (_, i) => Buffer.alloc(64 * 1024, i));
  const body = Buffer.concat(chunks);
  const { createHash } = await import("node:crypto");
  const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
  location.searchParams.set("digest", digest);
  const answer = new Promise<number>((resolve, reject) => {
    const req = http.request(
      location,
      {
        method: "PUT",
        headers: {
          authorization: auth,
          "content-type": "application/octet-stream",
          "content-length": body.length,
        },
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.on("error", reject);
    void (async () => {
      for (const chunk of chunks) {
        req.write(chunk);
        await sleep(ms / chunks.length);
      }
      req.end();
    })();
  });
  await sleep(ms / 5);
  const [status] = await Promise.all([answer, during()]);
  return { status, digest };
}

beforeAll(async () => {
  if (!canRunDocker) return;
  composeBin = requireTool("docker-compose");
  tools = ContainerTools.create("berth-e2e-image-");
  image = testImage("image");
  src = tools.subdir("src");
  writeOciLayout(src, { five: image });
  // overlay2 where the kernel and file system allow it (vfs copies every layer of every build step).
  dockerd = await startDockerd({}, { storageDriver: "overlay2" }).catch(() => startDockerd());
  const base = await buildLocalBase(dockerd, tools.subdir("base"), "berth-e2e");
  const proxies: string[] = [];
  for (const name of ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"]) {
    if (process.env[name]) proxies.push("--build-arg", name);
  }
  // The classic builder (what every docker.io has; BuildKit would want the buildx plugin) on the host's
  // network, the one that reaches the npm registry.
  const built = await dockerd.docker(
    [
      "build",
      "--network",
      "host",
      "--file",
      path.join(ROOT, "deploy", "Dockerfile"),
      "--build-arg",
      `NODE_IMAGE=${base.runtime}`,
      "--build-arg",
      `BUILD_IMAGE=${base.build}`,
      ...proxies,
      "--tag",
      IMAGE,
      ROOT,
    ],
    { env: { DOCKER_BUILDKIT: "0" }, timeoutMs: 900_000, allowFailure: true },
  );
  saveLogs(undefined, "image", { build: [built.stdout, built.stderr] });
  if (built.code !== 0)
    throw new Error(`docker build failed (test-output/e2e/image.build.log):\n${built.stderr}`);
}, 1_200_000);

afterAll(async () => {
  if (!canRunDocker) return;
  await cleanupAll(
    () => dockerd?.stop(),
    () => tools?.cleanup(),
  );
}, 120_000);

describe.skipIf(!canRunDocker)("the image of deploy/Dockerfile", () => {
  test("runs berth from the PATH as an unprivileged user, with a volume, a port, a healthcheck and every addon", async () => {
    expect(await docker(["run", "--rm", "--network", "none", IMAGE, "berth", "--help"])).toContain(
      "Usage: berth",
    );
    expect(await docker(["run", "--rm", "--network", "none", IMAGE, "--help"])).toContain("Usage: berth");
    expect((await docker(["run", "--rm", "--network", "none", IMAGE, "id", "-u"])).trim()).toBe(UID);
    const [config] = JSON.parse(await docker(["image", "inspect", IMAGE])) as {
      Config: {
        User: string;
        ExposedPorts: Record<string, unknown>;
        Volumes: Record<string, unknown>;
        Healthcheck?: { Test: string[] };
      };
    }[];
    expect(config!.Config.User).toBe(`${UID}:${UID}`);
    expect(Object.keys(config!.Config.ExposedPorts)).toEqual(["5000/tcp"]);
    expect(Object.keys(config!.Config.Volumes)).toEqual(["/var/lib/registry"]);
    expect(config!.Config.Healthcheck?.Test[0]).toBe("CMD");
    const inside = await docker([
      "run",
      "--rm",
      "--network",
      "none",
      "--entrypoint",
      "sh",
      IMAGE,
      "-c",
      [
        "for a in sendfile sha256 memory; do node -e \"require('/app/native/'+process.argv[1]+'/build/Release/berth_'+process.argv[1]+'.node')\" $a && echo addon-$a; done",
        "for t in g++ gcc cc make python3; do command -v $t; done",
        "find /app -name '*.map' -o -name '*.ts' -o -path '*/test/*.test.*' | head -5",
      ].join("; "),
    ]);
    expect(inside.trim().split("\n")).toEqual(["addon-sendfile", "addon-sha256", "addon-memory"]);
  });

  test("the seed recipe: htpasswd, push and pull with docker and skopeo, SIGTERM, restart, down and up", async () => {
    const p = await project("seed");
    await p.compose(["up", "-d"]);
    await waitHealthy(p);

    const refused = await login(p, "not the password");
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/unauthorized|401/i);
    expect((await login(p, PASSWORD)).code).toBe(0);

    // docker: load the test image, push it, pull it back.
    const archive = path.join(tools.dir, "seed.tar");
    await tools.skopeo(["copy", `oci:${src}:five`, `docker-archive:${archive}:${p.host}/team/app:docker`]);
    await docker(["load", "--input", archive]);
    const pushed = /digest: (sha256:[0-9a-f]{64})/.exec(
      await docker(["push", `${p.host}/team/app:docker`]),
    )?.[1];
    expect(pushed).toMatch(/^sha256:/);
    await docker(["rmi", "--force", `${p.host}/team/app:docker`]);
    expect(await dockerPull(p, "team/app:docker")).toBe(pushed);
    // skopeo: push with its exact digest, pull both.
    await skopeoPush(p, "team/app:skopeo");
    expect(await skopeoDigest(p, "team/app:skopeo")).toBe(image.manifest.digest);
    await skopeoPull(p, "team/app:docker");
    expect(await dockerPull(p, "team/app:skopeo")).toBe(image.manifest.digest);

    // Everything in the volume belongs to the image's user.
    const foreign = await p.compose([
      "exec",
      "-T",
      "registry",
      "find",
      "/var/lib/registry",
      "!",
      "-user",
      UID,
    ]);
    expect(foreign.trim()).toBe("");

    // SIGTERM (docker-compose stop) while a blob is uploading: the upload completes, then Berth exits 0.
    const id = await p.container();
    const upload = await slowUpload(p, "team/app", () => p.compose(["stop", "--timeout", "30"]), 2_000);
    expect(upload.status).toBe(201);
    expect((await docker(["inspect", "--format", "{{.State.ExitCode}}", id])).trim()).toBe("0");
    await p.compose(["start"]);
    await waitHealthy(p);
    const head = await fetch(`http://${p.host}/v2/team/app/blobs/${upload.digest}`, {
      method: "HEAD",
      headers: { authorization: `Basic ${Buffer.from(creds).toString("base64")}` },
    });
    expect(head.status).toBe(200);

    await p.compose(["restart"]);
    await waitHealthy(p);
    expect(await skopeoDigest(p, "team/app:docker")).toBe(pushed);
    expect(await dockerPull(p, "team/app:skopeo")).toBe(image.manifest.digest);

    await p.compose(["down"]);
    await p.compose(["up", "-d"]);
    await waitHealthy(p);
    expect(await skopeoDigest(p, "team/app:docker")).toBe(pushed);
    expect(await skopeoDigest(p, "team/app:skopeo")).toBe(image.manifest.digest);
    await p.compose(["down", "--volumes"]);
  });

  test("adopts a volume Distribution 2.8 filled as root, once it is given to the image's user as the message says", async () => {
    const p = await project("adopt");
    await p.compose(["up", "--no-start"]);
    const volume = `${p.name}_registry-data`;
    const mountpoint = (await docker(["volume", "inspect", "--format", "{{.Mountpoint}}", volume])).trim();
    // registry:2 runs as root: so does docker-registry here, into the volume's own folder.
    const distribution = await startDistribution({
      dataDir: tools.subdir("distribution"),
      rootDirectory: mountpoint,
    });
    try {
      await tools.skopeo([
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        `oci:${src}:five`,
        `docker://${distribution.host}/legacy/app:v1`,
      ]);
    } finally {
      await distribution.cleanup();
    }

    await p.compose(["up", "-d"]);
    const id = await waitFor("the container", () => p.container(), 60_000, 500);
    const message = await waitFor(
      "the message about the volume's owner",
      async () => {
        const logs = await dockerd.docker(["logs", id]);
        return /chown -R 10001:10001 \/var\/lib\/registry/.test(logs.stderr) ? logs.stderr : undefined;
      },
      60_000,
      500,
    );
    expect(message).toContain("not writable by this container's user (10001:10001)");
    await p.compose(["stop"]);
    // The command the message gives, in its Compose form.
    await p.compose([
      "run",
      "--rm",
      "--user",
      "0",
      "--no-deps",
      "registry",
      "chown",
      "-R",
      "10001:10001",
      "/var/lib/registry",
    ]);
    await p.compose(["up", "-d"]);
    await waitHealthy(p);
    expect(await skopeoDigest(p, "legacy/app:v1")).toBe(image.manifest.digest);
    expect((await login(p, PASSWORD)).code).toBe(0);
    expect(await dockerPull(p, "legacy/app:v1")).toBe(image.manifest.digest);
    await skopeoPush(p, "legacy/app:v2");
    expect(await skopeoDigest(p, "legacy/app:v2")).toBe(image.manifest.digest);
    await p.compose(["down", "--volumes"]);
  });

  test("deploy/'s compose files are valid for docker-compose", async () => {
    const env = {
      DOCKER_HOST: dockerd.host,
      POSTGRES_PASSWORD: "e2e",
      MINIO_ROOT_PASSWORD: "e2e-e2e-e2e",
    };
    for (const file of ["compose.yaml", "compose-postgres.yaml", "compose-replicas.yaml"]) {
      const out = await run(composeBin, ["--file", path.join(ROOT, "deploy", file), "config"], { env });
      expect(out.stdout).toContain("registry");
    }
    const replicas = await run(
      composeBin,
      ["--file", path.join(ROOT, "deploy", "compose-replicas.yaml"), "config", "--services"],
      { env },
    );
    expect(replicas.stdout.split("\n")).toEqual(
      expect.arrayContaining(["registry-1", "registry-2", "registry-3"]),
    );
  });
});
