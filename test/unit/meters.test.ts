import * as prom from "prom-client";
import { describe, expect, it } from "vitest";
import { Counter, Gauge, Histogram } from "../../src/registry/meters.js";

// Berth's meters count without prom-client and join its registry at the first scrape: what prom-client
// then prints and sums across workers must be what its own metrics would have given.

/** The same observations into one of ours and one of prom-client's, each in a registry of its own. */
async function both(
  make: (kind: "ours" | "theirs", registry: prom.Registry) => void,
): Promise<{ ours: string; theirs: string; oursJson: unknown; theirsJson: unknown }> {
  const a = new prom.Registry();
  const b = new prom.Registry();
  make("ours", a);
  make("theirs", b);
  return {
    ours: await a.metrics(),
    theirs: await b.metrics(),
    oursJson: await a.getMetricsAsJSON(),
    theirsJson: await b.getMetricsAsJSON(),
  };
}

let n = 0;
const unique = (name: string) => `${name}_${++n}`;

describe("meters", () => {
  it("print and aggregate as prom-client's counters, gauges and histograms do", async () => {
    const counter = unique("t_requests_total");
    const plain = unique("t_plain_total");
    const gauge = unique("t_in_flight");
    const histogram = unique("t_duration_seconds");
    const result = await both((kind, registry) => {
      const C = kind === "ours" ? Counter : prom.Counter;
      const G = kind === "ours" ? Gauge : prom.Gauge;
      const H = kind === "ours" ? Histogram : prom.Histogram;
      const c = new C({ name: counter, help: "requests", labelNames: ["method", "status"] });
      const p = new C({ name: plain, help: "plain" });
      const g = new G({ name: gauge, help: "in flight", aggregator: "max" });
      const h = new H({
        name: histogram,
        help: "duration",
        labelNames: ["route"],
        buckets: [0.01, 0.1, 1],
      });
      for (const m of [c, p, g, h]) registry.registerMetric(m as unknown as prom.Metric);
      c.inc({ method: "GET", status: "200" });
      c.inc({ status: "200", method: "GET" }, 2);
      c.inc({ method: "PUT", status: "201" });
      p.inc(5);
      g.inc();
      g.inc();
      g.dec();
      h.observe({ route: "/v2/" }, 0.005);
      h.observe({ route: "/v2/" }, 0.5);
      h.observe({ route: "/v2/" }, 7);
      h.observe({ route: "manifest" }, 0.1);
    });
    expect(result.ours).toBe(result.theirs);
    // prom-client's histograms add an empty `exemplar` to each sample; nothing reads it without exemplars.
    const plainJson = (v: unknown) =>
      JSON.parse(JSON.stringify(v, (k, x) => (k === "exemplar" ? undefined : x)));
    expect(plainJson(result.oursJson)).toEqual(plainJson(result.theirsJson));
    expect(result.ours).toContain(`${counter}{method="GET",status="200"} 3`);
    // Sums across workers (the primary's AggregatorRegistry) read the same JSON.
    const merged = await prom.AggregatorRegistry.aggregate([
      result.oursJson as prom.metric[],
      result.theirsJson as prom.metric[],
    ]).metrics();
    expect(merged).toContain(`${counter}{method="GET",status="200"} 6`);
    expect(merged).toContain(`${gauge} 1`);
  });

  it("count before they join a registry, and read gauges at the scrape", async () => {
    const counter = new Counter({ name: unique("t_early_total"), help: "early" });
    counter.inc(3);
    let value = 41;
    const gauge = new Gauge({
      name: unique("t_read"),
      help: "read when scraped",
      collect() {
        this.set(++value);
      },
    });
    const registry = new prom.Registry();
    registry.registerMetric(counter as unknown as prom.Metric);
    registry.registerMetric(gauge as unknown as prom.Metric);
    counter.inc();
    const text = await registry.metrics();
    expect(text).toContain(`${counter.name} 4`);
    expect(text).toContain(`${gauge.name} 42`);
  });
});
