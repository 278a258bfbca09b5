import type { FastifyReply, FastifyRequest } from "fastify";
import { Registry } from "../../../registry/registry.js";
import { canList, requireAccess } from "../../access.js";
import type { AppContext } from "../../context.js";
import { prefixOf } from "../../urls.js";
import { pageSize, queryValue, type V2Request } from "./common.js";

/** Upper bound on one catalog page, whatever `n` asks for. */
const MAX_CATALOG_PAGE = 10_000;
const DEFAULT_CATALOG_PAGE = 1_000;

function nextLink(path: string, n: number, last: string): string {
  return `<${path}?n=${n}&last=${encodeURIComponent(last)}>; rel="next"`;
}

export async function listTags({ request, reply, ctx, name }: V2Request): Promise<unknown> {
  await requireAccess(request, [{ type: "repository", name, actions: ["pull"] }]);
  const n = pageSize(request);
  const last = queryValue(request, "last");
  const page = await ctx.registry.listTags(name, n, last || undefined);
  if (page.next !== null && n !== undefined)
    reply.header("Link", nextLink(`${prefixOf(ctx.config)}/v2/${name}/tags/list`, n, page.next));
  return reply
    .code(200)
    .header("Content-Type", "application/json")
    .send(Buffer.from(JSON.stringify({ name, tags: page.items })));
}

export async function listReferrers({ request, reply, ctx, name, ref }: V2Request): Promise<unknown> {
  await requireAccess(request, [{ type: "repository", name, actions: ["pull"] }]);
  const artifactType = queryValue(request, "artifactType");
  const descriptors = await ctx.registry.referrers(name, ref, artifactType || undefined);
  if (artifactType) reply.header("OCI-Filters-Applied", "artifactType");
  return reply
    .code(200)
    .header("Content-Type", "application/vnd.oci.image.index.v1+json")
    .send(Buffer.from(JSON.stringify(Registry.referrersIndex(descriptors))));
}

export async function catalog(
  request: FastifyRequest,
  reply: FastifyReply,
  ctx: AppContext,
): Promise<unknown> {
  await requireAccess(request, []);
  const asked = pageSize(request);
  const n = Math.min(asked ?? DEFAULT_CATALOG_PAGE, MAX_CATALOG_PAGE);
  const last = queryValue(request, "last");
  const page = await ctx.registry.catalog(n, last || undefined, (repo) => canList(request, repo));
  if (page.next !== null) reply.header("Link", nextLink(`${prefixOf(ctx.config)}/v2/_catalog`, n, page.next));
  return reply
    .code(200)
    .header("Content-Type", "application/json")
    .send(Buffer.from(JSON.stringify({ repositories: page.items })));
}
