import { RegistryError } from "../../../registry/errors.js";
import { BLOB_MEDIA_TYPE } from "../../../registry/events.js";
import { requireAccess } from "../../access.js";
import { requestInfo } from "../../event-info.js";
import { blobBody, spliceable } from "../../sendfile.js";
import type { V2Request } from "./common.js";

/** "bytes=a-b", "bytes=a-" or "bytes=-n" against a blob of `size` bytes. */
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | "unsatisfiable" | undefined {
  if (!header) return undefined;
  const m = /^\s*bytes=(\d*)-(\d*)\s*$/.exec(header);
  if (!m || (m[1] === "" && m[2] === "")) return undefined; // several ranges or nonsense: serve it whole
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(size - suffix, 0), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || (m[2] !== "" && Number(m[2]) < start)) return "unsatisfiable";
  return { start, end };
}

export async function getBlob({ request, reply, ctx, name, ref }: V2Request): Promise<unknown> {
  await requireAccess(request, [{ type: "repository", name, actions: ["pull"] }]);
  const head = request.method === "HEAD";
  const { size } = await ctx.registry.statBlob(name, ref, head);
  reply.header("Docker-Content-Digest", ref);
  reply.header("ETag", `"${ref}"`);
  reply.header("Accept-Ranges", "bytes");
  reply.header("Cache-Control", "max-age=31536000");
  reply.header("Content-Type", "application/octet-stream");
  if (request.headers["if-none-match"] === `"${ref}"`) return reply.code(304).send();
  const range = parseRange(request.headers.range, size);
  if (range === "unsatisfiable") {
    throw new RegistryError(
      "RANGE_INVALID",
      "requested range not satisfiable",
      { size },
      { "Content-Range": `bytes */${size}` },
      416,
    );
  }
  if (range) {
    reply.code(206);
    reply.header("Content-Range", `bytes ${range.start}-${range.end}/${size}`);
    reply.header("Content-Length", range.end - range.start + 1);
  } else {
    reply.code(200);
    reply.header("Content-Length", size);
  }
  if (head) return reply.send();
  const redirect = ctx.config.storage.redirect;
  if (redirect && !redirect.disable && ctx.storage.presign) {
    // storage.redirect: the client fetches the bytes from the store with a short-lived presigned URL.
    const location = await ctx.storage.presign(ref, Math.max(1, Math.round(redirect.expiry / 1000)));
    reply.removeHeader("Content-Length");
    reply.removeHeader("Content-Range");
    return reply.code(307).header("Location", location).header("Content-Length", 0).send();
  }
  // Plain HTTP/1.x: a store read over plain HTTP may hand over its socket, for splice(2).
  const socket = spliceable(request.raw) ? { size } : undefined;
  const opened = await ctx.registry.openBlob(name, ref, range, socket && { socket });
  // A blob fetched through the pull-through cache has the size its upstream answered with.
  if (!range && opened.size !== size) reply.header("Content-Length", opened.size);
  // [events, issue 14] registry:2 sends a pull event for a blob GET (a ranged one too)
  ctx.registry.events.notePull(requestInfo(request, ctx.config, ctx.registry.events), {
    repository: name,
    digest: ref,
    mediaType: BLOB_MEDIA_TYPE,
    size: opened.size,
  });
  // Plain HTTP/1.x: sendfile(2) or splice(2) when the native addon is built (src/http/sendfile.ts).
  const offset = range ? range.start : 0;
  const length = range ? range.end - range.start + 1 : opened.size;
  const stream = opened.stream;
  return reply.send(blobBody(request.raw, stream, offset, length));
}

export async function deleteBlob({ request, reply, ctx, name, ref }: V2Request): Promise<unknown> {
  await requireAccess(request, [{ type: "repository", name, actions: ["delete"] }]);
  await ctx.registry.deleteBlob(name, ref, requestInfo(request, ctx.config, ctx.registry.events));
  return reply.code(202).header("Content-Length", 0).send();
}
