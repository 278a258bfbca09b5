import type { AccessRequest, Action } from "./types.js";

const KNOWN_ACTIONS = new Set<Action>(["pull", "push", "delete", "*"]);

/**
 * Parses one scope of the Docker token specification, `type[(class)]:name:action[,action]`. The
 * name may itself hold colons (`repository:localhost:5000/app:pull`): the type ends at the first
 * colon and the actions start after the last. Unknown actions are dropped (a scope asking only for
 * them grants nothing); unknown types give null.
 */
export function parseScope(scope: string): AccessRequest | null {
  const first = scope.indexOf(":");
  const last = scope.lastIndexOf(":");
  if (first <= 0 || last === first) return null;
  const type = scope.slice(0, first).replace(/\(.*\)$/, "");
  const name = scope.slice(first + 1, last);
  if (name === "" || (type !== "repository" && type !== "registry")) return null;
  const actions = scope
    .slice(last + 1)
    .split(",")
    .map((a) => a.trim())
    .filter((a): a is Action => KNOWN_ACTIONS.has(a as Action));
  return { type, name, actions: [...new Set(actions)] };
}

/** Parses every scope in `values` (repeated `scope` parameters, each possibly space-separated). */
export function parseScopes(values: string | string[] | undefined): AccessRequest[] {
  const list = values === undefined ? [] : Array.isArray(values) ? values : [values];
  const out: AccessRequest[] = [];
  for (const value of list) {
    for (const part of value.split(" ")) {
      if (part === "") continue;
      const parsed = parseScope(part);
      if (parsed) out.push(parsed);
    }
  }
  return mergeScopes(out);
}

/** Merges scopes naming the same resource. */
export function mergeScopes(scopes: AccessRequest[]): AccessRequest[] {
  const byKey = new Map<string, AccessRequest>();
  for (const s of scopes) {
    const key = `${s.type}:${s.name}`;
    const prev = byKey.get(key);
    if (prev) prev.actions = [...new Set([...prev.actions, ...s.actions])];
    else byKey.set(key, { type: s.type, name: s.name, actions: [...s.actions] });
  }
  return [...byKey.values()];
}

export function formatScope(scope: AccessRequest): string {
  return `${scope.type}:${scope.name}:${scope.actions.join(",")}`;
}

/** A quoted-string for an auth-param (RFC 7235): backslash and double quote escaped. */
function quote(value: string): string {
  return `"${value.replace(/["\\]/g, "\\$&")}"`;
}

export function basicChallenge(realm: string): string {
  return `Basic realm=${quote(realm)}`;
}

/** `Bearer realm="...",service="...",scope="a b",error="..."`, scopes space-separated as Distribution does. */
export function bearerChallenge(options: {
  realm: string;
  service: string;
  scopes?: AccessRequest[];
  error?: "invalid_token" | "insufficient_scope";
}): string {
  let header = `Bearer realm=${quote(options.realm)},service=${quote(options.service)}`;
  const scopes = (options.scopes ?? []).filter((s) => s.actions.length > 0);
  if (scopes.length > 0) header += `,scope=${quote(scopes.map(formatScope).join(" "))}`;
  if (options.error) header += `,error=${quote(options.error)}`;
  return header;
}
