#!/usr/bin/env node
// Builds Berth's optional native addons with node-gyp: native/sendfile (sendfile(2) for blob GETs) and
// native/sha256 (OpenSSL's SHA-256 with a state that can be saved, for uploads to S3; it calls the OpenSSL
// inside Node, with the headers Node installs) and native/memory (memory back to the system when a process
// rests: V8's low-memory collection and malloc_trim).
// Never fails the install or the build: without them Berth streams blobs through Node and hashes S3
// uploads with hash-wasm instead.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const addons = [
  { dir: "sendfile", without: "blobs will be streamed without sendfile(2)" },
  { dir: "sha256", without: "uploads to S3 will be hashed with hash-wasm (slower)" },
  { dir: "memory", without: "idle processes will keep more memory" },
];
if (process.platform !== "linux" || process.env.BERTH_NO_NATIVE === "1") process.exit(0);

// npm sets npm_config_node_gyp to its bundled node-gyp when it runs scripts; otherwise look beside node.
const prefix = path.dirname(path.dirname(process.execPath));
const candidates = [
  process.env.npm_config_node_gyp,
  path.join(prefix, "lib", "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js"),
].filter((p) => p && existsSync(p));
if (candidates.length === 0) {
  console.warn(`berth: node-gyp not found; ${addons.map((a) => a.without).join("; ")}`);
  process.exit(0);
}
// Use the headers installed with node when there are any (no download needed).
const nodedir = existsSync(path.join(prefix, "include", "node", "node_api.h")) ? [`--nodedir=${prefix}`] : [];
for (const addon of addons) {
  const res = spawnSync(process.execPath, [candidates[0], "rebuild", "--silent", ...nodedir], {
    cwd: path.join(here, addon.dir),
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (res.status !== 0) console.warn(`berth: the ${addon.dir} addon did not build; ${addon.without}`);
}
