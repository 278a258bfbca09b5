/**
 * Adoption touches nothing outside the registry:2 tree and never stops on one bad file (issue 21 item 6):
 * `_uploads` folders that are symbolic links (or hold them) lead out of the data directory, and a revision
 * that names a 3 GiB blob (a sparse file) would be read whole. `berth import` and `berth serve` report both
 * and go on.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { startBerth, tempDir } from "../helpers/server.js";
import { berth as runBerth } from "./gc-helpers.js";

const sha256 = (data: Buffer | string) => `sha256:${createHash("sha256").update(data).digest("hex")}`;

/** A registry:2 directory with one good image, one huge revision, and uploads that are links outside. */
function hostileTree(): { root: string; outside: string[]; good: string } {
  const root = tempDir("berth-adopt-safety-");
  const v2 = path.join(root, "docker", "registry", "v2");
  const blob = (data: Buffer | string, digest = sha256(data)) => {
    const hex = digest.slice(7);
    const file = path.join(v2, "blobs", "sha256", hex.slice(0, 2), hex, "data");
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, data);
    return { digest, file };
  };
  const link = (repo: string, rel: string, digest: string) => {
    const file = path.join(v2, "repositories", repo, rel, "link");
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, digest);
  };
  const config = blob(JSON.stringify({ architecture: "amd64", os: "linux" }));
  const layer = blob(Buffer.alloc(1000, 1));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.docker.distribution.manifest.v2+json",
      config: {
        mediaType: "application/vnd.docker.container.image.v1+json",
        size: 37,
        digest: config.digest,
      },
      layers: [
        { mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip", size: 1000, digest: layer.digest },
      ],
    }),
  );
  const good = blob(manifest).digest;
  for (const d of [config.digest, layer.digest]) link("app", `_layers/sha256/${d.slice(7)}`, d);
  link("app", `_manifests/revisions/sha256/${good.slice(7)}`, good);
  link("app", "_manifests/tags/v1/current", good);
  // A revision naming a 3 GiB blob (sparse: no disk used); its name need not be its hash to be refused.
  const huge = `sha256:${"e".repeat(64)}`;
  const hugeFile = blob("", huge).file;
  truncateSync(hugeFile, 3 * 1024 ** 3);
  link("big", `_manifests/revisions/sha256/${huge.slice(7)}`, huge);
  link("big", `_layers/sha256/${layer.digest.slice(7)}`, layer.digest);
  // `_uploads` as a link to a folder outside, and an upload folder inside `_uploads` that is a link outside.
  const outside = [tempDir("berth-outside-a-"), tempDir("berth-outside-b-")];
  for (const dir of outside) writeFileSync(path.join(dir, "precious"), "not registry data");
  symlinkSync(outside[0]!, path.join(v2, "repositories", "app", "_uploads"));
  mkdirSync(path.join(v2, "repositories", "big", "_uploads"), { recursive: true });
  symlinkSync(outside[1]!, path.join(v2, "repositories", "big", "_uploads", "d3adbeef-0000"));
  return { root, outside: outside.map((d) => path.join(d, "precious")), good };
}

describe("adoption of a hostile registry:2 directory", () => {
  it("berth import --dry-run and berth import report the huge revision and delete nothing outside", async () => {
    const { root, outside } = hostileTree();
    const dry = await runBerth(["import", root, "--dry-run", "--json"]);
    expect(dry.code, dry.stderr).toBe(0);
    const report = JSON.parse(dry.stdout) as { manifests: number; problems: { kind: string }[] };
    expect(report.manifests).toBe(1);
    expect(report.problems.map((p) => p.kind)).toContain("manifest-too-large");
    const real = await runBerth(["import", root, "--json"]);
    expect(real.code, real.stderr).toBe(0);
    for (const file of outside) expect(existsSync(file), file).toBe(true);
  });

  it("berth serve adopts it, serves the good image, and deletes nothing outside", async () => {
    const { root, outside, good } = hostileTree();
    const berth = await startBerth({ dataDir: root, captureLogs: true });
    try {
      const res = await fetch(`${berth.url}/v2/app/manifests/v1`, {
        headers: { accept: "application/vnd.docker.distribution.manifest.v2+json" },
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("docker-content-digest")).toBe(good);
      expect(berth.logs.join("\n")).toContain("manifest-too-large");
    } finally {
      await berth.stop();
    }
    for (const file of outside) expect(existsSync(file), file).toBe(true);
  });
});
