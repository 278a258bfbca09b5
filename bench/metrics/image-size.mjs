// Metric: the container image's compressed size, what a pull downloads (docs/deployment.md).
//  - Berth: the image of deploy/Dockerfile named by BENCH_IMAGE (default `berth`, the name the docs'
//    `docker build -f deploy/Dockerfile -t berth .` gives), in the docker daemon of DOCKER_HOST (or the
//    default socket): every layer of `docker save`, gzip-compressed at the level registries get from
//    docker push. Its base (Node.js on Debian) is most of it; the notes give Berth's own layers.
//  - Distribution: registry:2 cannot be pulled here; its figure is Debian's docker-registry binary
//    gzip-compressed, which is registry:2's payload (the image adds Alpine, about 3.5 MB, and a config).
// Skipped without a docker CLI, a daemon that answers, or the image; `test/e2e/image.test.ts` builds the
// Dockerfile in CI.
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { createGzip } from "node:zlib";
import { makeRow } from "../lib/report.mjs";
import { log } from "../lib/util.mjs";

const LABEL = "Container image, compressed (Distribution: docker-registry binary, gzip)";

/** Bytes of `stream` gzip-compressed (level 6, as docker push compresses layers). */
function gzipSize(stream) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const gzip = createGzip({ level: 6 });
    gzip.on("data", (chunk) => {
      size += chunk.length;
    });
    gzip.on("end", () => resolve(size));
    gzip.on("error", reject);
    stream.on("error", reject);
    stream.pipe(gzip);
  });
}

/** The layers of `image` as `docker save` writes them, each gzip-compressed: [{ diffId, bytes }]. */
async function layerSizes(image) {
  const inspect = spawnSync("docker", ["image", "inspect", "--format", "{{json .RootFS.Layers}}", image], {
    encoding: "utf8",
  });
  if (inspect.status !== 0) throw new Error(`no image ${image}: ${inspect.stderr.trim()}`);
  const diffIds = JSON.parse(inspect.stdout);
  // docker save writes a tar of <id>/layer.tar (or blobs/sha256/<hex>) entries: read it as a stream of
  // tar headers and compress each layer's bytes as they pass.
  const child = spawn("docker", ["save", image], { stdio: ["ignore", "pipe", "inherit"] });
  const layers = [];
  await new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    let remaining = 0;
    let padding = 0;
    let current = null;
    const finishEntry = () => {
      if (current) {
        current.gzip.end();
        current = null;
      }
    };
    child.stdout.on("data", (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length > 0) {
        if (remaining > 0) {
          const take = Math.min(remaining, buffered.length);
          current?.gzip.write(buffered.subarray(0, take));
          current?.hash.update(buffered.subarray(0, take));
          buffered = buffered.subarray(take);
          remaining -= take;
          if (remaining === 0) finishEntry();
          continue;
        }
        if (padding > 0) {
          const take = Math.min(padding, buffered.length);
          buffered = buffered.subarray(take);
          padding -= take;
          continue;
        }
        if (buffered.length < 512) break;
        const header = buffered.subarray(0, 512);
        buffered = buffered.subarray(512);
        if (header.every((b) => b === 0)) continue;
        const name = header.subarray(0, 100).toString("utf8").replace(/\0.*$/s, "");
        const size =
          Number.parseInt(header.subarray(124, 136).toString("utf8").replace(/\0.*$/s, "").trim(), 8) || 0;
        remaining = size;
        padding = (512 - (size % 512)) % 512;
        const isLayer = name.endsWith("/layer.tar") || /^blobs\/sha256\/[0-9a-f]{64}$/.test(name);
        if (isLayer && size > 0) {
          const gzip = createGzip({ level: 6 });
          const entry = { name, raw: size, bytes: 0, gzip, hash: createHash("sha256"), done: null };
          entry.done = new Promise((res) => {
            gzip.on("data", (c) => {
              entry.bytes += c.length;
            });
            gzip.on("end", res);
          });
          layers.push(entry);
          current = entry;
        }
        if (size === 0) finishEntry();
      }
    });
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve() : reject(new Error(`docker save exited with ${code}`)),
    );
  });
  await Promise.all(layers.map((l) => l.done));
  // A layer's uncompressed digest is its diff ID: that gives the image's order of layers (docker save
  // writes them in any order, and with the OCI layout the config and manifests are blobs too).
  const byDiffId = new Map(layers.map((l) => [`sha256:${l.hash.digest("hex")}`, l.bytes]));
  const sizes = diffIds.map((id) => {
    const bytes = byDiffId.get(id);
    if (bytes === undefined) throw new Error(`docker save of ${image} lacks layer ${id}`);
    return bytes;
  });
  return { diffIds, sizes };
}

export default {
  id: "image-size",
  title: "Container image size",
  async run() {
    const image = process.env.BENCH_IMAGE || "berth";
    const error = (why) => {
      log(`image-size skipped: ${why}`);
      return [
        makeRow({
          id: "image-size",
          label: LABEL,
          unit: "MB",
          higherIsBetter: false,
          result: { berth: { error: `skipped: ${why}` }, distribution: { error: "skipped" } },
        }),
      ];
    };
    const version = spawnSync("docker", ["version", "--format", "{{.Server.Version}}"], { encoding: "utf8" });
    if (version.error || version.status !== 0) return error("no docker daemon (DOCKER_HOST)");
    let measured;
    try {
      measured = await layerSizes(image);
    } catch (err) {
      return error(
        `${err.message} (build it with docker build -f deploy/Dockerfile -t ${image} ., or set BENCH_IMAGE)`,
      );
    }
    const total = measured.sizes.reduce((a, b) => a + b, 0);
    // Berth's own layers: the last two (the runtime stage's COPY of /app and its RUN).
    const own = measured.sizes.slice(-2).reduce((a, b) => a + b, 0);
    const registryBin = spawnSync("sh", ["-c", "command -v docker-registry"], {
      encoding: "utf8",
    }).stdout.trim();
    const distribution = registryBin
      ? { value: (await gzipSize(createReadStream(registryBin))) / 1e6, samples: [] }
      : { error: "docker-registry not installed" };
    log(
      `image-size: ${image} ${(total / 1e6).toFixed(1)} MB compressed, Berth's own layers ${(own / 1e6).toFixed(1)} MB`,
    );
    return [
      makeRow({
        id: "image-size",
        label: LABEL,
        unit: "MB",
        higherIsBetter: false,
        result: { berth: { value: total / 1e6, samples: [total / 1e6] }, distribution },
        notes: [
          `${image}: ${measured.sizes.length} layers; Berth's own (app, user) ${(own / 1e6).toFixed(1)} MB, the rest is the Node.js base`,
          "registry:2 is about 10 MB: Alpine (about 3.5 MB) and this binary",
        ],
      }),
    ];
  },
};
