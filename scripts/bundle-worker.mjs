#!/usr/bin/env node
// Bundles the worker side of `berth serve` (dist/cli/worker.js and everything it imports, except
// native and worker-thread packages) into dist/cli/worker.bundle.mjs and its chunks. Node then reads and
// links a few modules instead of about 700 files, which halves a worker's start-up CPU time.
// Optional: without esbuild (or when it fails) there is no bundle and Berth loads dist/ as built by tsc.
//
// Memory: V8 keeps the source text of every module it loaded for as long as the process lives (to compile
// functions lazily), so the bundle's size is resident in every worker:
// - Code split: what the worker imports with import() (TLS, the proxy, metrics, S3, x509...) goes to
//   chunks of its own (dist/cli/worker.chunk-*.mjs), read only when first used.
// - No comments or indentation (whitespace minified; names are kept, so stack traces still name functions).
// - ASCII only: a source with a single character beyond Latin-1 is held as UTF-16, twice its size.
//   esbuild escapes strings, templates and names itself but not regular expression literals.
import { readdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const outdir = path.join(root, "dist", "cli");
/** Never leave a bundle of older code behind: the entry and its chunks. */
const removeBundle = () => {
  for (const name of readdirSync(outdir)) {
    if (name === "worker.bundle.mjs" || name.startsWith("worker.chunk-"))
      rmSync(path.join(outdir, name), { force: true });
  }
};
removeBundle();

/**
 * zod's package index re-exports all of its ~60 message locales (`z.locales`), 250 KB of source that every
 * worker would hold; Berth's configuration uses none but English, which zod loads by a path of its own.
 * `z.locales` is then English alone.
 */
const zodEnglishOnly = {
  name: "zod-english-only",
  setup(build) {
    build.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) => {
      if (!/[\\/]zod[\\/]v4[\\/](classic|core)[\\/]/.test(args.importer)) return undefined;
      return { path: path.resolve(path.dirname(args.importer), "../locales/en.js") };
    });
  },
};

/**
 * Fastify's server module requires node:https and node:http2 at load, though it calls them only to make a
 * TLS or HTTP/2 server; with them come about 1.4 MB of every worker's memory that serves plain HTTP. Here
 * each becomes an object that requires the module at its first property read (createServer...).
 * When fastify's source no longer reads as expected, the module is left as it is.
 */
const fastifyLazyServers = {
  name: "fastify-lazy-servers",
  setup(build) {
    build.onLoad({ filter: /[\\/]fastify[\\/]lib[\\/]server\.js$/ }, async (args) => {
      const { readFile } = await import("node:fs/promises");
      const source = await readFile(args.path, "utf8");
      let changed = source;
      for (const name of ["https", "http2"]) {
        changed = changed.replace(
          `const ${name} = require('node:${name}')\n`,
          `const ${name} = new Proxy({}, { get: (_, key) => require('node:${name}')[key] })\n`,
        );
      }
      return { contents: changed, loader: "js" };
    });
  },
};

let esbuild;
try {
  esbuild = await import("esbuild");
} catch {
  console.warn("berth: esbuild is not installed; workers load dist/ file by file");
  process.exit(0);
}
try {
  const result = await esbuild.build({
    entryPoints: { "worker.bundle": path.join(outdir, "worker.js") },
    outdir,
    outExtension: { ".js": ".mjs" },
    splitting: true,
    chunkNames: "worker.chunk-[hash]",
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    // Native addons and packages that start worker threads from their own files stay outside.
    // Packages that only some set-ups load, each through a dynamic import(), stay outside too, so that
    // they are read only when used. The S3 store stays a file of its own: its AWS SDK imports are static.
    // The path is relative to dist/cli/, where runtime.js, the bundle and its chunks all live.
    // Fastify's schema compilers and its inject() stay outside too: no route declares a schema
    // (src/http/app.ts gives Fastify compilers of its own) and the server never injects, so they are never
    // loaded, but inside a chunk their 400 KB of source text would be resident all the same.
    external: [
      "better-sqlite3",
      "pino",
      "yaml",
      "acme-client",
      "pg",
      "hash-wasm",
      "*/storage/s3.js",
      "@fastify/ajv-compiler",
      "@fastify/fast-json-stringify-compiler",
      "light-my-request",
      // Loaded at the first scrape only (src/registry/meters.ts), and shared with src/http/metrics-primary.cjs.
      "prom-client",
    ],
    // The CommonJS packages in the bundle call require() for Node's modules.
    banner: {
      js: "import { createRequire as __berthRequire } from 'node:module'; const require = __berthRequire(import.meta.url);",
    },
    plugins: [zodEnglishOnly, fastifyLazyServers],
    logLevel: "error",
    legalComments: "none",
    minifyWhitespace: true,
    write: false,
  });
  for (const file of result.outputFiles) {
    // With the comments gone, what is left beyond ASCII is in regular expression literals, where \uXXXX
    // means the same character (a pair of surrogates, too, with or without the u flag). Not after a
    // backslash, where it would become an escaped backslash: never seen, but then the build stops here.
    if (/\\[\u0080-\uffff]/.test(file.text))
      throw new Error(`an escaped non-ASCII character in ${file.path}`);
    const ascii = file.text.replace(
      /[\u0080-\uffff]/g,
      (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
    );
    writeFileSync(file.path, ascii);
  }
} catch (err) {
  removeBundle();
  console.warn(`berth: bundling the worker failed (${err?.message ?? err}); workers load dist/ file by file`);
}
