import YAML, { isMap, isScalar, isSeq, type Node, visit } from "yaml";
import { expected, isBuiltFrom, mappingOption } from "../config/introspect.js";
import { ConfigError, loadConfig } from "../config/load.js";
import { describeSource, formatPath, isPlainObject, maskSecrets, type Path } from "../config/provenance.js";
import { type Config, configSchema, dataDirOf } from "../config/schema.js";
import { duration } from "../config/sections/core.js";
import { acmeReport } from "../http/acme-state.js";
import { privateCaReport } from "../http/private-ca.js";

export interface ConfigCheckOptions {
  config?: string;
  json?: boolean;
  quiet?: boolean;
  /** With storage.s3: skip the bucket probe (checkBlobStore). */
  offline?: boolean;
}

export interface ConfigCheckIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env?: NodeJS.ProcessEnv;
  /** Files looked for when none is named (tests pass []). */
  defaultFiles?: string[];
}

/**
 * With storage.s3, proves the bucket is reachable and writable (a small object written and deleted under
 * the root directory). Returns the exit code: 1 when it is not. The filesystem store is checked at start-up.
 */
export async function checkBlobStore(opts: ConfigCheckOptions, io: ConfigCheckIo): Promise<number> {
  const { config } = loadConfig({ file: opts.config, env: io.env, defaultFiles: io.defaultFiles });
  const s3 = config.storage.s3;
  if (!s3) return 0;
  const { S3BlobStore } = await import("../storage/s3.js");
  const store = new S3BlobStore({ ...s3, maxattempts: 2, requesttimeout: 10_000 });
  try {
    await store.probe();
    if (!opts.quiet && !opts.json) io.stderr(`storage.s3: bucket ${s3.bucket} is reachable and writable\n`);
    return 0;
  } catch (err) {
    const e = err as Error & { cause?: Error };
    const why = e.cause?.name ? `${e.cause.name}: ${e.cause.message}` : e.message;
    io.stderr(`berth: storage.s3: bucket ${s3.bucket} is not reachable or not writable: ${why}\n`);
    return 1;
  } finally {
    store.close();
  }
}

/** Runs the check; returns the exit code (0 valid, 1 invalid). */
export function runConfigCheck(opts: ConfigCheckOptions, io: ConfigCheckIo): number {
  let loaded: ReturnType<typeof loadConfig>;
  try {
    loaded = loadConfig({ file: opts.config, env: io.env, defaultFiles: io.defaultFiles });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    if (opts.json) {
      io.stdout(`${JSON.stringify({ valid: false, problems: err.problems }, null, 2)}\n`);
    }
    io.stderr(`berth: invalid configuration:\n${err.problems.map((p) => `  - ${p}`).join("\n")}\n`);
    return 1;
  }
  const { config, warnings, file, sources } = loaded;
  for (const warning of warnings) io.stderr(`warning: ${warning}\n`);
  // [tls, issue 15] the ACME certificate and why the last attempt failed (DNS, port 80, rate limit)
  const acme = acmeReport(config, dataDirOf(config));
  if (!config.http.tls.letsencrypt && !config.http.tls.certificate)
    acme.notes.push(...privateCaReport(dataDirOf(config)));
  for (const problem of acme.problems) io.stderr(`warning: ${problem}\n`);
  const masked = maskSecrets(config) as Record<string, unknown>;
  if (opts.json) {
    const described: Record<string, string> = {};
    for (const [key, source] of Object.entries(sources)) described[key] = describeSource(source);
    io.stdout(
      `${JSON.stringify({ valid: true, file: file ?? null, config: masked, sources: described, warnings, ...(config.http.tls.letsencrypt ? { acme } : {}) }, null, 2)}\n`,
    );
    return 0;
  }
  if (opts.quiet) return 0;
  const header = [
    "# Berth configuration: valid",
    file ? `# file: ${file}` : "# file: none (defaults, REGISTRY_* environment)",
    "# precedence: defaults < file < REGISTRY_* environment < flags; secrets are masked",
    ...acme.notes.map((n) => `# ${n}`),
    ...acme.problems.map((p) => `# ${p}`),
    "",
  ];
  io.stdout(`${header.join("\n")}${renderWithSources(config, masked, sources)}`);
  return 0;
}

/** The configuration as YAML with `# source` after every value; durations shown as "24h". */
export function renderWithSources(
  config: Config,
  masked: Record<string, unknown>,
  sources: Record<string, ReturnType<typeof loadConfig>["sources"][string]>,
): string {
  const durations = new Set<string>();
  collectDurations(config, configSchema, [], durations);
  const shown = replaceDurations(masked, [], durations) as Record<string, unknown>;
  const doc = new YAML.Document(shown);
  visit(doc, {
    Pair(_key, pair, ancestry) {
      const value = pair.value as Node | null;
      if (!value) return;
      const leaf = isScalar(value) || isSeq(value) || (isMap(value) && value.items.length === 0);
      if (!leaf) return;
      const path = pathOf(ancestry as readonly unknown[], pair);
      const source = sources[formatPath(path)];
      const comment = ` ${source ? describeSource(source) : "default"}`;
      if (isSeq(value) && !value.items.every((item) => isScalar(item))) {
        // A list of mappings stays in block style; its source goes after the key.
        if (isScalar(pair.key)) pair.key.comment = comment;
        return visit.SKIP;
      }
      if (isSeq(value) || isMap(value)) value.flow = true;
      value.comment = comment;
      return visit.SKIP;
    },
  });
  return doc.toString({ lineWidth: 0 });
}

function pathOf(ancestry: readonly unknown[], pair: { key: unknown }): Path {
  const path: (string | number)[] = [];
  const nodes = [...ancestry, pair];
  for (let i = 0; i < nodes.length; i++) {
    const node = nodes[i] as { key?: unknown; items?: unknown[] };
    if (node && typeof node === "object" && "key" in node) {
      const key = node.key;
      path.push(isScalar(key) ? String(key.value) : String(key));
    } else if (isSeq(node) && i + 1 < nodes.length) {
      path.push(node.items.indexOf(nodes[i + 1]));
    }
  }
  return path;
}

function collectDurations(value: unknown, schema: unknown, path: Path, out: Set<string>): void {
  const zschema = schema as Parameters<typeof expected>[0];
  if (isBuiltFrom(zschema, duration)) {
    if (typeof value === "number") out.add(formatPath(path));
    return;
  }
  let e = expected(zschema);
  if (e.kind === "union" && isPlainObject(value)) e = mappingOption(e.options) ?? e;
  if (e.kind === "object" && isPlainObject(value)) {
    for (const [k, v] of Object.entries(value))
      if (e.fields[k]) collectDurations(v, e.fields[k], [...path, k], out);
  } else if (e.kind === "record" && isPlainObject(value)) {
    for (const [k, v] of Object.entries(value)) collectDurations(v, e.value, [...path, k], out);
  } else if (e.kind === "array" && Array.isArray(value)) {
    value.forEach((v, i) => {
      collectDurations(v, e.element, [...path, i], out);
    });
  }
}

function replaceDurations(value: unknown, path: Path, durations: Set<string>): unknown {
  if (typeof value === "number" && durations.has(formatPath(path))) return formatDuration(value);
  if (Array.isArray(value)) return value.map((v, i) => replaceDurations(v, [...path, i], durations));
  if (isPlainObject(value)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = replaceDurations(v, [...path, k], durations);
    return out;
  }
  return value;
}

/** 604800000 → "168h", 90000 → "1m30s", 250 → "250ms", 0 → "0s". */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  let rest = ms;
  let out = "";
  for (const [unit, size] of [
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1000],
  ] as const) {
    if (rest >= size) {
      const n = Math.floor(rest / size);
      out += `${n}${unit}`;
      rest -= n * size;
    }
  }
  if (rest > 0) out += `${Math.round(rest * 1000) / 1000}ms`;
  return out;
}
