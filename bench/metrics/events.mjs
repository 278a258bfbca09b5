// Metric 11: notifications (issue 14): what events cost a push, and how fast they are delivered.
//
// A webhook receiver runs in the bench process (node:http on loopback) and counts the events of
// every envelope it is sent. Two pairs of servers run on fresh data directories: one with no
// notifications, one with two endpoints (`a` and `b`) pointing at the receiver, the same YAML for
// both Berth and Distribution.
//   11a/11b: `skopeo copy` of the five-layer image (as metric 6) to each pair, alternating the
//            pairs and the servers; a different image and repository per repetition. The notes give
//            each server's time with endpoints over its time without.
//   11c:     delivery throughput: the receiver answers 503 while 8 clients push N small manifests
//            (N = 2,000; 1,000 with --quick), then 200; the value is N divided by the time from
//            that switch until endpoint `a` has every manifest's push event. Berth drains its
//            outbox in batches; Distribution drains its in-memory queue one event per request.
import http from "node:http";
import path from "node:path";
import { sha256Digest } from "../lib/blobdata.mjs";
import { buildOciLayout, REF_NAME } from "../lib/oci-layout.mjs";
import { OCI_CONFIG, OCI_MANIFEST, pushSmallBlob, putManifest } from "../lib/registry.mjs";
import { makeRow } from "../lib/report.mjs";
import { SERVER_KEYS } from "../lib/servers.mjs";
import { errorMessage, formatBytes, log, mapLimit, median, run, sleep } from "../lib/util.mjs";

const SKOPEO = process.env.BENCH_SKOPEO_BIN ?? "skopeo";
const CLIENTS = 8;

/** Counts manifest push events per endpoint and repository; answers 200, or 503 while `failing`. */
function startReceiver() {
  const counts = new Map();
  const state = { failing: false, requests: 0, events: 0 };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      state.requests++;
      if (state.failing) return res.writeHead(503).end();
      const endpoint = req.url.split("/").pop();
      try {
        for (const e of JSON.parse(Buffer.concat(chunks).toString("utf8")).events ?? []) {
          state.events++;
          if (e.action !== "push" || e.target?.mediaType !== OCI_MANIFEST) continue;
          const key = `${endpoint} ${e.target.repository}`;
          counts.set(key, (counts.get(key) ?? 0) + 1);
        }
      } catch {
        return res.writeHead(400).end();
      }
      res.writeHead(200).end();
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      resolve({
        port: server.address().port,
        state,
        count: (endpoint, repo) => counts.get(`${endpoint} ${repo}`) ?? 0,
        close: () => new Promise((r) => server.close(r)),
      });
    });
  });
}

function notificationsYaml(port) {
  const endpoint = (name) => [
    `    - name: ${name}`,
    `      url: http://127.0.0.1:${port}/hook/${name}`,
    "      timeout: 2s",
    "      threshold: 10",
    "      backoff: 100ms",
    // Berth's own key (the longest wait between attempts); Distribution ignores it.
    "      maxbackoff: 200ms",
  ];
  return ["notifications:", "  endpoints:", ...endpoint("a"), ...endpoint("b")];
}

async function skopeoPush(layoutDir, server, repo) {
  const t0 = performance.now();
  await run(
    SKOPEO,
    [
      "copy",
      "--quiet",
      "--dest-tls-verify=false",
      `oci:${layoutDir}:${REF_NAME}`,
      `docker://${server.addr}/${repo}:latest`,
    ],
    { timeoutMs: 10 * 60_000 },
  );
  return (performance.now() - t0) / 1000;
}

function emptyResult(pair) {
  const out = {};
  for (const key of SERVER_KEYS) out[key] = { samples: [], details: [], error: pair[key]?.error ?? null };
  return out;
}

function finish(result) {
  for (const key of SERVER_KEYS) {
    result[key].value = result[key].samples.length > 0 ? median(result[key].samples) : null;
  }
  return result;
}

async function throughputRep(server, receiver, repo, n) {
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux" }));
  const layer = Buffer.from(`events bench layer ${repo}`);
  await pushSmallBlob(server, repo, config);
  await pushSmallBlob(server, repo, layer);
  const manifest = (i) =>
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: OCI_CONFIG, digest: sha256Digest(config), size: config.length },
        layers: [
          {
            mediaType: "application/vnd.oci.image.layer.v1.tar",
            digest: sha256Digest(layer),
            size: layer.length,
          },
        ],
        annotations: { "bench.events": String(i) },
      }),
    );
  receiver.state.failing = true;
  await mapLimit(
    Array.from({ length: n }, (_, i) => i),
    CLIENTS,
    (i) => putManifest(server, repo, `v${i}`, manifest(i)),
  );
  await sleep(1000);
  receiver.state.failing = false;
  const t0 = performance.now();
  const deadline = Date.now() + 5 * 60_000;
  while (receiver.count("a", repo) < n) {
    if (Date.now() > deadline) {
      throw new Error(`endpoint a got ${receiver.count("a", repo)} of ${n} events within 5 minutes`);
    }
    await sleep(5);
  }
  const seconds = (performance.now() - t0) / 1000;
  return { value: n / seconds, seconds, events: n };
}

export default {
  id: "events",
  title: "Notifications: push cost and delivery throughput",
  async run(ctx) {
    const receiver = await startReceiver();
    const off = await ctx.startPair("events-off");
    const on = await ctx.startPair("events-on", { extraConfig: notificationsYaml(receiver.port) });
    try {
      const reps = ctx.opts.skopeoReps;
      const images = Array.from({ length: reps }, (_, rep) => {
        const dir = path.join(
          ctx.opts.cacheDir,
          "images",
          `events-${rep}-${ctx.opts.skopeoLayers}x${ctx.opts.skopeoLayerBytes}`,
        );
        return buildOciLayout(dir, {
          seed: `events-${rep}`,
          layers: ctx.opts.skopeoLayers,
          layerBytes: ctx.opts.skopeoLayerBytes,
        });
      });
      log(`events: image of ${ctx.opts.skopeoLayers} layers, ${formatBytes(images[0].totalBytes)}`);
      const pushOff = emptyResult(off);
      const pushOn = emptyResult(on);
      for (let rep = 0; rep < reps; rep++) {
        const pairs = [
          ["off", off, pushOff],
          ["on", on, pushOn],
        ];
        if (rep % 2 === 1) pairs.reverse();
        for (const [label, pair, result] of pairs) {
          const keys = (rep + (label === "on" ? 1 : 0)) % 2 === 0 ? SERVER_KEYS : [...SERVER_KEYS].reverse();
          for (const key of keys) {
            if (result[key].error) continue;
            try {
              await ctx.sync();
              const seconds = await skopeoPush(images[rep].dir, pair[key], `bench/events-${label}-${rep}`);
              result[key].samples.push(seconds);
              log(`events push (${label}) ${key} rep ${rep + 1}/${reps}: ${seconds.toFixed(3)}`);
            } catch (err) {
              result[key].error = errorMessage(err);
              log(`events push (${label}) ${key} FAILED: ${result[key].error}`);
            }
          }
        }
      }
      finish(pushOff);
      finish(pushOn);
      const slowdown = SERVER_KEYS.filter((k) => pushOn[k].value && pushOff[k].value)
        .map((k) => `${k} ${(pushOn[k].value / pushOff[k].value).toFixed(2)}x`)
        .join(", ");

      const n = Number(process.env.BENCH_EVENTS ?? (ctx.opts.mode === "quick" ? 1000 : 2000));
      const tp = emptyResult(on);
      for (let rep = 0; rep < 2; rep++) {
        for (const key of rep % 2 === 0 ? SERVER_KEYS : [...SERVER_KEYS].reverse()) {
          if (tp[key].error) continue;
          try {
            const r = await throughputRep(on[key], receiver, `bench/events-tp-${key}-${rep}`, n);
            tp[key].samples.push(r.value);
            tp[key].details.push(r);
            log(`events throughput ${key} rep ${rep + 1}/2: ${r.value.toFixed(0)} events/s`);
          } catch (err) {
            tp[key].error = errorMessage(err);
            log(`events throughput ${key} FAILED: ${tp[key].error}`);
          }
        }
      }
      finish(tp);

      const size = `${ctx.opts.skopeoLayers}-layer ${Math.round(images[0].totalBytes / 1e6)} MB image`;
      return [
        makeRow({
          id: "events-push-off",
          label: `11a. skopeo copy ${size} → registry, no notification endpoints`,
          unit: "s",
          higherIsBetter: false,
          result: pushOff,
        }),
        makeRow({
          id: "events-push-on",
          label: `11b. the same with two notification endpoints`,
          unit: "s",
          higherIsBetter: false,
          result: pushOn,
          notes: slowdown ? [`with endpoints / without, median: ${slowdown}`] : [],
        }),
        makeRow({
          id: "events-throughput",
          label: `11c. delivery of a ${n.toLocaleString("en-US")}-event backlog to a local receiver`,
          unit: "events/s",
          higherIsBetter: true,
          result: tp,
          target: { kind: "berth", min: 1000 },
        }),
      ];
    } finally {
      await ctx.stopPair(off);
      await ctx.stopPair(on);
      await receiver.close();
    }
  },
};
