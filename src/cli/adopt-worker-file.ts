/**
 * The module that adoption's reading threads run (src/registry/adopt-worker.ts), as the build lays it
 * out: dist/registry/adopt-worker.js, seen from dist/cli/, which is where this code runs from whether
 * it is a file of its own or part of the bundled worker (dist/cli/worker.bundle.mjs, see
 * scripts/bundle-worker.mjs). The domain (src/registry/adopt.ts) is given it rather than finding it.
 */
export function adoptWorkerFile(): URL {
  return new URL("../registry/adopt-worker.js", import.meta.url);
}
