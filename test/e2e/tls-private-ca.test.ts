/**
 * The private CA of `berth tls init` (issue 15) with real clients: skopeo, podman, ctr and docker push
 * and pull over HTTPS, each trusting the CA the way `berth tls trust` tells it to. The commands that
 * `berth tls trust` prints are run as printed, under a temporary root instead of / (and without
 * sudo); the clients then read the certs.d directories those commands wrote. The CA comes from
 * Berth's own /ca.crt, and its fingerprint must be the one `berth tls trust` printed.
 *
 * Docker treats loopback registries as insecure and would not check the certificate, so docker
 * talks to a second Berth on the same data directory, started in a network namespace of the test's own
 * (test/helpers/netns.ts) and reached at that namespace's address, through
 * /etc/docker/certs.d/<addr:port> (the only place its daemon looks); the entry is removed afterwards.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createTestNetns, type TestNetns } from "../helpers/netns.js";
import { type Berth, CLI, freePort, startBerth, tempDir } from "../helpers/server.js";
import { type Containerd, startContainerd } from "./clients/containerd.js";
import { ContainerTools } from "./clients/containers.js";
import { type Dockerd, startDockerd } from "./clients/dockerd.js";
import { type Image, testImage, writeOciLayout } from "./clients/images.js";
import { cleanupAll, saveLogs } from "./clients/suite.js";

let berth: Berth;
let dataDir: string;
let port: number;
let lanIp: string;
let netns: TestNetns;
let nsBerth: Berth | undefined;
let root: string;
let tools: ContainerTools;
let dockerd: Dockerd;
let containerd: Containerd;
let src: string;
let image: Image;
let trustText: string;
const dockerCertDirs: string[] = [];

function berthCli(args: string[]): string {
  const res = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  if (res.status !== 0) throw new Error(`berth ${args.join(" ")} failed:\n${res.stdout}\n${res.stderr}`);
  return res.stdout;
}

beforeAll(async () => {
  netns = createTestNetns();
  lanIp = netns.address;
  port = await freePort();
  dataDir = tempDir("berth-e2e-privca-");
  const init = berthCli([
    "tls",
    "init",
    "--data-dir",
    dataDir,
    "--host",
    "localhost",
    "--ip",
    `127.0.0.1,${lanIp}`,
  ]);
  expect(init).toMatch(/created a CA/);
  berth = await startBerth({ dataDir, port, scheme: "https", args: ["--addr", `0.0.0.0:${port}`] });
  trustText = berthCli(["tls", "trust", "--data-dir", dataDir, "--addr", `0.0.0.0:${port}`]);
  tools = ContainerTools.create("berth-e2e-privca-");
  image = testImage("privca");
  src = tools.subdir("src");
  writeOciLayout(src, { five: image });
  dockerd = await startDockerd();
  containerd = await startContainerd();
});

afterAll(async () => {
  saveLogs(undefined, "tls-private-ca", {
    berth: berth?.logs ?? [],
    "berth-netns": nsBerth?.logs ?? [],
    dockerd: dockerd?.logs ?? [],
    containerd: containerd?.logs ?? [],
  });
  await cleanupAll(
    () => dockerd?.stop(),
    () => containerd?.stop(),
    () => tools?.cleanup(),
    () => berth?.stop(),
    () => nsBerth?.stop(),
    () => netns?.remove(),
    () => fs.rmSync(dataDir, { recursive: true, force: true }),
    () => root && fs.rmSync(root, { recursive: true, force: true }),
    ...dockerCertDirs.map((d) => () => fs.rmSync(d, { recursive: true, force: true })),
  );
});

describe("private CA from `berth tls init`", () => {
  test("`berth tls trust` commands, run as printed, install the CA that Berth serves at /ca.crt", () => {
    const fingerprint = /SHA-256 fingerprint: ([0-9A-F:]{95})/.exec(trustText)?.[1];
    expect(fingerprint).toBeTruthy();
    root = tempDir("berth-e2e-privca-root-");
    const work = path.join(root, "work");
    fs.mkdirSync(work);
    // On a real system this directory exists already (Debian's ca-certificates package).
    fs.mkdirSync(path.join(root, "usr/local/share/ca-certificates"), { recursive: true });
    // The printed commands, under `root` instead of /, without sudo; the trust store update is not run.
    const script = trustText
      .split("\n")
      .filter((line) => !/update-ca-certificates|update-ca-trust/.test(line))
      .map((line) => line.replaceAll("sudo ", "").replace(/(?<![\w.-])\/(etc|usr)\//g, `${root}/$1/`))
      .filter((line) => !line.startsWith(`cp ${root}`) && !line.startsWith("cp /"))
      .join("\n");
    const res = spawnSync("bash", ["-euo", "pipefail", "-c", script], { cwd: work, encoding: "utf8" });
    expect(res.status, `${script}\n${res.stdout}\n${res.stderr}`).toBe(0);
    // curl -k fetched /ca.crt from Berth; openssl printed its fingerprint: the one berth tls trust printed.
    expect(res.stdout).toContain(fingerprint);
    const served = fs.readFileSync(path.join(work, "berth-ca.crt"), "utf8");
    expect(served).toBe(fs.readFileSync(path.join(dataDir, "tls", "ca.crt"), "utf8"));
    for (const r of [`localhost:${port}`, `127.0.0.1:${port}`, `${lanIp}:${port}`]) {
      expect(fs.readFileSync(path.join(root, "etc/docker/certs.d", r, "ca.crt"), "utf8")).toBe(served);
      expect(fs.readFileSync(path.join(root, "etc/containers/certs.d", r, "ca.crt"), "utf8")).toBe(served);
      const hosts = fs.readFileSync(path.join(root, "etc/containerd/certs.d", r, "hosts.toml"), "utf8");
      expect(hosts).toContain(`server = "https://${r}"`);
      expect(hosts).toContain(`ca = "${root}/etc/containerd/certs.d/${r}/ca.crt"`);
    }
    expect(fs.existsSync(path.join(root, "usr/local/share/ca-certificates/berth-ca.crt"))).toBe(true);
  });

  test("skopeo: refused without the CA, pushes and reads back with the certs.d entry", async () => {
    const host = `127.0.0.1:${port}`;
    const certDir = path.join(root, "etc/containers/certs.d", host);
    const dest = `docker://${host}/e2e/skopeo:v1`;
    const refused = await tools.skopeo(["copy", `oci:${src}:five`, dest], { allowFailure: true });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/certificate|x509|unknown authority/i);
    const copied = await tools.skopeo([
      "copy",
      "--dest-cert-dir",
      certDir,
      "--preserve-digests",
      `oci:${src}:five`,
      dest,
    ]);
    expect(copied.code).toBe(0);
    const raw = await tools.skopeo(["inspect", "--raw", "--cert-dir", certDir, dest]);
    expect(JSON.parse(raw.stdout).config.digest).toBe(image.config.digest);
  });

  test("podman: push and pull by the host name", async () => {
    const host = `localhost:${port}`;
    const certDir = path.join(root, "etc/containers/certs.d", host);
    const target = `${host}/e2e/podman:v1`;
    await tools.podman(["pull", `oci:${src}:five`]);
    await tools.podman(["tag", image.config.digest.replace("sha256:", ""), target]);
    const pushed = await tools.podman(["push", "--cert-dir", certDir, target], { allowFailure: true });
    expect(pushed.code, pushed.stderr).toBe(0);
    await tools.podman(["rmi", "--force", target]);
    const pulled = await tools.podman(["pull", "--cert-dir", certDir, target], { allowFailure: true });
    expect(pulled.code, pulled.stderr).toBe(0);
    const inspected = await tools.podman(["image", "inspect", "--format", "{{.Id}}", target]);
    expect(`sha256:${inspected.stdout.trim()}`).toBe(image.config.digest);
  });

  test("ctr: pulls and pushes through hosts.toml with the CA", async () => {
    const host = `127.0.0.1:${port}`;
    const hostsDir = path.join(root, "etc/containerd/certs.d");
    const source = `${host}/e2e/skopeo:v1`;
    const pull = await containerd.ctr(
      ["images", "pull", "--snapshotter", "native", "--hosts-dir", hostsDir, source],
      {
        allowFailure: true,
      },
    );
    expect(pull.code, pull.stderr).toBe(0);
    const target = `${host}/e2e/ctr:v1`;
    await containerd.ctr(["images", "tag", "--force", source, target]);
    const pushed = await containerd.ctr(["images", "push", "--hosts-dir", hostsDir, target], {
      allowFailure: true,
    });
    expect(pushed.code, pushed.stderr).toBe(0);
    const raw = await tools.skopeo([
      "inspect",
      "--raw",
      "--cert-dir",
      path.join(root, "etc/containers/certs.d", host),
      `docker://${target}`,
    ]);
    expect(JSON.parse(raw.stdout).config.digest).toBe(image.config.digest);
    await containerd.ctr(["images", "rm", "--sync", source, target]);
  });

  test("docker: refused until /etc/docker/certs.d/<addr:port>/ca.crt is in place, then pushes and pulls", async () => {
    nsBerth = await startBerth({
      dataDir,
      port,
      scheme: "https",
      netns,
      args: ["--addr", `0.0.0.0:${port}`],
    });
    const host = `${lanIp}:${port}`;
    const target = `${host}/e2e/docker:v1`;
    const archive = path.join(tools.dir, "docker.tar");
    await tools.skopeo(["copy", `oci:${src}:five`, `docker-archive:${archive}:${target}`]);
    expect((await dockerd.docker(["load", "--input", archive])).code).toBe(0);
    const refused = await dockerd.docker(["push", target], { allowFailure: true });
    expect(refused.code).not.toBe(0);
    expect(`${refused.stdout}\n${refused.stderr}`).toMatch(/x509|certificate/i);

    const certDir = path.join("/etc/docker/certs.d", host);
    dockerCertDirs.push(certDir);
    fs.mkdirSync(certDir, { recursive: true });
    fs.copyFileSync(path.join(root, "etc/docker/certs.d", host, "ca.crt"), path.join(certDir, "ca.crt"));
    const pushed = await dockerd.docker(["push", target], { allowFailure: true });
    expect(pushed.code, pushed.stderr).toBe(0);
    const digest = /digest: (sha256:[0-9a-f]{64})/.exec(pushed.stdout)?.[1];
    expect(digest).toMatch(/^sha256:/);
    await dockerd.docker(["rmi", "--force", target]);
    const pulled = await dockerd.docker(["pull", target], { allowFailure: true });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(pulled.stdout).toContain(`Digest: ${digest}`);
  });
});
