import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { RegistryError } from "../../../registry/errors.js";
import { isValidName } from "../../../registry/names.js";
import { requireAccess } from "../../access.js";
import { keepBodiesUnread } from "../../bodies.js";
import type { AppContext } from "../../context.js";
import { answerError } from "../../errors.js";
import { mirroredName } from "../../proxy.js";
import { prefixOf } from "../../urls.js";
import { deleteBlob, getBlob } from "./blobs.js";
import { queryValue, type V2Handler } from "./common.js";
import { catalog, listReferrers, listTags } from "./listings.js";
import { deleteManifest, getManifest, putManifest } from "./manifests.js";
import { cancelUpload, patchUpload, putUpload, startUpload, uploadStatus } from "./uploads.js";

interface Route {
  pattern: RegExp;
  methods: Partial<Record<string, V2Handler>>;
}

/**
 * The v2 API as one table. Repository names contain slashes, so paths are matched here rather than by
 * the router: the name is everything before the last resource segment, validated before any use.
 */
const ROUTES: Route[] = [
  { pattern: /^(.+)\/blobs\/uploads\/?()$/, methods: { POST: startUpload } },
  {
    pattern: /^(.+)\/blobs\/uploads\/([^/]+)$/,
    methods: { GET: uploadStatus, PATCH: patchUpload, PUT: putUpload, DELETE: cancelUpload },
  },
  { pattern: /^(.+)\/blobs\/([^/]+)$/, methods: { GET: getBlob, HEAD: getBlob, DELETE: deleteBlob } },
  {
    pattern: /^(.+)\/manifests\/([^/]+)$/,
    methods: { GET: getManifest, HEAD: getManifest, PUT: putManifest, DELETE: deleteManifest },
  },
  { pattern: /^(.+)\/tags\/list()$/, methods: { GET: listTags, HEAD: listTags } },
  { pattern: /^(.+)\/referrers\/([^/]+)$/, methods: { GET: listReferrers, HEAD: listReferrers } },
];

export const API_VERSION = "registry/2.0";

async function dispatch(
  request: FastifyRequest,
  reply: FastifyReply,
  ctx: AppContext,
  root: string,
): Promise<unknown> {
  const url = request.url;
  const q = url.indexOf("?");
  const path = (q >= 0 ? url.slice(0, q) : url).slice(root.length);
  for (const route of ROUTES) {
    const m = route.pattern.exec(path);
    if (!m) continue;
    // [pull-through cache, issue 13] containerd's mirror requests name the upstream with ?ns=.
    const name = mirroredName(ctx.registry.proxy, m[1]!, queryValue(request, "ns"));
    if (!isValidName(name)) throw new RegistryError("NAME_INVALID", "invalid repository name", { name });
    const handler = route.methods[request.method];
    if (!handler) {
      throw new RegistryError("UNSUPPORTED", `${request.method} is not supported here`, undefined, {
        Allow: Object.keys(route.methods).join(", "),
      });
    }
    let ref: string;
    try {
      ref = decodeURIComponent(m[2] ?? "");
    } catch {
      throw new RegistryError("NAME_INVALID", "malformed path", { path });
    }
    return handler({ request, reply, ctx, name, ref });
  }
  throw new RegistryError("NOT_FOUND", "no such endpoint in the distribution API", { path: `/v2/${path}` });
}

/** Registers /v2/ and everything under it in an encapsulated context whose bodies stay unread streams. */
export async function registerV2Routes(app: FastifyInstance, ctx: AppContext): Promise<void> {
  // http.prefix: the API lives under it ("/registry/" -> "/registry/v2/"), as in Distribution.
  const prefix = prefixOf(ctx.config);
  const root = `${prefix}/v2/`;
  await app.register(async (v2) => {
    // Blob bodies are streamed by the handlers and manifests read with a size limit: no parser buffers them.
    keepBodiesUnread(v2);
    v2.addHook("onRequest", async (_request, reply) => {
      reply.header("Docker-Distribution-API-Version", API_VERSION);
    });
    v2.setErrorHandler(answerError);

    const base = async (request: FastifyRequest, reply: FastifyReply) => {
      await requireAccess(request, []);
      return reply.code(200).header("Content-Type", "application/json").send("{}");
    };
    v2.route({ method: ["GET", "HEAD"], url: root, handler: base });
    v2.route({ method: ["GET", "HEAD"], url: `${prefix}/v2`, handler: base });
    v2.route({
      method: ["GET", "HEAD"],
      url: `${root}_catalog`,
      handler: (request, reply) => catalog(request, reply, ctx),
    });
    v2.route({
      method: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
      url: `${root}*`,
      handler: (request, reply) => dispatch(request, reply, ctx, root),
    });
  });
}
