/**
 * The browser side of Berth's JSON API (`/api/v1`, documented in docs/api.md), and the login state.
 *
 * Login: with htpasswd auth the UI sends HTTP Basic credentials with every API call. They are kept
 * in sessionStorage (this tab, until it closes or the user logs out), never in localStorage.
 */
import type { ImageConfigSummary } from "../../src/http/api-types.ts";
import type { EventsStatus } from "../../src/registry/event-view.ts";
import type { Platform } from "./lib/format.ts";

export type { EventsStatus, Platform };

export interface WhoAmI {
  /** null for an anonymous caller. */
  user: string | null;
  auth: "none" | "htpasswd" | "token";
  /** Whether the registry allows deletes at all (storage.delete.enabled, not read-only). */
  deleteEnabled: boolean;
  readOnly: boolean;
  /** An administrator (everyone when authentication is off). */
  admin: boolean;
  /** Configured notification endpoints. */
  notifications: number;
}

export interface Permissions {
  pull: boolean;
  push: boolean;
  delete: boolean;
}

export interface RepositorySummary {
  name: string;
  namespace: string;
  tagCount: number;
  manifestCount: number;
  size: number;
  lastPush: number | null;
  /** Set when the repository is a pull-through cache: which upstream it mirrors. */
  proxy?: { upstream: string; remoteurl: string } | null;
}

export interface Page<T> {
  items: T[];
  total: number;
  page: number;
  limit: number;
}

export interface RepositoryList extends Page<RepositorySummary> {
  namespaces: Array<{ name: string; repositories: number }>;
}

export interface RepositoryDetail extends RepositorySummary {
  unique: number;
  shared: number;
  permissions: Permissions;
}

export interface TagItem {
  name: string;
  digest: string;
  mediaType: string;
  artifactType: string | null;
  size: number;
  pushed: number;
  created: string | null;
  platforms: Platform[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  artifactType?: string;
}

export interface IndexChild extends Descriptor {
  platform: Platform | null;
  /** Config and layers of the child (deduplicated), when it is stored here. */
  totalSize: number | null;
  /** BuildKit stores attestations as index children with platform unknown/unknown. */
  attestationFor?: string;
  present: boolean;
}

export type ImageConfig = ImageConfigSummary;

export interface HistoryItem {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface Referrer {
  digest: string;
  mediaType: string;
  artifactType: string | null;
  size: number;
  annotations: Record<string, string>;
  pushed: number;
}

export interface ManifestDetail {
  repository: string;
  digest: string;
  mediaType: string;
  kind: "index" | "image" | "artifact";
  size: number;
  /** Manifest plus distinct config and layer blobs (plus children for an index). */
  totalSize: number;
  artifactType: string | null;
  subject: string | null;
  annotations: Record<string, string>;
  pushed: number;
  tags: string[];
  manifests: IndexChild[];
  platform: Platform | null;
  config: (Descriptor & { image: ImageConfig | null }) | null;
  layers: Descriptor[];
  history: HistoryItem[];
  referrers: Referrer[];
  /** Parent indexes in this repository that list this manifest. */
  parents: string[];
  permissions: Permissions;
}

export interface UsageRepository {
  name: string;
  size: number;
  unique: number;
  shared: number;
}

export interface Usage {
  /** Registry-wide totals: null unless the caller may pull every repository. */
  total: { bytes: number; blobs: number } | null;
  shared: { bytes: number; blobs: number } | null;
  /** Blobs no repository links: freed by the next garbage collection. */
  unlinked: { bytes: number; blobs: number } | null;
  repositories: Page<UsageRepository>;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }

  get unauthorized(): boolean {
    return this.status === 401;
  }
  get forbidden(): boolean {
    return this.status === 403;
  }
  get notFound(): boolean {
    return this.status === 404;
  }
}

const CREDENTIALS_KEY = "berth.credentials";
const USER_KEY = "berth.user";

function storage(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    return null;
  }
}

/** Base64 of UTF-8 bytes (btoa alone refuses characters outside Latin-1). */
function base64(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function basicAuthorization(user: string, password: string): string {
  return `Basic ${base64(`${user}:${password}`)}`;
}

export function storedUser(): string | null {
  return storage()?.getItem(USER_KEY) ?? null;
}

function storedAuthorization(): string | null {
  return storage()?.getItem(CREDENTIALS_KEY) ?? null;
}

export function forgetCredentials(): void {
  storage()?.removeItem(CREDENTIALS_KEY);
  storage()?.removeItem(USER_KEY);
}

async function parseError(res: Response): Promise<ApiError> {
  let code = "UNKNOWN";
  let message = `${res.status} ${res.statusText}`.trim();
  try {
    const body = (await res.json()) as { errors?: Array<{ code?: string; message?: string }> };
    const first = body.errors?.[0];
    if (first?.code) code = first.code;
    if (first?.message) message = first.message;
  } catch {
    // Not JSON (a proxy's error page): keep the status line.
  }
  return new ApiError(res.status, code, message);
}

async function request<T>(
  method: string,
  path: string,
  options: { authorization?: string | null; query?: Record<string, string | number | undefined> } = {},
): Promise<T> {
  const url = new URL(`/api/v1${path}`, window.location.origin);
  for (const [k, v] of Object.entries(options.query ?? {})) {
    if (v !== undefined && v !== "") url.searchParams.set(k, String(v));
  }
  // X-Berth-UI: a 401 comes back without WWW-Authenticate, so the browser shows our login form, not its dialog.
  const headers: Record<string, string> = { Accept: "application/json", "X-Berth-UI": "1" };
  const authorization = options.authorization === undefined ? storedAuthorization() : options.authorization;
  if (authorization) headers.Authorization = authorization;
  let res: Response;
  try {
    res = await fetch(url, { method, headers, credentials: "omit", cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, "NETWORK", `Berth could not be reached (${(err as Error).message}).`);
  }
  if (!res.ok) throw await parseError(res);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

function repoPath(name: string): string {
  return `/repositories/${name.split("/").map(encodeURIComponent).join("/")}`;
}

export const api = {
  whoami: () => request<WhoAmI>("GET", "/whoami"),

  /** Checks credentials; on success they are remembered for this browser tab. */
  async login(user: string, password: string): Promise<WhoAmI> {
    const authorization = basicAuthorization(user, password);
    const me = await request<WhoAmI>("GET", "/whoami", { authorization, query: { login: 1 } });
    if (!me.user) throw new ApiError(401, "UNAUTHORIZED", "The registry did not accept these credentials.");
    storage()?.setItem(CREDENTIALS_KEY, authorization);
    storage()?.setItem(USER_KEY, me.user);
    return me;
  },

  repositories: (q: { q?: string; sort?: string; order?: string; page?: number; limit?: number }) =>
    request<RepositoryList>("GET", "/repositories", { query: q }),

  repository: (name: string) => request<RepositoryDetail>("GET", repoPath(name)),

  tags: (name: string, q: { q?: string; sort?: string; order?: string; page?: number; limit?: number }) =>
    request<Page<TagItem>>("GET", `${repoPath(name)}/-/tags`, { query: q }),

  manifest: (name: string, reference: string) =>
    request<ManifestDetail>("GET", `${repoPath(name)}/-/manifests/${encodeURIComponent(reference)}`),

  deleteTag: (name: string, tag: string) =>
    request<void>("DELETE", `${repoPath(name)}/-/tags/${encodeURIComponent(tag)}`),

  deleteManifest: (name: string, digest: string) =>
    request<void>("DELETE", `${repoPath(name)}/-/manifests/${encodeURIComponent(digest)}`),

  deleteRepository: (name: string) => request<void>("DELETE", repoPath(name)),

  usage: (q: { page?: number; limit?: number; sort?: string; q?: string }) =>
    request<Usage>("GET", "/usage", { query: q }),

  events: (q: { limit?: number; failures?: string } = {}) =>
    request<EventsStatus>("GET", "/events", { query: q }),
};
