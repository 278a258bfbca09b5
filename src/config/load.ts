import { existsSync, readFileSync } from "node:fs";
import net from "node:net";
import type { z } from "zod";
import { parseAddr } from "./addr.js";
import {
  AUTH_METHODS,
  DISTRIBUTION_ONLY,
  NOT_IMPLEMENTED,
  STORAGE_DRIVERS,
  VALUE_ALIASES,
} from "./compat.js";
import { CONFIG_PATH_VAR, registryVariables, resolveVariable } from "./env.js";
import { type Expected, expected, mappingOption, unionAccepts } from "./introspect.js";
import {
  describeSource,
  formatPath,
  isPlainObject,
  isSecretKey,
  leaves,
  MASK,
  type Path,
  Provenance,
  type Source,
} from "./provenance.js";
import { type Config, type ConfigInput, configSchema } from "./schema.js";
import { tlsProblems } from "./sections/tls.js";
import { parseYaml, type ScalarTexts, textKey, YamlError } from "./yaml.js";

export type { Source } from "./provenance.js";

/** Looked for, in this order, when neither --config nor REGISTRY_CONFIGURATION_PATH names a file. */
// Only Berth's own path: a host may run Distribution beside Berth with its own /etc/docker/registry/config.yml.
export const DEFAULT_CONFIG_FILES = ["/etc/berth/config.yml"];

export interface LoadOptions {
  /** Path of a YAML file given with --config (or found at /etc/berth/config.yml). */
  file?: string;
  /** Environment to read REGISTRY_* variables from (process.env by default). */
  env?: NodeJS.ProcessEnv;
  /** Values from command-line flags: they win over file and environment. */
  flags?: ConfigInput;
  /** Flag spellings by dotted key ("http.addr" → "--addr"), shown as the source of those values. */
  flagNames?: Record<string, string>;
  /** Files looked for when no file is named (DEFAULT_CONFIG_FILES unless given; [] for none). */
  defaultFiles?: string[];
}

export interface LoadedConfig {
  config: Config;
  /** Messages to log at start-up (keys that are not implemented, deprecated spellings, ...). */
  warnings: string[];
  /** The configuration file that was read, if any. */
  file?: string;
  /** Where each leaf value came from, by dotted key ("storage.delete.enabled" → env REGISTRY_STORAGE_DELETE_ENABLED). */
  sources: Record<string, Source>;
}

/** The configuration cannot be used; `problems` each name a key (or the file) and what was expected. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(
      problems.length === 1
        ? `invalid configuration: ${problems[0]}`
        : `invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`,
    );
    this.name = "ConfigError";
  }
}

type Tree = Record<string, unknown>;

interface State {
  tree: Tree;
  prov: Provenance;
  texts: ScalarTexts;
  problems: string[];
  warnings: string[];
}

/**
 * Builds the effective configuration: defaults < YAML file < REGISTRY_* environment < flags.
 * Throws ConfigError when the result is unusable.
 */
export function loadConfig(options: LoadOptions = {}): LoadedConfig {
  const env = options.env ?? process.env;
  const state: State = { tree: {}, prov: new Provenance(), texts: new Map(), problems: [], warnings: [] };

  const file = pickFile(options, env);
  if (file) applyFile(state, file);
  applyEnvironment(state, env);
  if (options.flags) applyFlags(state, options.flags, options.flagNames ?? {});
  if (state.problems.length) throw new ConfigError(state.problems);

  normalizeAliases(state);
  const checked = check(state, state.tree, configSchema, [], []);
  const tree = checked === REMOVE ? {} : (checked as Tree);
  if (state.problems.length) throw new ConfigError(state.problems);

  const result = configSchema.safeParse(tree);
  if (!result.success) {
    throw new ConfigError(result.error.issues.map((issue) => describeIssue(state, tree, issue)));
  }
  const config = result.data;
  semanticChecks(state, config);
  corsCheck(state, config);
  if (state.problems.length) throw new ConfigError(state.problems);

  const sources: Record<string, Source> = {};
  for (const [path] of leaves(config)) {
    sources[formatPath(path)] = state.prov.get(path) ?? { kind: "default" };
  }
  return { config, warnings: state.warnings, file, sources };
}

// ---------------------------------------------------------------------------------------------
// Layers

function pickFile(options: LoadOptions, env: NodeJS.ProcessEnv): string | undefined {
  if (options.file) return options.file;
  const named = env[CONFIG_PATH_VAR];
  if (named) return named;
  return (options.defaultFiles ?? DEFAULT_CONFIG_FILES).find((f) => existsSync(f));
}

function applyFile(state: State, file: string): void {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === "ENOENT"
        ? "no such file"
        : e.code === "EACCES"
          ? "permission denied"
          : e.code === "EISDIR"
            ? "it is a directory"
            : e.message;
    state.problems.push(`cannot read configuration file ${file}: ${why}`);
    return;
  }
  let value: unknown;
  try {
    value = parseYaml(text, file, [], state.texts);
  } catch (err) {
    state.problems.push(err instanceof YamlError ? err.message : `${file}: ${(err as Error).message}`);
    return;
  }
  if (value === null || value === undefined) return;
  if (!isPlainObject(value)) {
    state.problems.push(
      `${file}: the top level must be a mapping of keys (version, log, storage, http, ...)`,
    );
    return;
  }
  state.tree = value;
  state.prov.record([], value, { kind: "file", file });
}

function applyEnvironment(state: State, env: NodeJS.ProcessEnv): void {
  for (const { name, value: raw } of registryVariables(env)) {
    const target = resolveVariable(name, configSchema, state.tree);
    if (target.kind === "foreign") {
      state.warnings.push(`ignoring environment variable ${name}: ${target.reason}`);
      continue;
    }
    if (target.kind === "error") {
      state.problems.push(target.message);
      continue;
    }
    const source: Source = { kind: "env", name };
    const wantsString = target.schema !== undefined && expected(target.schema).kind === "string";
    let value: unknown;
    try {
      value = parseYaml(raw, `environment variable ${name}`, target.path, state.texts);
    } catch (err) {
      if (!wantsString) {
        state.problems.push(
          err instanceof YamlError
            ? `${err.message}${raw.includes("*") ? " (quote a lone *, e.g. '[\"*\"]')" : ""}`
            : `${name}: ${(err as Error).message}`,
        );
        continue;
      }
      // A string that is not valid YAML on its own (a secret starting with %, say): take it as written.
      value = raw;
    }
    if (
      target.path.length === 1 &&
      typeof value === "string" &&
      (target.path[0] === "storage" || target.path[0] === "auth")
    ) {
      chooseNamedSection(state, target.path[0], value, source);
      continue;
    }
    setValue(state, target.path, value, source);
  }
}

/**
 * REGISTRY_STORAGE=filesystem and REGISTRY_AUTH=htpasswd: a string names the storage driver or the
 * authentication method. Other drivers or methods are dropped (registry:2 allows exactly one);
 * parameters of the named one and keys that are not drivers (delete, maintenance, ...) stay.
 */
function chooseNamedSection(state: State, key: "storage" | "auth", name: string, source: Source): void {
  const choices = key === "storage" ? STORAGE_DRIVERS : AUTH_METHODS;
  const chosen = name.trim().toLowerCase();
  if (chosen === "") {
    state.problems.push(
      `${source.kind === "env" ? source.name : key}: expected the name of a ${key === "storage" ? "storage driver" : "authentication method"}`,
    );
    return;
  }
  const current = isPlainObject(state.tree[key]) ? (state.tree[key] as Tree) : {};
  if (!isPlainObject(state.tree[key])) {
    state.prov.forget([key]);
    state.tree[key] = current;
  }
  for (const other of choices) {
    if (other !== chosen && other in current) {
      // storage.filesystem.rootdirectory is also Berth's data directory (its database, keys and scratch),
      // whatever driver holds the blobs: it stays, so that REGISTRY_STORAGE=s3 on an image whose
      // configuration names /var/lib/registry keeps the database in that volume (issue 20).
      const dataDir = key === "storage" && other === "filesystem" ? keptDataDir(state, current[other]) : null;
      delete current[other];
      state.prov.forget([key, other]);
      if (dataDir) {
        current[other] = { rootdirectory: dataDir.value };
        state.prov.record([key, other, "rootdirectory"], dataDir.value, dataDir.source);
      }
    }
  }
  if (!isPlainObject(current[chosen])) {
    current[chosen] = {};
    state.prov.forget([key, chosen]);
    state.prov.record([key, chosen], {}, source);
  }
}

/** The data directory set in a filesystem section that a driver switch drops, with where it came from. */
function keptDataDir(state: State, section: unknown): { value: string; source: Source } | null {
  if (!isPlainObject(section)) return null;
  const value = (section as Tree).rootdirectory;
  if (typeof value !== "string" || value === "") return null;
  const source = state.prov.find(["storage", "filesystem", "rootdirectory"]) ?? { kind: "default" as const };
  return { value, source };
}

function applyFlags(state: State, flags: ConfigInput, names: Record<string, string>): void {
  for (const [path, value] of leaves(flags)) {
    if (value === undefined) continue;
    const name = names[formatPath(path)];
    setValue(state, path.map(String), value, name ? { kind: "flag", name } : { kind: "flag" });
  }
}

function setValue(state: State, path: string[], value: unknown, source: Source): void {
  if (path.length === 0) return;
  let node: Tree = state.tree;
  for (let i = 0; i < path.length - 1; i++) {
    const key = path[i]!;
    if (!isPlainObject(node[key])) node[key] = {};
    node = node[key] as Tree;
  }
  const last = path[path.length - 1]!;
  state.prov.forget(path);
  if (value === null || value === undefined) {
    // An empty variable (REGISTRY_HTTP_HOST=) unsets the key: its default applies.
    delete node[last];
    return;
  }
  node[last] = value;
  state.prov.record(path, value, source);
}

function normalizeAliases(state: State): void {
  for (const key of ["storage", "auth"] as const) {
    const value = state.tree[key];
    if (typeof value === "string") {
      const source = state.prov.find([key]) ?? { kind: "default" };
      delete state.tree[key];
      chooseNamedSection(state, key, value, source);
    }
  }
  if ("loglevel" in state.tree) {
    const value = state.tree.loglevel;
    delete state.tree.loglevel;
    const from = state.prov.find(["loglevel"]) ?? { kind: "default" };
    state.prov.forget(["loglevel"]);
    const log = isPlainObject(state.tree.log) ? (state.tree.log as Tree) : undefined;
    if (log && "level" in log) {
      state.warnings.push("loglevel is deprecated and log.level is set too; loglevel is ignored");
    } else if (value !== null && value !== undefined) {
      state.warnings.push("loglevel is deprecated; use log.level (taken as log.level for now)");
      setValue(state, ["log", "level"], value, from);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Checking keys and coercing scalars the way Distribution's YAML decoder does

const REMOVE = Symbol("remove");
const BOOLEAN_WORDS: Record<string, boolean> = {
  true: true,
  false: false,
  yes: true,
  no: false,
  on: true,
  off: false,
  y: true,
  n: false,
};

function sourceNote(state: State, path: Path): string {
  const source = state.prov.near(path);
  return source && source.kind !== "default" ? ` (${describeSource(source)})` : "";
}

function check(state: State, value: unknown, schema: z.ZodType, path: Path, pattern: string[]): unknown {
  let e: Expected = expected(schema);
  if (value === null) {
    // `key:` with nothing after it: an empty section, or an unset value.
    if (e.kind === "object" || e.kind === "record") return {};
    if (e.kind === "union" && mappingOption(e.options)) return {};
    return REMOVE;
  }
  if (e.kind === "union" && isPlainObject(value)) e = mappingOption(e.options) ?? e;
  switch (e.kind) {
    case "object": {
      if (!isPlainObject(value)) return value;
      const out: Tree = {};
      for (const [key, child] of Object.entries(value)) {
        const childPath = [...path, key];
        const childPattern = [...pattern, key];
        const dotted = childPattern.join(".");
        const fieldSchema = e.fields[key];
        if (fieldSchema === undefined) {
          const compat = DISTRIBUTION_ONLY[dotted];
          if (compat) {
            const message = `${formatPath(childPath)}${sourceNote(state, childPath)}: ${compat.note}`;
            if (compat.fatal) state.problems.push(message);
            else state.warnings.push(`not implemented: ${message}`);
            continue;
          }
          state.problems.push(
            `${formatPath(childPath)}${sourceNote(state, childPath)}: unknown key; ${
              path.length ? formatPath(path) : "the top level"
            } accepts: ${Object.keys(e.fields).join(", ")}`,
          );
          continue;
        }
        const note = NOT_IMPLEMENTED[dotted];
        if (note && child !== null && !isHttpDebugForMetrics(dotted, value)) {
          state.warnings.push(
            `not implemented: ${formatPath(childPath)}${sourceNote(state, childPath)}: ${note}`,
          );
        }
        const checked = check(state, child, fieldSchema, childPath, childPattern);
        if (checked !== REMOVE) out[key] = checked;
      }
      return out;
    }
    case "record": {
      if (!isPlainObject(value)) return value;
      const out: Tree = {};
      for (const [key, child] of Object.entries(value)) {
        const checked = check(state, child, e.value, [...path, key], [...pattern, "*"]);
        if (checked !== REMOVE) out[key] = checked;
      }
      return out;
    }
    case "array": {
      // A single value where a list is expected (`Access-Control-Allow-Origin: "*"`): a list of one.
      const list = Array.isArray(value) ? value : isScalar(value) ? [value] : undefined;
      if (!list) return value;
      return list
        .map((item, i) => check(state, item, e.element, [...path, i], [...pattern, "*"]))
        .filter((item) => item !== REMOVE);
    }
    case "string":
      return toText(state, value, path);
    case "boolean":
      if (typeof value === "string") {
        const word = BOOLEAN_WORDS[value.trim().toLowerCase()];
        if (word !== undefined) return word;
      }
      return value;
    case "number":
      if (typeof value === "string" && /^\s*-?\d+(\.\d+)?\s*$/.test(value)) return Number(value);
      return value;
    case "enum": {
      const text = toText(state, value, path);
      if (typeof text !== "string") return value;
      if (e.values.includes(text)) return text;
      const alias = VALUE_ALIASES[pattern.join(".")]?.[text.toLowerCase()];
      if (alias) return alias;
      const folded = e.values.find((v) => v.toLowerCase() === text.toLowerCase());
      return folded ?? text;
    }
    case "union": {
      if (typeof value === "number" && unionAccepts(e.options, "string")) {
        // A string is wanted if a number is not; or a number written in a way a string keeps (`version: 0.10`).
        const text = state.texts.get(textKey(path));
        if (!unionAccepts(e.options, "number") || (text !== undefined && text !== String(value))) {
          return toText(state, value, path);
        }
      }
      if (
        typeof value === "boolean" &&
        !unionAccepts(e.options, "boolean") &&
        unionAccepts(e.options, "string")
      ) {
        return toText(state, value, path);
      }
      return value;
    }
    default:
      return value;
  }
}

function isHttpDebugForMetrics(dotted: string, parent: Tree): boolean {
  if (dotted !== "http.debug.addr") return false;
  const prometheus = parent.prometheus;
  return isPlainObject(prometheus) && (prometheus.enabled === true || prometheus.enabled === "true");
}

function isScalar(value: unknown): boolean {
  return typeof value === "string" || typeof value === "number" || typeof value === "boolean";
}

/** A YAML scalar read as a string: what was written (`0.10`, `0123`, `2024-01-01`), not what YAML made of it. */
function toText(state: State, value: unknown, path: Path): unknown {
  if (typeof value === "string") return value;
  if (
    typeof value === "number" ||
    typeof value === "boolean" ||
    typeof value === "bigint" ||
    value instanceof Date
  ) {
    const text = state.texts.get(textKey(path));
    if (text !== undefined) return text;
    return value instanceof Date ? value.toISOString() : String(value);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Messages

interface Issue {
  code: string;
  path: PropertyKey[];
  message: string;
  expected?: string;
  values?: unknown[];
  keys?: string[];
}

function describeIssue(state: State, tree: Tree, issue: Issue): string {
  const path = issue.path.map((p) => (typeof p === "number" ? p : String(p)));
  let value: unknown = tree;
  for (const part of path)
    value = isPlainObject(value) || Array.isArray(value) ? (value as Tree)[part] : undefined;
  const where = `${formatPath(path)}${sourceNote(state, path)}`;
  if (issue.code === "unrecognized_keys" && issue.keys) {
    return `${where}: unknown key${issue.keys.length > 1 ? "s" : ""} ${issue.keys.join(", ")}`;
  }
  if (value === undefined) {
    const wanted = issue.expected ? `expected ${article(issue.expected)}` : issue.message;
    const variable = `REGISTRY_${path.map((p) => String(p).toUpperCase()).join("_")}`;
    return `${where}: missing; ${wanted} (set ${formatPath(path)} in the file or ${variable})`;
  }
  let message = issue.message.replace(/^Invalid (input|option): /, "");
  if (issue.code === "invalid_type" && issue.expected) message = `expected ${article(issue.expected)}`;
  const last = path[path.length - 1];
  // A webhook's header values are credentials whatever the header is called (issue 14).
  const webhookHeader = path[0] === "notifications" && path.includes("headers");
  const shown = webhookHeader || (typeof last === "string" && isSecretKey(last)) ? MASK : show(value);
  if (issue.code === "custom" || /\bgot\b/.test(message)) return `${where}: ${message}`;
  return `${where}: ${message}, got ${shown}`;
}

function article(type: string): string {
  if (type === "array") return "a list";
  if (type === "object" || type === "record") return "a mapping";
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

function show(value: unknown): string {
  if (Array.isArray(value)) return `a list ${truncate(JSON.stringify(value))}`;
  if (isPlainObject(value)) return `a mapping ${truncate(JSON.stringify(value))}`;
  if (typeof value === "string") return truncate(JSON.stringify(value));
  return String(value);
}

function truncate(text: string): string {
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

// ---------------------------------------------------------------------------------------------
// Checks that need the whole parsed configuration

function semanticChecks(state: State, config: Config): void {
  state.problems.push(...tlsProblems(config)); // [tls, issue 15]
  if (config.http.net === "tcp") {
    try {
      parseAddr(config.http.addr);
    } catch (err) {
      state.problems.push(`http.addr${sourceNote(state, ["http", "addr"])}: ${(err as Error).message}`);
    }
  } else if (config.http.addr.trim() === "") {
    state.problems.push(
      `http.addr${sourceNote(state, ["http", "addr"])}: with http.net unix, expected the path of a socket`,
    );
  }
  if (config.log.formatter === "logstash") {
    state.warnings.push(
      "log.formatter: logstash is not supported by Berth; writing JSON lines (log.formatter: json) instead",
    );
  }
  const host = config.http.host;
  if (host !== undefined && host !== "") {
    let ok = false;
    try {
      const url = new URL(host);
      ok = (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "";
    } catch {}
    if (!ok) {
      state.problems.push(
        `http.host${sourceNote(state, ["http", "host"])}: expected an absolute URL such as https://registry.example.com, got ${show(host)}`,
      );
    }
  }
  if (!config.http.prefix.startsWith("/")) {
    state.problems.push(
      `http.prefix${sourceNote(state, ["http", "prefix"])}: expected a path starting with /, got ${show(config.http.prefix)}`,
    );
  }
  config.http.trustedproxies.forEach((entry, i) => {
    if (!isProxyEntry(entry)) {
      state.problems.push(
        `http.trustedproxies[${i}]${sourceNote(state, ["http", "trustedproxies"])}: expected an IP address or a CIDR range such as 10.0.0.0/8, got ${show(entry)}`,
      );
    }
  });
  for (const [name, values] of Object.entries(config.http.headers)) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
      state.problems.push(`http.headers.${name}: not a valid HTTP header name`);
    }
    for (const v of values) {
      if (/[\r\n\0]/.test(v))
        state.problems.push(`http.headers.${name}: header values cannot contain line breaks`);
    }
  }
}

/**
 * `Access-Control-Allow-Origin: *` with `Access-Control-Allow-Credentials: true` would let every web page
 * read the registry with its visitors' stored credentials (browsers refuse "*" with credentials, so a
 * server that honours both must echo any Origin). Refused, with what to write instead.
 */
function corsCheck(state: State, config: Config): void {
  let origins: { name: string; values: string[] } | undefined;
  let credentials = false;
  for (const [name, values] of Object.entries(config.http.headers)) {
    const lower = name.toLowerCase();
    if (lower === "access-control-allow-origin") {
      origins = { name, values: values.flatMap((v) => v.split(/[\s,]+/)).filter(Boolean) };
    }
    if (lower === "access-control-allow-credentials") {
      credentials ||= values.some((v) => v.trim().toLowerCase() === "true");
    }
  }
  if (!origins || !credentials || !origins.values.includes("*")) return;
  state.problems.push(
    `http.headers.${origins.name}${sourceNote(state, ["http", "headers", origins.name])}: "*" together with ` +
      "Access-Control-Allow-Credentials: true would let any web site read this registry with its visitors' " +
      "credentials. List the origins that may, e.g. Access-Control-Allow-Origin: " +
      '["https://ui.example.com"], or drop Access-Control-Allow-Credentials to allow every origin without credentials',
  );
}

/** An IP address, a CIDR range, or `*` (trust every peer: only when nothing else can reach Berth). */
export function isProxyEntry(entry: string): boolean {
  if (entry === "*") return true;
  const [addr, bits, extra] = entry.split("/");
  if (extra !== undefined || !addr) return false;
  const family = net.isIP(addr);
  if (family === 0) return false;
  if (bits === undefined) return true;
  if (!/^\d+$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}
