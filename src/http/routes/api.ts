import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Action } from "../../auth/types.js";
import type { RepositoryRef, RepositoryStats } from "../../metadata/ui-queries.js";
import type { RepositoryUsage, UsageSnapshot } from "../../metadata/usage-queries.js";
import { isRegistryError, RegistryError } from "../../registry/errors.js";
import { type Descriptor, type ParsedManifest, parseManifest } from "../../registry/manifests.js";
import { INDEX_TYPES } from "../../registry/media-types.js";
import { assertName, assertTag, parseDigest } from "../../registry/names.js";
import type { Registry } from "../../registry/registry.js";
import { canPull, getIdentity, pullsEverything, requireAccess } from "../access.js";
import type { ImageConfigSummary } from "../api-types.js";
import type { AppContext } from "../context.js";
import { requestInfo } from "../event-info.js";

/**
 * Berth's own JSON API under /api/v1, for the web UI (documented in docs/api.md): the sizes, dates,
 * counts and platforms that the distribution API cannot give cheaply, and deletes. Every route asks
 * for the same access as the matching v2 route (pull to read, delete to delete); listings leave out
 * what the caller may not pull.
 */

const IMAGE_CONFIG_TYPES = new Set([
  "application/vnd.oci.image.config.v1+json",
  "application/vnd.docker.container.image.v1+json",
]);
/** Image configs larger than this are not parsed for the UI (they are a few KiB in practice). */
const MAX_CONFIG_BYTES = 8 * 1024 * 1024;
/** Configs are content-addressed, so a parsed one never goes stale; keep the most recent few. */
const CONFIG_CACHE_ENTRIES = 1000;
/**
 * Up to this many visible repositories, /api/v1/usage orders by figures computed for the request (a
 * bounded query); beyond, by the usage job's snapshot.
 */
const LIVE_USAGE_REPOSITORIES = 500;
const SNAPSHOT_CACHE_MS = 5_000;
/** The UI sends this header; 401s to it carry no WWW-Authenticate, so the browser shows no login dialog of its own. */
const UI_HEADER = "x-berth-ui";

export interface Platform {
  os?: string;
  architecture?: string;
  variant?: string;
  "os.version"?: string;
}

interface RawImageConfig {
  created?: string;
  author?: string;
  architecture?: string;
  os?: string;
  variant?: string;
  "os.version"?: string;
  config?: {
    User?: string;
    ExposedPorts?: Record<string, unknown>;
    Env?: string[];
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    Volumes?: Record<string, unknown>;
    WorkingDir?: string;
    Labels?: Record<string, string> | null;
    StopSignal?: string;
  };
  history?: Array<{
    created?: string;
    created_by?: string;
    author?: string;
    comment?: string;
    empty_layer?: boolean;
  }>;
}

/** An entry of an index, with what is known of it here. */
export type IndexChild = Omit<Descriptor, "platform"> & {
  platform: Platform | null;
  totalSize: number | null;
  present: boolean;
  attestationFor?: string;
};

function str(value: unknown): string | null {
  return typeof value === "string" && value !== "" ? value : null;
}

function strings(value: unknown): string[] | null {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : null;
}

function stringMap(value: unknown): Record<string, string> {
  if (!value || typeof value !== "object" || Array.isArray(value)) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) if (typeof v === "string") out[k] = v;
  return out;
}

function keysOf(value: unknown): string[] {
  return value && typeof value === "object" && !Array.isArray(value) ? Object.keys(value) : [];
}

export function summarizeConfig(raw: RawImageConfig): ImageConfigSummary {
  const c = raw.config ?? {};
  return {
    created: str(raw.created),
    author: str(raw.author),
    os: str(raw.os),
    architecture: str(raw.architecture),
    variant: str(raw.variant),
    entrypoint: strings(c.Entrypoint),
    cmd: strings(c.Cmd),
    env: strings(c.Env) ?? [],
    workingDir: str(c.WorkingDir),
    exposedPorts: keysOf(c.ExposedPorts).sort(
      (a, b) => Number.parseInt(a, 10) - Number.parseInt(b, 10) || a.localeCompare(b),
    ),
    user: str(c.User),
    labels: stringMap(c.Labels),
    volumes: keysOf(c.Volumes).sort(),
    stopSignal: str(c.StopSignal),
  };
}

function platformOfConfig(raw: RawImageConfig | null): Platform | null {
  if (!raw || (!raw.os && !raw.architecture)) return null;
  const p: Platform = {};
  if (raw.os) p.os = raw.os;
  if (raw.architecture) p.architecture = raw.architecture;
  if (raw.variant) p.variant = raw.variant;
  if (raw["os.version"]) p["os.version"] = raw["os.version"];
  return p;
}

/** Reads and parses image configs, remembering them by digest. */
class ConfigReader {
  private readonly cache = new Map<string, RawImageConfig | null>();

  constructor(private readonly registry: Registry) {}

  async read(repository: string, digest: string): Promise<RawImageConfig | null> {
    const cached = this.cache.get(digest);
    if (cached !== undefined) {
      this.cache.delete(digest);
      this.cache.set(digest, cached);
      return cached;
    }
    let parsed: RawImageConfig | null = null;
    try {
      const { size, stream } = await this.registry.openBlob(repository, digest);
      if (size > MAX_CONFIG_BYTES) {
        stream.destroy();
        return null;
      }
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(chunk as Buffer);
      const json: unknown = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      parsed = json && typeof json === "object" && !Array.isArray(json) ? (json as RawImageConfig) : null;
    } catch (err) {
      // A config that is missing (deleted meanwhile) or not JSON is shown as absent, not as an error.
      if (isRegistryError(err) || err instanceof SyntaxError) return null;
      throw err;
    }
    this.cache.set(digest, parsed);
    while (this.cache.size > CONFIG_CACHE_ENTRIES)
      this.cache.delete(this.cache.keys().next().value as string);
    return parsed;
  }
}

// ------------------------------------------------------------------ request helpers

function userOf(request: FastifyRequest): string | null {
  return getIdentity(request)?.subject ?? null;
}

/** Whether the caller may do `action` on `repository`, without throwing. */
async function may(request: FastifyRequest, repository: string, action: Action): Promise<boolean> {
  try {
    await requireAccess(request, [{ type: "repository", name: repository, actions: [action] }]);
    return true;
  } catch (err) {
    if (isRegistryError(err) && (err.code === "UNAUTHORIZED" || err.code === "DENIED")) return false;
    throw err;
  }
}

function query(request: FastifyRequest): Record<string, string | undefined> {
  const q = request.query as Record<string, unknown>;
  const out: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(q ?? {}))
    out[k] = Array.isArray(v) ? String(v[0]) : v === undefined ? undefined : String(v);
  return out;
}

function intParam(
  value: string | undefined,
  fallback: number,
  min: number,
  max: number,
  name: string,
): number {
  if (value === undefined || value === "") return fallback;
  if (!/^\d+$/.test(value)) {
    throw new RegistryError("PAGINATION_NUMBER_INVALID", `${name} must be a whole number`, { [name]: value });
  }
  return Math.min(max, Math.max(min, Number(value)));
}

function choice<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  fallback: T,
  name: string,
): T {
  if (value === undefined || value === "") return fallback;
  if (!(allowed as readonly string[]).includes(value)) {
    throw new RegistryError(
      "UNSUPPORTED",
      `${name} must be one of ${allowed.join(", ")}`,
      { [name]: value },
      {},
      400,
    );
  }
  return value as T;
}

function namespaceOf(name: string): string {
  const slash = name.lastIndexOf("/");
  return slash < 0 ? "" : name.slice(0, slash);
}

function parseAnnotations(text: string | null): Record<string, string> {
  if (!text) return {};
  try {
    return stringMap(JSON.parse(text));
  } catch {
    return {};
  }
}

function safeParse(content: Buffer, mediaType: string): ParsedManifest | null {
  try {
    return parseManifest(content, mediaType);
  } catch {
    return null;
  }
}

function usageById(rows: RepositoryUsage[]): Map<number, RepositoryUsage> {
  return new Map(rows.map((r) => [r.repositoryId, r]));
}

function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ------------------------------------------------------------------ routes

export async function registerApiRoutes(app: FastifyInstance, ctx: AppContext): Promise<void> {
  const ui = ctx.metadata.ui;
  const usageOf = ctx.metadata.usage;
  const registry = ctx.registry;
  const configs = new ConfigReader(registry);

  const authKind = (): "none" | "htpasswd" | "token" =>
    ctx.config.auth.token ? "token" : ctx.config.auth.htpasswd ? "htpasswd" : "none";
  const deleteEnabled = () => registry.options.deleteEnabled && !registry.options.readOnly;

  // The snapshot changes once per usage job run: read and parsed at most every few seconds per process.
  let snapshotCache: { at: number; value: Promise<UsageSnapshot | null> } | undefined;
  const lastUsageSnapshot = (): Promise<UsageSnapshot | null> => {
    if (!snapshotCache || Date.now() - snapshotCache.at > SNAPSHOT_CACHE_MS) {
      const value = usageOf.readUsageSnapshot();
      snapshotCache = { at: Date.now(), value };
      value.catch(() => {
        snapshotCache = undefined;
      });
    }
    return snapshotCache.value;
  };

  async function permissions(request: FastifyRequest, name: string) {
    const [pull, push, del] = await Promise.all([
      may(request, name, "pull"),
      may(request, name, "push"),
      may(request, name, "delete"),
    ]);
    return {
      pull,
      push: push && !registry.options.readOnly,
      delete: del && deleteEnabled(),
    };
  }

  async function existingRepository(name: string): Promise<RepositoryRef> {
    const repo = await ui.repositoryByName(name);
    if (!repo) throw new RegistryError("NAME_UNKNOWN", "repository name not known to registry", { name });
    return repo;
  }

  async function whoami(request: FastifyRequest) {
    const q = query(request);
    // Credentials, when sent, must be good (401 otherwise, 429 while failed logins are slowed down);
    // without any the caller is anonymous, which is fine here.
    if (request.headers.authorization) await requireAccess(request, []);
    const user = userOf(request);
    if (q.login !== undefined && user === null && authKind() !== "none") {
      throw new RegistryError(
        "UNAUTHORIZED",
        "authentication required: the registry did not accept these credentials",
      );
    }
    return {
      user,
      auth: authKind(),
      deleteEnabled: deleteEnabled(),
      readOnly: registry.options.readOnly,
      // [events, issue 14] the UI's Events page: for administrators (everyone without auth), when endpoints exist
      admin: authKind() === "none" || getIdentity(request)?.admin === true,
      notifications: ctx.config.notifications.endpoints.length,
    };
  }

  async function listRepositories(request: FastifyRequest) {
    const q = query(request);
    const sort = choice(q.sort, ["name", "size", "pushed"] as const, "name", "sort");
    const descending = (q.order ?? (sort === "name" ? "asc" : "desc")) === "desc";
    const limit = intParam(q.limit, 50, 1, 200, "limit");
    const page = intParam(q.page, 1, 1, 1_000_000, "page");
    const namespace = q.namespace;

    const matching = (await ui.repositoryNames(q.q)).filter((r) => canPull(request, r.name));
    const namespaceCounts = new Map<string, number>();
    for (const r of matching) {
      const ns = namespaceOf(r.name);
      namespaceCounts.set(ns, (namespaceCounts.get(ns) ?? 0) + 1);
    }
    const visible =
      namespace === undefined ? matching : matching.filter((r) => namespaceOf(r.name) === namespace);
    const offset = (page - 1) * limit;

    let pageRepos: RepositoryRef[];
    let stats: Map<number, RepositoryStats>;
    if (sort === "name") {
      const ordered = descending ? [...visible].reverse() : visible;
      pageRepos = ordered.slice(offset, offset + limit);
      stats = await ui.repositoryStats(pageRepos.map((r) => r.id));
    } else {
      // Sorting by size or date needs the figures of every visible repository: four grouped queries.
      stats = await ui.repositoryStats(visible.length > 2000 ? undefined : visible.map((r) => r.id));
      const key = (r: RepositoryRef) => {
        const s = stats.get(r.id);
        return sort === "size" ? (s?.size ?? 0) : (s?.lastPush ?? 0);
      };
      const ordered = [...visible].sort((a, b) => {
        const d = key(a) - key(b);
        return (descending ? -d : d) || compareNames(a.name, b.name);
      });
      pageRepos = ordered.slice(offset, offset + limit);
    }
    return {
      items: pageRepos.map((r) => {
        const s = stats.get(r.id);
        return {
          name: r.name,
          namespace: namespaceOf(r.name),
          tagCount: s?.tagCount ?? 0,
          manifestCount: s?.manifestCount ?? 0,
          size: s?.size ?? 0,
          lastPush: s?.lastPush ?? null,
          // [pull-through cache, issue 13] the upstream a mirrored repository is a cache of, else null.
          proxy: registry.proxy?.describe(r.name) ?? null,
        };
      }),
      total: visible.length,
      page,
      limit,
      namespaces: [...namespaceCounts.entries()]
        .sort(([a], [b]) => compareNames(a, b))
        .map(([name, repositories]) => ({ name, repositories })),
    };
  }

  async function repositoryDetail(request: FastifyRequest, name: string) {
    await requireAccess(request, [{ type: "repository", name, actions: ["pull"] }]);
    const repo = await existingRepository(name);
    const [stats, usage, perms] = await Promise.all([
      ui.repositoryStats([repo.id]),
      usageOf.usageOfRepository(name),
      permissions(request, name),
    ]);
    const s = stats.get(repo.id);
    return {
      name,
      namespace: namespaceOf(name),
      tagCount: s?.tagCount ?? 0,
      manifestCount: s?.manifestCount ?? 0,
      size: s?.size ?? 0,
      lastPush: s?.lastPush ?? null,
      unique: usage?.unique ?? 0,
      shared: usage?.shared ?? 0,
      permissions: perms,
      proxy: registry.proxy?.describe(name) ?? null,
    };
  }

  /** Platforms and creation time of manifests, from index children or from image configs. */
  async function describeManifests(name: string, repositoryId: number, digests: string[]) {
    const rows = await ui.manifestsByDigest(repositoryId, digests);
    const indexDigests = [...rows.values()].filter((r) => INDEX_TYPES.has(r.media_type)).map((r) => r.digest);
    const children = await ui.childrenOf(repositoryId, indexDigests);
    const childRows = await ui.manifestsByDigest(repositoryId, [...children.values()].flat());
    const out = new Map<string, { platforms: Platform[]; created: string | null }>();
    await Promise.all(
      digests.map(async (digest) => {
        const row = rows.get(digest);
        if (!row) return;
        if (INDEX_TYPES.has(row.media_type)) {
          const parsed = safeParse(row.content, row.media_type);
          const platforms: Platform[] = [];
          let firstImage: string | null = null;
          for (const m of parsed?.manifests ?? []) {
            const p = m.platform;
            if (!p || ((p.os ?? "unknown") === "unknown" && (p.architecture ?? "unknown") === "unknown"))
              continue;
            platforms.push(p);
            firstImage ??= m.digest;
          }
          let created: string | null = null;
          const child = firstImage ? childRows.get(firstImage) : undefined;
          if (child?.config_digest) created = str((await configs.read(name, child.config_digest))?.created);
          out.set(digest, { platforms, created });
        } else if (row.config_digest) {
          const parsed = safeParse(row.content, row.media_type);
          if (!parsed?.config || !IMAGE_CONFIG_TYPES.has(parsed.config.mediaType)) {
            out.set(digest, { platforms: [], created: null });
            return;
          }
          const config = await configs.read(name, row.config_digest);
          const platform = platformOfConfig(config);
          out.set(digest, { platforms: platform ? [platform] : [], created: str(config?.created) });
        }
      }),
    );
    return out;
  }

  async function listTags(request: FastifyRequest, name: string) {
    await requireAccess(request, [{ type: "repository", name, actions: ["pull"] }]);
    const repo = await existingRepository(name);
    const q = query(request);
    const sort = choice(q.sort, ["name", "date"] as const, "name", "sort");
    const descending = (q.order ?? (sort === "name" ? "asc" : "desc")) === "desc";
    const limit = intParam(q.limit, 50, 1, 500, "limit");
    const page = intParam(q.page, 1, 1, 1_000_000, "page");
    const { total, rows } = await ui.tagPage(repo.id, {
      search: q.q,
      sort,
      descending,
      offset: (page - 1) * limit,
      limit,
    });
    const digests = [...new Set(rows.map((r) => r.digest))];
    const [sizes, described] = await Promise.all([
      ui.manifestTotalSizes(repo.id, digests),
      describeManifests(name, repo.id, digests),
    ]);
    return {
      items: rows.map((r) => {
        const d = described.get(r.digest);
        return {
          name: r.name,
          digest: r.digest,
          mediaType: r.media_type ?? "",
          artifactType: r.artifact_type && !IMAGE_CONFIG_TYPES.has(r.artifact_type) ? r.artifact_type : null,
          size: sizes.get(r.digest) ?? r.manifest_size ?? 0,
          pushed: r.updated_at,
          created: d?.created ?? null,
          platforms: d?.platforms ?? [],
        };
      }),
      total,
      page,
      limit,
    };
  }

  async function manifestDetail(request: FastifyRequest, name: string, reference: string) {
    await requireAccess(request, [{ type: "repository", name, actions: ["pull"] }]);
    const found = await registry.getManifest(name, reference);
    const repo = await existingRepository(name);
    const digest = found.digest;
    const info = (await ui.manifestsByDigest(repo.id, [digest])).get(digest);
    if (!info) throw new RegistryError("MANIFEST_UNKNOWN", "manifest unknown to registry", { reference });
    const parsed = safeParse(info.content, info.media_type);
    const isIndex = INDEX_TYPES.has(info.media_type);
    const configDescriptor = parsed?.config ?? null;
    const isImage =
      !isIndex && configDescriptor !== null && IMAGE_CONFIG_TYPES.has(configDescriptor.mediaType);

    const [tags, parents, referrerRows, totals, perms] = await Promise.all([
      ui.tagsOf(repo.id, digest),
      ui.parentsOf(repo.id, digest),
      ui.referrersOf(repo.id, digest),
      ui.manifestTotalSizes(repo.id, [digest, ...(parsed?.manifests.map((m) => m.digest) ?? [])]),
      permissions(request, name),
    ]);

    let manifests: IndexChild[] = [];
    if (isIndex && parsed) {
      const present = await ui.manifestsByDigest(
        repo.id,
        parsed.manifests.map((m) => m.digest),
      );
      manifests = parsed.manifests.map((m) => {
        const child: IndexChild = {
          mediaType: m.mediaType,
          digest: m.digest,
          size: m.size,
          platform: m.platform ?? null,
          totalSize: present.has(m.digest) ? (totals.get(m.digest) ?? null) : null,
          present: present.has(m.digest),
        };
        if (m.annotations) child.annotations = m.annotations;
        if (m.artifactType) child.artifactType = m.artifactType;
        if (
          m.annotations?.["vnd.docker.reference.type"] === "attestation-manifest" &&
          m.annotations["vnd.docker.reference.digest"]
        ) {
          child.attestationFor = m.annotations["vnd.docker.reference.digest"];
        }
        return child;
      });
    }

    let rawConfig: RawImageConfig | null = null;
    if (isImage && configDescriptor) rawConfig = await configs.read(name, configDescriptor.digest);

    const artifactType =
      info.artifact_type && !IMAGE_CONFIG_TYPES.has(info.artifact_type) ? info.artifact_type : null;
    return {
      repository: name,
      digest,
      mediaType: info.media_type,
      kind: isIndex ? "index" : isImage && !artifactType ? "image" : "artifact",
      size: info.size,
      totalSize: totals.get(digest) ?? info.size,
      artifactType,
      subject: info.subject,
      annotations: parseAnnotations(info.annotations),
      pushed: info.created_at,
      tags,
      manifests,
      platform: platformOfConfig(rawConfig),
      config: configDescriptor
        ? {
            mediaType: configDescriptor.mediaType,
            digest: configDescriptor.digest,
            size: configDescriptor.size,
            image: rawConfig ? summarizeConfig(rawConfig) : null,
          }
        : null,
      layers: (parsed?.layers ?? []).map((l) => {
        const layer: Descriptor = { mediaType: l.mediaType, digest: l.digest, size: l.size };
        if (l.annotations) layer.annotations = l.annotations;
        if (l.urls) layer.urls = l.urls;
        return layer;
      }),
      history: Array.isArray(rawConfig?.history) ? rawConfig.history : [],
      referrers: referrerRows.map((r) => ({
        digest: r.digest,
        mediaType: r.media_type,
        artifactType: r.artifact_type,
        size: r.size,
        annotations: parseAnnotations(r.annotations),
        pushed: r.created_at,
      })),
      parents,
      permissions: perms,
    };
  }

  /**
   * Storage usage of the repositories the caller may pull, paged. The figures shown are computed for
   * the page's repositories alone; ordering by size needs every visible repository's figures, computed
   * live for up to LIVE_USAGE_REPOSITORIES of them and taken from the usage job's snapshot beyond. The
   * registry-wide totals come from that snapshot only (computing them takes seconds on a large
   * registry), and only for callers who may pull every repository.
   */
  async function usage(request: FastifyRequest) {
    const q = query(request);
    const sort = choice(q.sort, ["size", "unique", "shared", "name"] as const, "size", "sort");
    const limit = intParam(q.limit, 50, 1, 500, "limit");
    const page = intParam(q.page, 1, 1, 1_000_000, "page");
    const everything = pullsEverything(request);
    const visible = (await ui.repositoryNames(q.q)).filter((r) => canPull(request, r.name));
    const snapshot =
      everything || (sort !== "name" && visible.length > LIVE_USAGE_REPOSITORIES)
        ? await lastUsageSnapshot()
        : null;
    let ordered = visible;
    let live: Map<number, RepositoryUsage> | undefined;
    if (sort !== "name") {
      if (visible.length <= LIVE_USAGE_REPOSITORIES) {
        live = usageById(await usageOf.repositoryUsage({ repositoryIds: visible.map((r) => r.id) }));
      }
      const figures = live ?? usageById(snapshot?.repositories ?? []);
      const key = (r: RepositoryRef) => {
        const u = figures.get(r.id);
        return !u ? 0 : sort === "unique" ? u.unique : sort === "shared" ? u.shared : u.bytes;
      };
      ordered = [...visible].sort((a, b) => key(b) - key(a) || compareNames(a.name, b.name));
    }
    const offset = (page - 1) * limit;
    const pageRepos = ordered.slice(offset, offset + limit);
    const shown =
      live ?? usageById(await usageOf.repositoryUsage({ repositoryIds: pageRepos.map((r) => r.id) }));
    const summary = everything ? (snapshot?.summary ?? null) : null;
    return {
      total: summary?.total ?? null,
      shared: summary?.shared ?? null,
      unlinked: summary?.unlinked ?? null,
      /** When the totals (and, beyond LIVE_USAGE_REPOSITORIES, the ordering) were computed; null: not yet. */
      computedAt: everything ? (snapshot?.computedAt ?? null) : null,
      repositories: {
        items: pageRepos.map((r) => {
          const u = shown.get(r.id);
          return { name: r.name, size: u?.bytes ?? 0, unique: u?.unique ?? 0, shared: u?.shared ?? 0 };
        }),
        total: visible.length,
        page,
        limit,
      },
    };
  }

  /** `<name>`, `<name>/-/tags`, `<name>/-/tags/<tag>`, `<name>/-/manifests/<reference>`. */
  function route(path: string): {
    name: string;
    kind: "repository" | "tags" | "tag" | "manifest";
    arg?: string;
  } {
    const split = path.indexOf("/-/");
    const name = (split < 0 ? path : path.slice(0, split)).replace(/\/+$/, "");
    assertName(name);
    if (split < 0) return { name, kind: "repository" };
    const rest = path.slice(split + 3);
    if (rest === "tags" || rest === "tags/") return { name, kind: "tags" };
    if (rest.startsWith("tags/")) return { name, kind: "tag", arg: rest.slice(5) };
    if (rest.startsWith("manifests/")) return { name, kind: "manifest", arg: rest.slice(10) };
    throw new RegistryError("NOT_FOUND", "no such API route");
  }

  await app.register(async (api) => {
    api.addHook("onSend", async (request: FastifyRequest, reply: FastifyReply, payload) => {
      reply.header("cache-control", "no-store");
      if (reply.statusCode === 401 && request.headers[UI_HEADER] !== undefined)
        reply.removeHeader("www-authenticate");
      return payload;
    });

    api.get("/api/v1/whoami", (request) => whoami(request));
    api.get("/api/v1/repositories", (request) => listRepositories(request));
    api.get("/api/v1/usage", (request) => usage(request));

    api.get("/api/v1/repositories/*", async (request) => {
      const r = route((request.params as { "*": string })["*"]);
      switch (r.kind) {
        case "repository":
          return repositoryDetail(request, r.name);
        case "tags":
          return listTags(request, r.name);
        case "manifest":
          return manifestDetail(request, r.name, r.arg ?? "");
        default:
          throw new RegistryError("NOT_FOUND", "no such API route");
      }
    });

    api.delete("/api/v1/repositories/*", async (request, reply) => {
      const r = route((request.params as { "*": string })["*"]);
      await requireAccess(request, [{ type: "repository", name: r.name, actions: ["delete"] }]);
      switch (r.kind) {
        case "repository":
          await registry.deleteRepository(r.name, requestInfo(request, ctx.config, registry.events));
          break;
        case "tag":
          await registry.deleteTag(
            r.name,
            assertTag(r.arg ?? ""),
            requestInfo(request, ctx.config, registry.events),
          );
          break;
        case "manifest": {
          const digest = r.arg ?? "";
          if (!parseDigest(digest)) {
            throw new RegistryError(
              "DIGEST_INVALID",
              "delete a manifest by digest; delete a tag with /-/tags/<tag>",
              { reference: digest },
            );
          }
          await registry.deleteManifest(r.name, digest, requestInfo(request, ctx.config, registry.events));
          break;
        }
        default:
          throw new RegistryError("NOT_FOUND", "no such API route");
      }
      request.log.info(
        { repository: r.name, kind: r.kind, reference: r.arg, user: userOf(request) },
        "deleted via the JSON API",
      );
      return reply.code(204).send();
    });

    // Unknown API paths get a JSON 404 (OPTIONS is left to the CORS preflight handling).
    api.route({
      method: ["GET", "POST", "PUT", "PATCH", "DELETE"],
      url: "/api/*",
      handler: async () => {
        throw new RegistryError("NOT_FOUND", "no such API route");
      },
    });
  });
}
