// Metric 11: the pull-through cache. Both registries mirror the same upstream (a Distribution holding a
// five-layer image of about 100 MB) through a byte-counting TCP relay:
//   a. first pull of the image through a fresh mirror (manifest, then config and layers, 3 at a time,
//      as docker pulls): the mirror fetches everything from the upstream while it serves it;
//   b. the second pull of the same image, now cached;
//   c. bytes the upstream sent while 10 clients pulled the image at once through a fresh mirror
//      (the image's size once is the floor).
// Each repetition starts fresh mirrors, so every first pull is a real miss.
import { mkdirSync, rmSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { request } from "../lib/http.mjs";
import { buildOciLayout, pushOciLayout } from "../lib/oci-layout.mjs";
import { pullBlob } from "../lib/registry.mjs";
import { makeRow } from "../lib/report.mjs";
import { SERVER_KEYS, startServer, stopServer } from "../lib/servers.mjs";
import { errorMessage, formatBytes, log, mapLimit, median, sleep } from "../lib/util.mjs";

const REPO = "bench/proxied";
const TAG = "latest";
const ACCEPT = [
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");

/** A TCP relay to `port` that counts the bytes coming back from it. */
function countingRelay(port) {
  let bytes = 0;
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    upstream.on("data", (chunk) => {
      bytes += chunk.length;
    });
    client.pipe(upstream);
    upstream.pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", close);
    upstream.on("error", close);
    client.on("close", close);
    upstream.on("close", close);
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      resolve({
        port: server.address().port,
        bytes: () => bytes,
        reset: () => {
          bytes = 0;
        },
        close: () =>
          new Promise((r) => {
            for (const s of sockets) s.destroy();
            server.close(r);
          }),
      });
    });
  });
}

/** Pulls the whole image as docker does (manifest, then blobs three at a time); verifies every digest. */
async function pullImage(server) {
  const t0 = performance.now();
  const res = await request(`${server.baseUrl}/v2/${REPO}/manifests/${TAG}`, {
    headers: { accept: ACCEPT },
  });
  if (res.status !== 200) throw new Error(`GET manifest through ${server.label}: ${res.status} ${res.text}`);
  const manifest = JSON.parse(res.text);
  const blobs = [manifest.config, ...manifest.layers];
  let bytes = 0;
  await mapLimit(blobs, 3, async (blob) => {
    const pulled = await pullBlob(server, REPO, blob.digest);
    bytes += pulled.bytes;
  });
  return { seconds: (performance.now() - t0) / 1000, bytes };
}

export default {
  id: "proxy",
  title: "Pull-through cache",
  async run(ctx) {
    const { skopeoLayerBytes, workDir } = ctx.opts;
    const image = buildOciLayout(path.join(ctx.opts.cacheDir, "images", `proxy-src-5x${skopeoLayerBytes}`), {
      seed: "proxy-src",
      layers: 5,
      layerBytes: skopeoLayerBytes,
    });
    const upstreamDir = path.join(workDir, "proxy-upstream");
    rmSync(upstreamDir, { recursive: true, force: true });
    const upstream = await startServer({
      key: "upstream",
      impl: "distribution",
      dataDir: upstreamDir,
      workDir: path.join(workDir, "proxy-upstream-logs"),
    });
    const relay = await countingRelay(upstream.port);
    const first = {};
    const second = {};
    const concurrent = {};
    for (const key of SERVER_KEYS) {
      first[key] = { samples: [], details: [], error: null };
      second[key] = { samples: [], details: [], error: null };
      concurrent[key] = { samples: [], details: [], error: null };
    }
    let mirrorCount = 0;
    /** A fresh mirror of the upstream (empty cache), warmed up (every worker answered) without touching the cache. */
    const startMirror = async (key) => {
      const n = mirrorCount++;
      const dataDir = path.join(workDir, `proxy-${key}-${n}`);
      rmSync(dataDir, { recursive: true, force: true });
      mkdirSync(dataDir, { recursive: true });
      const mirror = await startServer({
        key,
        impl: key === "berth" ? ctx.opts.berthImpl : "distribution",
        dataDir,
        workDir: path.join(workDir, `proxy-${key}-${n}-logs`),
        extraArgs: ctx.opts.berthArgs,
        extraConfig: ["proxy:", `  remoteurl: http://127.0.0.1:${relay.port}`],
      });
      await sleep(1000);
      for (let i = 0; i < 8; i++) await request(`${mirror.baseUrl}/v2/`, { agent: false });
      return mirror;
    };
    try {
      await pushOciLayout(upstream, REPO, TAG, image.dir);
      log(`proxy: upstream holds a ${formatBytes(image.totalBytes)} image of 5 layers`);
      const reps = ctx.opts.skopeoReps;
      for (let rep = 0; rep < reps; rep++) {
        const order = rep % 2 === 0 ? SERVER_KEYS : [...SERVER_KEYS].reverse();
        for (const key of order) {
          if (first[key].error) continue;
          let mirror;
          try {
            mirror = await startMirror(key);
            await ctx.sync();
            const a = await pullImage(mirror);
            const b = await pullImage(mirror);
            first[key].samples.push(a.seconds);
            second[key].samples.push(b.seconds);
            log(
              `proxy ${key} rep ${rep + 1}/${reps}: first ${a.seconds.toFixed(2)} s, cached ${b.seconds.toFixed(2)} s`,
            );
          } catch (err) {
            first[key].error = second[key].error = errorMessage(err);
            log(`proxy ${key} FAILED: ${first[key].error}`);
          } finally {
            if (mirror) await stopServer(mirror);
          }
        }
      }
      for (const key of SERVER_KEYS) {
        let mirror;
        try {
          mirror = await startMirror(key);
          relay.reset();
          await Promise.all(Array.from({ length: 10 }, () => pullImage(mirror)));
          concurrent[key].samples.push(relay.bytes() / 1e6);
          log(`proxy ${key}: 10 concurrent first pulls took ${formatBytes(relay.bytes())} from the upstream`);
        } catch (err) {
          concurrent[key].error = errorMessage(err);
          log(`proxy ${key} concurrent FAILED: ${concurrent[key].error}`);
        } finally {
          if (mirror) await stopServer(mirror);
        }
      }
    } finally {
      await relay.close();
      await stopServer(upstream);
    }
    for (const r of [first, second, concurrent]) {
      for (const key of SERVER_KEYS) r[key].value = r[key].samples.length > 0 ? median(r[key].samples) : null;
    }
    const size = `5-layer ${Math.round(image.totalBytes / 1e6)} MB image`;
    return [
      makeRow({
        id: "proxy-first",
        label: `12a. First pull of a ${size} through the mirror (upstream: Distribution)`,
        unit: "s",
        higherIsBetter: false,
        result: first,
        target: { kind: "ratio", max: 1.1 },
      }),
      makeRow({
        id: "proxy-cached",
        label: `12b. Second (cached) pull of the same image`,
        unit: "s",
        higherIsBetter: false,
        result: second,
        target: { kind: "ratio", max: 1.1 },
      }),
      makeRow({
        id: "proxy-upstream-bytes",
        label: `12c. Upstream MB for 10 concurrent first pulls (image: ${(image.totalBytes / 1e6).toFixed(1)} MB)`,
        unit: "MB",
        higherIsBetter: false,
        result: concurrent,
        // The image once, plus HTTP headers and token traffic.
        target: { kind: "berth", max: Math.round((image.totalBytes / 1e6) * 1.02 * 10) / 10 },
      }),
    ];
  },
};
