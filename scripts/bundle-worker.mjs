#!/usr/bin/env node
// Bundles the worker side of `berth serve` (dist/cli/worker.js and everything it imports, except
// native and worker-thread packages) into one file, dist/cli/worker.bundle.mjs. Node then reads and
// links one module instead of about 700 files, which halves a worker's start-up CPU time.
// Optional: without esbuild (or when it fails) there is no bundle and Berth loads dist/ as built by tsc.
import { rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const outfile = path.join(root, "dist", "cli", "worker.bundle.mjs");
rmSync(outfile, { force: true }); // never leave a bundle of older code behind

let esbuild;
try {
  esbuild = await import("esbuild");
} catch {
  console.warn("berth: esbuild is not installed; workers load dist/ file by file");
  process.exit(0);
}
try {
  await esbuild.build({
    entryPoints: [path.join(root, "dist", "cli", "worker.js")],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    // Native addons and packages that start worker threads from their own files stay outside.
    // Packages that only some set-ups load, each through a dynamic import(), stay outside too, so that
    // they are read only when used (a static import of an external would be hoisted to the top of the
    // bundle and load at start-up). The S3 store stays a file of its own: its AWS SDK imports are static.
    // The path is relative to dist/cli/, where both runtime.js and the bundle live.
    external: ["better-sqlite3", "pino", "yaml", "acme-client", "pg", "hash-wasm", "*/storage/s3.js"],
    // The CommonJS packages in the bundle call require() for Node's modules.
    banner: {
      js: "import { createRequire as __berthRequire } from 'node:module'; const require = __berthRequire(import.meta.url);",
    },
    logLevel: "error",
    legalComments: "none",
  });
} catch (err) {
  rmSync(outfile, { force: true });
  console.warn(`berth: bundling the worker failed (${err?.message ?? err}); workers load dist/ file by file`);
}
