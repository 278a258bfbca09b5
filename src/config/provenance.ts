/** Where a configuration value came from. */
export type Source =
  | { kind: "default" }
  | { kind: "file"; file: string }
  | { kind: "env"; name: string }
  | { kind: "flag"; name?: string };

export function describeSource(source: Source): string {
  switch (source.kind) {
    case "default":
      return "default";
    case "file":
      return `file ${source.file}`;
    case "env":
      return `env ${source.name}`;
    case "flag":
      return source.name ? `flag ${source.name}` : "flag";
  }
}

export type Path = readonly (string | number)[];

/** Dotted display form: `http.headers.Access-Control-Allow-Origin`, `notifications.endpoints[0].url`. */
export function formatPath(path: Path): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? part : `.${part}`;
  }
  return out || "(root)";
}

/** The path as a pattern for the compatibility tables: list indices become `*`. */
export function patternOf(path: Path, wildcard: (index: number) => boolean = () => false): string[] {
  return path.map((part, i) => (typeof part === "number" || wildcard(i) ? "*" : part));
}

const SEP = "\u0000";
const keyOf = (path: Path) => path.map(String).join(SEP);

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}

/**
 * Sources of the leaves of a configuration tree being assembled. A leaf is a scalar, a list, or an
 * empty mapping. Setting a path forgets the sources of everything below and above it that it
 * replaced.
 */
export class Provenance {
  private readonly map = new Map<string, { path: Path; source: Source }>();

  record(path: Path, value: unknown, source: Source): void {
    if (isPlainObject(value) && Object.keys(value).length > 0) {
      for (const [k, v] of Object.entries(value)) this.record([...path, k], v, source);
      return;
    }
    this.map.set(keyOf(path), { path: [...path], source });
  }

  /** Forget `path`, everything below it, and any leaf recorded at one of its ancestors. */
  forget(path: Path): void {
    const key = keyOf(path);
    for (const k of [...this.map.keys()]) {
      if (k === key || k.startsWith(key + SEP)) this.map.delete(k);
    }
    for (let n = 0; n < path.length; n++) this.map.delete(keyOf(path.slice(0, n)));
  }

  get(path: Path): Source | undefined {
    return this.map.get(keyOf(path))?.source;
  }

  /** The source for a path or the nearest ancestor that was set as a whole. */
  find(path: Path): Source | undefined {
    for (let n = path.length; n >= 0; n--) {
      const hit = this.map.get(keyOf(path.slice(0, n)));
      if (hit) return hit.source;
    }
    return undefined;
  }

  /** The source of the path, an ancestor set as a whole, or else of something set below it. */
  near(path: Path): Source | undefined {
    const found = this.find(path);
    if (found) return found;
    const key = keyOf(path);
    for (const [k, v] of this.map) if (k.startsWith(key + SEP)) return v.source;
    return undefined;
  }

  /** Whether anything at or below this path was set by a layer. */
  has(path: Path): boolean {
    const key = keyOf(path);
    for (const k of this.map.keys()) if (k === key || k.startsWith(key + SEP)) return true;
    return false;
  }
}

/** Each leaf of `value` (scalars, lists, empty mappings) with its path. */
export function* leaves(value: unknown, path: Path = []): Generator<[Path, unknown]> {
  if (isPlainObject(value) && Object.keys(value).length > 0) {
    for (const [k, v] of Object.entries(value)) yield* leaves(v, [...path, k]);
    return;
  }
  yield [path, value];
}

const SECRET_KEY =
  /(secret|password|passwd|passphrase|token|apikey|api_key|accesskey|licensekey|credential|privatekey|authorization|cookie)/i;
/** Keys that look like secrets but hold something else (a URL, a path, a section). */
const NOT_SECRET =
  /^(realm|service|issuer|rootcertbundle|tokenurl|path|file|autoredirect|autoredirectpath)$/i;
export const MASK = "********";

export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key) && !NOT_SECRET.test(key);
}

/** A copy with secrets replaced by `********` and passwords removed from URLs. */
export function maskSecrets(value: unknown, key = ""): unknown {
  if (Array.isArray(value)) return value.map((v) => maskSecrets(v, key));
  if (isPlainObject(value)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      // A webhook's headers carry credentials under any name (X-Api-Key, ...): every value is masked.
      out[k] = key === "endpoints" && k === "headers" ? maskAll(v) : maskSecrets(v, k);
    }
    return out;
  }
  if (value === undefined || value === null || value === "") return value;
  if (key && isSecretKey(key) && (typeof value === "string" || typeof value === "number")) return MASK;
  if (typeof value === "string") return maskUrlPassword(value);
  return value;
}

function maskAll(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(maskAll);
  if (isPlainObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, maskAll(v)]));
  return value === undefined || value === null ? value : MASK;
}

/** `postgres://user:secret@host/db` → `postgres://user:********@host/db`. */
export function maskUrlPassword(text: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\/[^/@\s]*:[^/@\s]*@/i.test(text)) return text;
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/:@\s]*):[^/@\s]*@/i, `$1:${MASK}@`);
}
