import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { brotliCompressSync, gzipSync, constants as zlibConstants } from "node:zlib";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { AppContext } from "../context.js";
import { packageRoot } from "../package-root.js";

/**
 * Serves the built web UI (ui/dist, shipped in the npm package) at `/`, on the same port as the API.
 *
 * Only these paths belong to the UI, so nothing of the registry is ever shadowed
 * (/v2/, /auth/, /api/, /healthz, /readyz, /metrics stay with their owners):
 *   /                       index.html
 *   /r/..., /storage, /events, /login  index.html too (client-side routes: the app reads the path)
 *   /assets/<hashed file>   scripts, styles, fonts: cached for a year (the name changes with the content)
 *   /<file in ui/dist root>  favicon and friends, cached for an hour
 * The files are read once at start-up and kept in memory; gzip and brotli variants are made at the
 * first request that accepts them (not at start-up: brotli's best level takes ~100 ms) and kept.
 */

/** Client-side routes; keep in step with ui/src/lib/routes.ts. */
const SPA_ROUTES = ["/", "/r/*", "/storage", "/events", "/login"];

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".webp": "image/webp",
  ".woff2": "font/woff2",
  ".woff": "font/woff",
  ".txt": "text/plain; charset=utf-8",
  ".webmanifest": "application/manifest+json",
};

const COMPRESSIBLE = new Set([
  ".html",
  ".js",
  ".mjs",
  ".css",
  ".json",
  ".map",
  ".svg",
  ".txt",
  ".webmanifest",
]);

/** The pages load only what Berth itself serves: no CDN, no inline script, no framing. */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

interface StaticFile {
  body: Buffer;
  /** Whether gzip and brotli variants are worth making (text, over 512 bytes). */
  compressible: boolean;
  /** Made at the first request that accepts them, then kept: start-up pays for no compression. */
  gzip?: Buffer;
  brotli?: Buffer;
  type: string;
  etag: string;
  cacheControl: string;
}

/** Where the built UI lives: ui/dist next to dist/ (both in the npm package), or BERTH_UI_DIR. */
export function uiDistDir(): string {
  if (process.env.BERTH_UI_DIR) return path.resolve(process.env.BERTH_UI_DIR);
  return path.join(packageRoot(), "ui", "dist");
}

function walk(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...walk(full, base));
    else if (entry.isFile()) out.push(path.relative(base, full).split(path.sep).join("/"));
  }
  return out;
}

/** Reads every file of the built UI into memory, keyed by URL path ("/index.html", "/assets/x.js"). */
export function loadUiFiles(dir: string): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return files;
  for (const rel of walk(dir)) {
    const ext = path.extname(rel).toLowerCase();
    const body = readFileSync(path.join(dir, rel));
    const hashed = rel.startsWith("assets/");
    files.set(`/${rel}`, {
      body,
      compressible: COMPRESSIBLE.has(ext) && body.length > 512,
      type: TYPES[ext] ?? "application/octet-stream",
      etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 27)}"`,
      cacheControl:
        rel === "index.html"
          ? "no-cache"
          : hashed
            ? "public, max-age=31536000, immutable"
            : "public, max-age=3600",
    });
  }
  return files;
}

function accepts(request: FastifyRequest, encoding: string): boolean {
  const header = request.headers["accept-encoding"];
  const value = Array.isArray(header) ? header.join(",") : (header ?? "");
  return value
    .split(",")
    .map((part) => part.trim().split(";"))
    .some(
      ([name, ...params]) => name?.trim() === encoding && !params.some((p) => /^\s*q=0(\.0*)?\s*$/.test(p)),
    );
}

function sendFile(request: FastifyRequest, reply: FastifyReply, file: StaticFile): FastifyReply {
  reply.header("content-type", file.type);
  reply.header("cache-control", file.cacheControl);
  reply.header("etag", file.etag);
  reply.header("x-content-type-options", "nosniff");
  if (file.type.startsWith("text/html")) {
    reply.header("content-security-policy", CONTENT_SECURITY_POLICY);
    reply.header("x-frame-options", "DENY");
    reply.header("referrer-policy", "same-origin");
  }
  if (file.compressible) reply.header("vary", "Accept-Encoding");
  const match = request.headers["if-none-match"];
  if (match && match.split(",").some((tag) => tag.trim().replace(/^W\//, "") === file.etag)) {
    return reply.code(304).send();
  }
  let body = file.body;
  if (file.compressible && accepts(request, "br")) {
    file.brotli ??= brotliCompressSync(file.body, {
      params: {
        [zlibConstants.BROTLI_PARAM_QUALITY]: 11,
        [zlibConstants.BROTLI_PARAM_SIZE_HINT]: file.body.length,
      },
    });
    reply.header("content-encoding", "br");
    body = file.brotli;
  } else if (file.compressible && accepts(request, "gzip")) {
    file.gzip ??= gzipSync(file.body, { level: 9 });
    reply.header("content-encoding", "gzip");
    body = file.gzip;
  }
  return reply.code(200).send(body);
}

const NOT_BUILT = `<!doctype html><meta charset="utf-8"><title>Berth</title>
<p>Berth is running, but its web UI has not been built. Run <code>npm run build</code> (or <code>npm run build:ui</code>)
and restart. The registry API at <a href="/v2/">/v2/</a> works either way.</p>`;

/** Serves the built web UI at `/`. Owned by the web UI work. */
export async function registerUiRoutes(app: FastifyInstance, ctx: AppContext): Promise<void> {
  if (ctx.config.ui?.enabled === false) return;
  const dir = uiDistDir();
  const files = loadUiFiles(dir);
  const index = files.get("/index.html");
  if (!index) {
    ctx.log.warn({ dir }, "the web UI is not built: / answers with a hint instead");
    app.get("/", async (_request, reply) => reply.code(503).type("text/html; charset=utf-8").send(NOT_BUILT));
    return;
  }

  await app.register(async (ui) => {
    for (const route of SPA_ROUTES) {
      ui.get(route, async (request, reply) => sendFile(request, reply, index));
    }
    ui.get("/assets/*", async (request, reply) => {
      const file = files.get(`/assets/${(request.params as { "*": string })["*"]}`);
      if (!file) return reply.code(404).type("text/plain; charset=utf-8").send("not found\n");
      return sendFile(request, reply, file);
    });
    // Files at the root of ui/dist (favicon.svg, theme.js, ...): one exact route each.
    for (const [urlPath, file] of files) {
      if (urlPath === "/index.html" || urlPath.startsWith("/assets/") || urlPath.slice(1).includes("/"))
        continue;
      ui.get(urlPath, async (request, reply) => sendFile(request, reply, file));
    }
  });
}
