/**
 * Berth as a mirror for real clients: a dockerd started by the test with `registry-mirrors` pulls Docker
 * Hub-style names (`library/...`) through a Berth whose whole registry mirrors an upstream (registry:2's
 * proxy.remoteurl), and containerd with a hosts.toml mirror (which adds `?ns=<upstream host>`) pulls through
 * a Berth with prefixed upstreams. The upstream is a Berth in token mode (Docker Hub's Bearer dance).
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RegistryClient } from "../helpers/registry.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { adminClient, startTokenUpstream, upstreamRequests } from "../integration/proxy-fixtures.js";
import { type Containerd, startContainerd } from "./clients/containerd.js";
import { type Dockerd, startDockerd } from "./clients/dockerd.js";
import { type Image, testImage } from "./clients/images.js";
import { cleanupAll } from "./clients/suite.js";

async function pushImage(client: RegistryClient, name: string, tag: string, image: Image): Promise<void> {
  for (const blob of [image.config, ...image.layers]) {
    await client.pushBlob(name, { data: blob.data, digest: blob.digest, size: blob.size });
  }
  const res = await client.putManifest(name, tag, image.manifest.data, image.manifest.mediaType);
  if (res.status !== 201) throw new Error(`put manifest: ${res.status} ${await res.text()}`);
}

function proxyConfig(lines: string[]): string {
  const file = path.join(tempDir("berth-e2e-proxy-conf-"), "config.yml");
  fs.writeFileSync(file, [...lines, ""].join("\n"));
  return file;
}

describe("mirror for docker (registry-mirrors) and containerd (hosts.toml, ?ns=)", () => {
  let upstream: Berth;
  let hubMirror: Berth;
  let prefixMirror: Berth;
  let dockerd: Dockerd | undefined;
  let containerd: Containerd | undefined;
  const dockerImage = testImage("proxy-docker", { docker: true });
  const ociImage = testImage("proxy-ctr");

  beforeAll(async () => {
    upstream = await startTokenUpstream();
    await pushImage(
      await adminClient(upstream, "library/berthproxy"),
      "library/berthproxy",
      "v1",
      dockerImage,
    );
    await pushImage(await adminClient(upstream, "org/tool"), "org/tool", "v2", ociImage);
    const credentials = ["    username: mirror", "    password: mirror-pw"];
    hubMirror = await startBerth({
      args: [
        "--config",
        proxyConfig(["proxy:", `  remoteurl: ${upstream.url}`, ...credentials.map((l) => l.slice(2))]),
      ],
    });
    prefixMirror = await startBerth({
      args: [
        "--config",
        proxyConfig([
          "proxy:",
          "  upstreams:",
          "  - prefix: up",
          `    remoteurl: ${upstream.url}`,
          ...credentials,
        ]),
      ],
    });
  }, 120_000);

  afterAll(async () => {
    await cleanupAll(
      () => dockerd?.stop(),
      () => containerd?.stop(),
      () => hubMirror?.cleanup(),
      () => prefixMirror?.cleanup(),
      () => upstream?.cleanup(),
    );
  });

  it("docker pull of an official-image name goes through the mirror", async () => {
    dockerd = await startDockerd({ "registry-mirrors": [hubMirror.url] });
    const out = (await dockerd.docker(["pull", "berthproxy:v1"])).stdout;
    expect(out).toContain(`Digest: ${dockerImage.manifest.digest}`);
    // Everything came from the mirror, which fetched each blob once.
    for (const blob of dockerImage.layers) {
      expect(
        await upstreamRequests(upstream, "GET", `/v2/library/berthproxy/blobs/${blob.digest}`, 200),
      ).toBe(1);
    }
    const listed = await fetch(`${hubMirror.url}/v2/library/berthproxy/tags/list`);
    expect(((await listed.json()) as { tags: string[] }).tags).toEqual(["v1"]);
  }, 300_000);

  it("ctr pull with a hosts.toml mirror: ?ns= names the upstream, the prefix holds the cache", async () => {
    containerd = await startContainerd();
    const upstreamHost = new URL(upstream.url).host;
    const hostsDir = path.join(containerd.dir, "certs.d");
    fs.mkdirSync(path.join(hostsDir, upstreamHost), { recursive: true });
    fs.writeFileSync(
      path.join(hostsDir, upstreamHost, "hosts.toml"),
      [
        `server = "${upstream.url}"`,
        "",
        `[host."${prefixMirror.url}"]`,
        '  capabilities = ["pull", "resolve"]',
        "",
      ].join("\n"),
    );
    await containerd.ctr([
      "images",
      "pull",
      "--hosts-dir",
      hostsDir,
      "--snapshotter",
      "native",
      `${upstreamHost}/org/tool:v2`,
    ]);
    const images = (await containerd.ctr(["images", "ls"])).stdout;
    expect(images).toContain(ociImage.manifest.digest);
    // The mirror was asked with ?ns= and answered from up/org/tool.
    expect(
      prefixMirror.logs.some(
        (l) => l.includes(`?ns=${encodeURIComponent(upstreamHost)}`) && l.includes('"status":200'),
      ),
    ).toBe(true);
    const tags = await fetch(`${prefixMirror.url}/v2/up/org/tool/tags/list`);
    expect(((await tags.json()) as { tags: string[] }).tags).toEqual(["v2"]);
  }, 300_000);
});
