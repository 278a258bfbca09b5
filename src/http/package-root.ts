import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

let root: string | undefined;

/**
 * The directory of Berth's package.json: found by walking up from this module, so that it is right
 * from src/ (tsx), dist/ (tsc) and the bundled worker (dist/cli/worker.bundle.mjs) alike.
 */
export function packageRoot(): string {
  if (root) return root;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const file = path.join(dir, "package.json");
    if (existsSync(file)) {
      try {
        if ((JSON.parse(readFileSync(file, "utf8")) as { name?: string }).name === "berth") {
          root = dir;
          return root;
        }
      } catch {}
    }
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  // Not found (an unusual layout): the old assumption, two levels above dist/<area>/.
  root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
  return root;
}
