#!/usr/bin/env node
// Builds Berth's optional native addon (native/sendfile: sendfile(2) for blob GETs) with node-gyp.
// Never fails the install or the build: without the addon Berth streams blobs through Node instead.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), "sendfile");
if (process.platform !== "linux" || process.env.BERTH_NO_NATIVE === "1") process.exit(0);

// npm sets npm_config_node_gyp to its bundled node-gyp when it runs scripts; otherwise look beside node.
const prefix = path.dirname(path.dirname(process.execPath));
const candidates = [
  process.env.npm_config_node_gyp,
  path.join(prefix, "lib", "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js"),
].filter((p) => p && existsSync(p));
if (candidates.length === 0) {
  console.warn("berth: node-gyp not found; blobs will be streamed without sendfile(2)");
  process.exit(0);
}
// Use the headers installed with node when there are any (no download needed).
const nodedir = existsSync(path.join(prefix, "include", "node", "node_api.h")) ? [`--nodedir=${prefix}`] : [];
const res = spawnSync(process.execPath, [candidates[0], "rebuild", "--silent", ...nodedir], {
  cwd: dir,
  stdio: ["ignore", "inherit", "inherit"],
});
if (res.status !== 0) {
  console.warn("berth: the sendfile addon did not build; blobs will be streamed without sendfile(2)");
}
