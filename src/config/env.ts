import type { z } from "zod";
import { DISTRIBUTION_ONLY } from "./compat.js";
import { describeExpected, expected, mappingOption } from "./introspect.js";
import { formatPath, isPlainObject } from "./provenance.js";

export const ENV_PREFIX = "REGISTRY_";
/** Names the configuration file, as in registry:2; not a configuration key. */
export const CONFIG_PATH_VAR = "REGISTRY_CONFIGURATION_PATH";

export interface EnvVar {
  name: string;
  value: string;
}

/**
 * The REGISTRY_* variables in the order Distribution applies them: sorted by name, so that
 * REGISTRY_AUTH=htpasswd is applied before REGISTRY_AUTH_HTPASSWD_PATH fills it in.
 */
export function registryVariables(env: NodeJS.ProcessEnv): EnvVar[] {
  const out: EnvVar[] = [];
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || !name.startsWith(ENV_PREFIX) || name === CONFIG_PATH_VAR) continue;
    out.push({ name, value });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export type EnvTarget =
  | { kind: "key"; path: string[]; schema: z.ZodType | undefined }
  | { kind: "foreign"; reason: string }
  | { kind: "error"; message: string };

/** Mappings whose keys are HTTP header names: they keep the case written in the variable's name. */
function keepsCase(path: readonly string[]): boolean {
  return path[path.length - 1] === "headers";
}

/**
 * Maps a variable's name onto a configuration path, the way registry:2 does: the part after
 * REGISTRY_ split on `_`, each part matched case-insensitively against the keys the schema knows.
 * Inside free-form mappings keys are lower-cased, except header names (http.headers.*), which keep
 * their case: REGISTRY_HTTP_HEADERS_Access-Control-Allow-Origin → http.headers.Access-Control-Allow-Origin.
 *
 * `current` is the configuration assembled so far, so that a key already present in a mapping
 * (from the file) is overridden rather than duplicated in another case.
 */
export function resolveVariable(name: string, root: z.ZodType, current: unknown): EnvTarget {
  const segments = name.slice(ENV_PREFIX.length).split("_");
  if (segments.some((s) => s === "")) {
    return segments.length > 0 && segments[0] !== "" && isKnownTop(segments[0]!, root)
      ? { kind: "error", message: `${name}: empty part in the name (two underscores in a row?)` }
      : { kind: "foreign", reason: "not a configuration key" };
  }
  const path: string[] = [];
  let schema: z.ZodType | undefined = root;
  let node: unknown = current;
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!;
    if (schema === undefined) {
      // Below a key the schema does not describe (a Distribution-only section): free-form.
      path.push(seg.toLowerCase());
      continue;
    }
    let e = expected(schema);
    if (e.kind === "union") e = mappingOption(e.options) ?? e;
    if (e.kind === "object") {
      const key = Object.keys(e.fields).find((k) => k.toUpperCase() === seg.toUpperCase());
      if (key !== undefined) {
        path.push(key);
        schema = e.fields[key];
        node = isPlainObject(node) ? node[key] : undefined;
        continue;
      }
      const lower = seg.toLowerCase();
      if (DISTRIBUTION_ONLY[[...path, lower].join(".")]) {
        path.push(lower);
        schema = undefined;
        continue;
      }
      if (i === 0) {
        // Kubernetes service links (REGISTRY_PORT, REGISTRY_SERVICE_HOST for a Service named
        // "registry") and the like: not ours. registry:2 ignores these with a warning too.
        return { kind: "foreign", reason: `no configuration key "${lower}"` };
      }
      return {
        kind: "error",
        message: `${name}: ${formatPath(path)} has no key "${lower}"; it accepts: ${Object.keys(e.fields).join(", ")}`,
      };
    }
    if (e.kind === "record" || e.kind === "any") {
      const existing = isPlainObject(node)
        ? Object.keys(node).find((k) => k.toUpperCase() === seg.toUpperCase())
        : undefined;
      const key = existing ?? (keepsCase(path) ? seg : seg.toLowerCase());
      path.push(key);
      schema = e.kind === "record" ? e.value : undefined;
      node = isPlainObject(node) ? node[key] : undefined;
      continue;
    }
    if (e.kind === "array") {
      return {
        kind: "error",
        message: `${name}: ${formatPath(path)} is a list; set it whole with YAML list syntax, e.g. ${ENV_PREFIX}${segments
          .slice(0, i)
          .join("_")}='[a, b]'`,
      };
    }
    return {
      kind: "error",
      message: `${name}: ${formatPath(path)} is ${describeExpected(e)} and has no key "${seg.toLowerCase()}"`,
    };
  }
  return { kind: "key", path, schema };
}

function isKnownTop(seg: string, root: z.ZodType): boolean {
  const e = expected(root);
  return e.kind === "object" && Object.keys(e.fields).some((k) => k.toUpperCase() === seg.toUpperCase());
}
