import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const root = fileURLToPath(new URL(".", import.meta.url));

// The web UI: Preact + TypeScript, built into ui/dist and served by Berth itself at `/`.
// Everything is bundled (no CDN); hashed assets go to ui/dist/assets and are cached for a year.
export default defineConfig({
  root,
  base: "/",
  publicDir: "public",
  oxc: {
    jsx: { runtime: "automatic", importSource: "preact" },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    assetsDir: "assets",
    sourcemap: false,
    reportCompressedSize: false,
  },
  logLevel: "warn",
});
