import { RegistryError } from "../../../registry/errors.js";
import { uploadRange } from "../../../registry/registry.js";
import { canPull, requireAccess } from "../../access.js";
import { requestInfo } from "../../event-info.js";
import { locationFor } from "../../urls.js";
import {
  contentLength,
  hasBody,
  parseContentRange,
  queryValue,
  requestBody,
  uploadLocation,
  type V2Request,
} from "./common.js";

const PUSH = ["pull", "push"] as const;

function acknowledge(r: V2Request, id: string, size: number, status: number): unknown {
  return r.reply
    .code(status)
    .header("Location", locationFor(r.request, r.ctx.config, uploadLocation(r.name, id)))
    .header("Range", uploadRange(size))
    .header("Docker-Upload-UUID", id)
    .header("Content-Length", 0)
    .send();
}

function created(r: V2Request, digest: string): unknown {
  return r.reply
    .code(201)
    .header("Location", locationFor(r.request, r.ctx.config, `/v2/${r.name}/blobs/${digest}`))
    .header("Docker-Content-Digest", digest)
    .header("Content-Length", 0)
    .send();
}

function chunkRange(r: V2Request) {
  const range = parseContentRange(r.request.headers["content-range"] as string | undefined);
  if (range === null)
    throw new RegistryError("BLOB_UPLOAD_INVALID", "malformed Content-Range", undefined, {}, 416);
  return range;
}

/** POST: start an upload, finish one in a single request (?digest=), or mount (?mount=&from=). */
export async function startUpload(r: V2Request): Promise<unknown> {
  const { request, ctx, name } = r;
  await requireAccess(request, [{ type: "repository", name, actions: [...PUSH] }]);
  const mount = queryValue(request, "mount");
  if (mount !== undefined) {
    const from = queryValue(request, "from");
    const mounted = await ctx.registry.mountBlob(
      name,
      mount,
      from || undefined,
      (repo) => canPull(request, repo),
      requestInfo(request, ctx.config, ctx.registry.events),
    );
    if (mounted) return created(r, mount);
  }
  const digest = queryValue(request, "digest");
  if (digest !== undefined && mount === undefined) {
    const done = await ctx.registry.monolithicUpload(
      name,
      digest,
      requestBody(request),
      contentLength(request),
      requestInfo(request, ctx.config, ctx.registry.events),
    );
    return created(r, done.digest);
  }
  const upload = await ctx.registry.startUpload(name);
  return acknowledge(r, upload.id, 0, 202);
}

export async function uploadStatus(r: V2Request): Promise<unknown> {
  await requireAccess(r.request, [{ type: "repository", name: r.name, actions: [...PUSH] }]);
  const state = await r.ctx.registry.uploadStatus(r.name, r.ref);
  return acknowledge(r, state.id, state.size, 204);
}

export async function patchUpload(r: V2Request): Promise<unknown> {
  await requireAccess(r.request, [{ type: "repository", name: r.name, actions: [...PUSH] }]);
  const range = chunkRange(r);
  const state = await r.ctx.registry.appendChunk(
    r.name,
    r.ref,
    requestBody(r.request),
    range,
    contentLength(r.request),
  );
  return acknowledge(r, state.id, state.size, 202);
}

export async function putUpload(r: V2Request): Promise<unknown> {
  await requireAccess(r.request, [{ type: "repository", name: r.name, actions: [...PUSH] }]);
  const digest = queryValue(r.request, "digest");
  if (!digest)
    throw new RegistryError("DIGEST_INVALID", "the digest query parameter is required to complete an upload");
  const body = hasBody(r.request) ? requestBody(r.request) : null;
  const done = await r.ctx.registry.completeUpload(
    r.name,
    r.ref,
    digest,
    body,
    body ? chunkRange(r) : undefined,
    contentLength(r.request),
    requestInfo(r.request, r.ctx.config, r.ctx.registry.events),
  );
  return created(r, done.digest);
}

export async function cancelUpload(r: V2Request): Promise<unknown> {
  await requireAccess(r.request, [{ type: "repository", name: r.name, actions: [...PUSH] }]);
  await r.ctx.registry.cancelUpload(r.name, r.ref);
  return r.reply.code(204).header("Content-Length", 0).send();
}
