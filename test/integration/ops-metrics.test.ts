import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryClient, randomBlob } from "../helpers/registry.js";
import { type Berth, freePort, startBerth } from "../helpers/server.js";
import { metricSum, parseMetrics } from "./ops-support.js";

async function scrape(url: string): Promise<Map<string, number>> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("text/plain");
  return parseMetrics(await res.text());
}

describe("/metrics on the main port", () => {
  let berth: Berth;
  let client: RegistryClient;
  beforeAll(async () => {
    berth = await startBerth();
    client = new RegistryClient(berth.url);
  });
  afterAll(async () => {
    await berth?.cleanup();
  });

  it("counts requests by route and status, with latency and bytes", async () => {
    const blob = randomBlob(200_000);
    await client.pushBlob("metrics/app", blob);
    for (let i = 0; i < 3; i++)
      await (await client.fetch(`/v2/metrics/app/blobs/${blob.digest}`)).arrayBuffer();
    await (await client.fetch("/v2/metrics/app/manifests/missing")).arrayBuffer();
    const m = await scrape(`${berth.url}/metrics`);
    const blobGets = { method: "GET", route: "/v2/{name}/blobs/{digest}", status: "200" };
    expect(metricSum(m, "berth_http_requests_total", blobGets)).toBe(3);
    expect(
      metricSum(m, "berth_http_requests_total", {
        method: "GET",
        route: "/v2/{name}/manifests/{reference}",
        status: "404",
      }),
    ).toBe(1);
    expect(
      metricSum(m, "berth_http_requests_total", { route: "/v2/{name}/blobs/uploads/", status: "201" }),
    ).toBe(1);
    // No repository names in the request metrics' labels.
    for (const key of m.keys()) if (key.startsWith("berth_http_")) expect(key).not.toContain("metrics/app");
    expect(
      metricSum(m, "berth_http_request_duration_seconds_count", {
        method: "GET",
        route: "/v2/{name}/blobs/{digest}",
      }),
    ).toBe(3);
    expect(
      metricSum(m, "berth_http_response_bytes_total", { route: "/v2/{name}/blobs/{digest}" }),
    ).toBeGreaterThanOrEqual(3 * blob.size);
    expect(
      metricSum(m, "berth_http_request_bytes_total", { route: "/v2/{name}/blobs/uploads/" }),
    ).toBeGreaterThanOrEqual(blob.size);
    expect(
      metricSum(m, "berth_http_request_bytes_total", { route: "/v2/{name}/blobs/uploads/" }),
    ).toBeLessThan(blob.size + 10_000);
  });

  it("reports uploads in progress and storage used", async () => {
    const before = await scrape(`${berth.url}/metrics`);
    const start = await client.fetch("/v2/metrics/uploads/blobs/uploads/", { method: "POST" });
    expect(start.status).toBe(202);
    const chunk = randomBlob(50_000);
    const patch = await client.fetch(start.headers.get("location")!, { method: "PATCH", body: chunk.data });
    expect(patch.status).toBe(202);
    const stored = randomBlob(123_456);
    await client.pushBlob("metrics/uploads", stored);
    // Gauges read from the database are cached for a few seconds.
    await new Promise((r) => setTimeout(r, 5_500));
    const after = await scrape(`${berth.url}/metrics`);
    expect(metricSum(after, "berth_uploads_in_progress")).toBe(
      metricSum(before, "berth_uploads_in_progress") + 1,
    );
    expect(metricSum(after, "berth_storage_used_bytes", { kind: "uploads" })).toBe(
      metricSum(before, "berth_storage_used_bytes", { kind: "uploads" }) + chunk.size,
    );
    expect(metricSum(after, "berth_storage_used_bytes", { kind: "blobs" })).toBe(
      metricSum(before, "berth_storage_used_bytes", { kind: "blobs" }) + stored.size,
    );
    expect(metricSum(after, "berth_blobs")).toBe(metricSum(before, "berth_blobs") + 1);
  });

  it("includes the process's own metrics", async () => {
    const m = await scrape(`${berth.url}/metrics`);
    expect(metricSum(m, "process_resident_memory_bytes")).toBeGreaterThan(0);
  });
});

describe("metrics.addr: aggregated over every worker, in the primary", () => {
  let berth: Berth;
  let metricsPort: number;
  beforeAll(async () => {
    metricsPort = await freePort();
    berth = await startBerth({ workers: 2, env: { REGISTRY_METRICS_ADDR: `127.0.0.1:${metricsPort}` } });
  });
  afterAll(async () => {
    await berth?.cleanup();
  });

  it("sums the requests of both workers, and /metrics is not on the main port", async () => {
    // Wait for the second worker and for the metrics listener.
    const deadline = Date.now() + 20_000;
    let ok = false;
    while (Date.now() < deadline && !ok) {
      try {
        ok = (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).status === 200;
      } catch {}
      if (!ok) await new Promise((r) => setTimeout(r, 200));
    }
    expect(ok).toBe(true);
    const before = parseMetrics(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text());
    const n = 40;
    // New connections each time, so that the kernel spreads them over the workers.
    await Promise.all(
      Array.from({ length: n }, async () => {
        const res = await fetch(`${berth.url}/v2/`, { headers: { connection: "close" } });
        await res.arrayBuffer();
      }),
    );
    const after = parseMetrics(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text());
    const route = { method: "GET", route: "/v2/", status: "200" };
    expect(
      metricSum(after, "berth_http_requests_total", route) -
        metricSum(before, "berth_http_requests_total", route),
    ).toBe(n);
    expect((await fetch(`${berth.url}/metrics`)).status).toBe(404);
  });
});

describe("/metrics on the main port with several workers", () => {
  let berth: Berth;
  beforeAll(async () => {
    berth = await startBerth({ workers: 2 });
  });
  afterAll(async () => {
    await berth?.cleanup();
  });

  it("whichever worker answers the scrape, it reports every worker's requests", async () => {
    // Wait until both workers listen: the second starts after the first.
    await new Promise((r) => setTimeout(r, 3_000));
    const n = 30;
    await Promise.all(
      Array.from({ length: n }, async () => {
        const res = await fetch(`${berth.url}/healthz`, { headers: { connection: "close" } });
        await res.arrayBuffer();
      }),
    );
    const route = { method: "GET", route: "/healthz", status: "200" };
    for (let i = 0; i < 4; i++) {
      const res = await fetch(`${berth.url}/metrics`, { headers: { connection: "close" } });
      const m = parseMetrics(await res.text());
      expect(metricSum(m, "berth_http_requests_total", route)).toBe(n);
    }
  });
});
