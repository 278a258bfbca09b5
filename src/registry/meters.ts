/**
 * Counters, gauges and histograms that count from the start but cost next to nothing until something
 * reads them. prom-client (about 10 MB of a worker's resident memory with its default metrics) is loaded
 * only when metrics are first scraped (src/http/metrics.ts): these meters then join its registry, which
 * reads them through get(), in prom-client's own shape, so its text format and its sums across workers
 * (AggregatorRegistry) treat them as its own.
 *
 * The subset of prom-client's API that Berth uses: inc, set, dec, observe, collect, and a lookup by name.
 */

export type Labels = Record<string, string | number>;

/** One sample, as prom-client's get() gives it. */
export interface MeterValue {
  labels: Labels;
  value: number;
  metricName?: string;
}

/** A meter's samples, as prom-client's get() gives them. */
export interface MeterData {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  values: MeterValue[];
  aggregator: "sum" | "max";
}

const meters = new Map<string, Meter>();
let sink: ((meter: Meter) => void) | undefined;

/** Calls `register` with every meter made so far and every meter made later (prom-client's registry). */
export function attachMeters(register: (meter: Meter) => void): void {
  sink = register;
  for (const meter of meters.values()) register(meter);
}

/** The meter of that name, if one was made (one per name per process). */
export function meterNamed<T extends Meter>(name: string): T | undefined {
  return meters.get(name) as T | undefined;
}

/** A key per set of labels, whatever the order of its names. */
function keyOf(labels: Labels): string {
  const names = Object.keys(labels);
  if (names.length === 0) return "";
  if (names.length > 1) names.sort();
  return names.map((n) => `${n}:${labels[n]}`).join(",");
}

/** (labels, value) or (value) or (labels) or (), as prom-client takes them. */
function args(labelsOrValue: Labels | number | undefined, value: number | undefined, fallback: number) {
  return typeof labelsOrValue === "number"
    ? { labels: {}, value: labelsOrValue }
    : { labels: labelsOrValue ?? {}, value: value ?? fallback };
}

interface Options {
  name: string;
  help: string;
  labelNames?: readonly string[];
}

export abstract class Meter {
  readonly name: string;
  readonly help: string;
  protected readonly unlabelled: boolean;
  constructor(options: Options) {
    this.name = options.name;
    this.help = options.help;
    this.unlabelled = !options.labelNames?.length;
    meters.set(this.name, this);
    sink?.(this);
  }
  abstract get(): Promise<MeterData>;
}

abstract class Values extends Meter {
  protected readonly values = new Map<string, { labels: Labels; value: number }>();
  constructor(options: Options) {
    super(options);
    if (this.unlabelled) this.values.set("", { labels: {}, value: 0 });
  }
  protected add(labels: Labels, delta: number, set = false): void {
    const key = keyOf(labels);
    const entry = this.values.get(key);
    if (entry) entry.value = set ? delta : entry.value + delta;
    else this.values.set(key, { labels: { ...labels }, value: delta });
  }
  /** Forgets every value (label sets that are gone disappear from the next scrape). */
  reset(): void {
    this.values.clear();
    if (this.unlabelled) this.values.set("", { labels: {}, value: 0 });
  }
  protected samples(): MeterValue[] {
    return [...this.values.values()].map((v) => ({ labels: { ...v.labels }, value: v.value }));
  }
}

export class Counter<_L extends string = string> extends Values {
  inc(labelsOrValue?: Labels | number, value?: number): void {
    const a = args(labelsOrValue, value, 1);
    this.add(a.labels, a.value);
  }
  override async get(): Promise<MeterData> {
    return { name: this.name, help: this.help, type: "counter", values: this.samples(), aggregator: "sum" };
  }
}

export class Gauge<_L extends string = string> extends Values {
  private readonly aggregator: "sum" | "max";
  private readonly collect?: (this: Gauge<_L>) => void | Promise<void>;
  constructor(
    options: Options & { aggregator?: "sum" | "max"; collect?: (this: Gauge<_L>) => void | Promise<void> },
  ) {
    super(options);
    this.aggregator = options.aggregator ?? "sum";
    this.collect = options.collect;
  }
  set(labelsOrValue: Labels | number, value?: number): void {
    const a = args(labelsOrValue, value, 0);
    this.add(a.labels, a.value, true);
  }
  inc(labelsOrValue?: Labels | number, value?: number): void {
    const a = args(labelsOrValue, value, 1);
    this.add(a.labels, a.value);
  }
  dec(labelsOrValue?: Labels | number, value?: number): void {
    const a = args(labelsOrValue, value, 1);
    this.add(a.labels, -a.value);
  }
  override async get(): Promise<MeterData> {
    await this.collect?.call(this);
    return {
      name: this.name,
      help: this.help,
      type: "gauge",
      values: this.samples(),
      aggregator: this.aggregator,
    };
  }
}

export class Histogram<_L extends string = string> extends Meter {
  private readonly bounds: number[];
  private readonly series = new Map<
    string,
    { labels: Labels; counts: number[]; sum: number; count: number }
  >();
  constructor(options: Options & { buckets: number[] }) {
    super(options);
    this.bounds = [...options.buckets].sort((a, b) => a - b);
    if (this.unlabelled) this.entry({});
  }
  private entry(labels: Labels) {
    const key = keyOf(labels);
    let entry = this.series.get(key);
    if (!entry) {
      entry = { labels: { ...labels }, counts: this.bounds.map(() => 0), sum: 0, count: 0 };
      this.series.set(key, entry);
    }
    return entry;
  }
  observe(labelsOrValue: Labels | number, value?: number): void {
    const a = args(labelsOrValue, value, 0);
    const entry = this.entry(a.labels);
    const i = this.bounds.findIndex((bound) => a.value <= bound);
    if (i >= 0) entry.counts[i] = (entry.counts[i] ?? 0) + 1;
    entry.sum += a.value;
    entry.count += 1;
  }
  async get(): Promise<MeterData> {
    const values: MeterValue[] = [];
    const bucket = `${this.name}_bucket`;
    for (const s of this.series.values()) {
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += s.counts[i] ?? 0;
        values.push({ labels: { le, ...s.labels }, value: cumulative, metricName: bucket });
      });
      values.push({ labels: { le: "+Inf", ...s.labels }, value: s.count, metricName: bucket });
      values.push({ labels: { ...s.labels }, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...s.labels }, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: "histogram", values, aggregator: "sum" };
  }
}
