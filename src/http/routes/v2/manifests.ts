import type { FastifyRequest } from "fastify";
import type { ManifestRow } from "../../../metadata/store.js";
import { RegistryError } from "../../../registry/errors.js";
import { DOCKER_MANIFEST_LIST, INDEX_TYPES, OCI_INDEX } from "../../../registry/media-types.js";
import { requireAccess } from "../../access.js";
import { requestInfo } from "../../event-info.js";
import { locationFor } from "../../urls.js";
import { queryValues, readBody, type V2Request } from "./common.js";

/** Media types named in Accept (parameters and q-values ignored); null when any type will do. */
export function acceptedTypes(request: FastifyRequest): Set<string> | null {
  const raw = request.headers.accept;
  const header = Array.isArray(raw) ? raw.join(",") : raw;
  if (!header) return null;
  const types = new Set<string>();
  for (const part of header.split(",")) {
    const type = part.split(";")[0]?.trim().toLowerCase();
    if (!type) continue;
    if (type === "*/*" || type === "application/*") return null;
    types.add(type);
  }
  return types.size === 0 ? null : types;
}

/**
 * Accept negotiation as Distribution does it: a manifest whose type the client did not ask for is
 * not served; for an index, the linux/amd64 image it lists is served instead when that one is acceptable.
 */
async function negotiate(r: V2Request, row: ManifestRow): Promise<ManifestRow> {
  const accepted = acceptedTypes(r.request);
  if (accepted === null || accepted.has(row.media_type)) return row;
  if (INDEX_TYPES.has(row.media_type)) {
    const index = JSON.parse(row.content.toString("utf8")) as {
      manifests?: { digest: string; mediaType: string; platform?: { os?: string; architecture?: string } }[];
    };
    const child = index.manifests?.find(
      (m) => m.platform?.os === "linux" && m.platform?.architecture === "amd64" && accepted.has(m.mediaType),
    );
    if (child) {
      const childRow = await r.ctx.registry
        .getManifest(r.name, child.digest, r.request.method === "GET")
        .catch(() => null);
      if (childRow) return childRow;
    }
  }
  throw new RegistryError(
    "MANIFEST_UNKNOWN",
    `the manifest is a ${row.media_type}, which the Accept header does not allow`,
    {
      mediaType: row.media_type,
      accepted: [...accepted],
    },
  );
}

export async function getManifest(r: V2Request): Promise<unknown> {
  const { request, reply, ctx, name, ref } = r;
  await requireAccess(request, [{ type: "repository", name, actions: ["pull"] }]);
  const head = request.method === "HEAD";
  const found = await ctx.registry.getManifest(name, ref, !head);
  // [pull-through cache, issue 13] served from the cache without the upstream's word.
  const warning = (found as { warning?: string }).warning;
  if (warning) reply.header("Warning", warning);
  const row = await negotiate(r, found);
  reply
    .code(200)
    .header("Content-Type", row.media_type)
    .header("Docker-Content-Digest", row.digest)
    .header("ETag", `"${row.digest}"`)
    .header("Content-Length", row.size);
  if (request.headers["if-none-match"] === `"${row.digest}"`) return reply.code(304).send();
  if (head) return reply.send();
  // [events, issue 14] a pull event per manifest GET, as registry:2 sends it (batched, off the request's path)
  ctx.registry.events.notePull(requestInfo(request, ctx.config, ctx.registry.events), {
    repository: name,
    digest: row.digest,
    mediaType: row.media_type,
    size: row.size,
    ...(ref.includes(":") ? {} : { tag: ref }),
  });
  return reply.send(row.content);
}

export async function putManifest(r: V2Request): Promise<unknown> {
  const { request, reply, ctx, name, ref } = r;
  await requireAccess(request, [{ type: "repository", name, actions: ["pull", "push"] }]);
  const limit = ctx.config.http.maxmanifestbytes;
  const content = await readBody(request, limit);
  const result = await ctx.registry.putManifest(
    name,
    ref,
    content,
    request.headers["content-type"],
    queryValues(request, "tag"),
    requestInfo(request, ctx.config, ctx.registry.events),
  );
  reply
    .code(201)
    .header("Location", locationFor(request, ctx.config, `/v2/${name}/manifests/${result.digest}`))
    .header("Docker-Content-Digest", result.digest)
    .header("Content-Length", 0);
  if (result.subject) reply.header("OCI-Subject", result.subject);
  if (queryValues(request, "tag").length > 0 && result.tags.length > 0)
    reply.header("OCI-Tag", result.tags.join(", "));
  return reply.send();
}

export async function deleteManifest(r: V2Request): Promise<unknown> {
  await requireAccess(r.request, [{ type: "repository", name: r.name, actions: ["delete"] }]);
  await r.ctx.registry.deleteManifest(
    r.name,
    r.ref,
    requestInfo(r.request, r.ctx.config, r.ctx.registry.events),
  );
  return r.reply.code(202).header("Content-Length", 0).send();
}

export { DOCKER_MANIFEST_LIST, OCI_INDEX };
