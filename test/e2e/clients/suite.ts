/** Small pieces every client suite uses. */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { ROOT } from "../../helpers/server.js";
import type { Registry } from "./registry.js";

/** The digest a client wrote with --digestfile (trimmed; must look like a sha256 digest). */
export function readDigestFile(file: string): string {
  const text = readFileSync(file, "utf8").trim();
  if (!/^sha256:[0-9a-f]{64}$/.test(text)) throw new Error(`digest file ${file} holds "${text}"`);
  return text;
}

/**
 * Keeps the registry's log of a suite under test-output/e2e/ (git-ignored), so that a failure seen
 * by a client can be matched with what the server logged.
 */
export function saveLogs(
  registry: Registry | undefined,
  suite: string,
  extra: Record<string, string[]> = {},
): void {
  const dir = path.join(ROOT, "test-output", "e2e");
  try {
    mkdirSync(dir, { recursive: true });
    if (registry)
      writeFileSync(path.join(dir, `${suite}.${registry.target}.log`), `${registry.logs.join("\n")}\n`);
    for (const [name, lines] of Object.entries(extra)) {
      writeFileSync(path.join(dir, `${suite}.${name}.log`), `${lines.join("\n")}\n`);
    }
  } catch {}
}

/** Runs every cleanup step even when one throws; throws the first error afterwards. */
export async function cleanupAll(...steps: (() => Promise<unknown> | unknown)[]): Promise<void> {
  let first: unknown;
  for (const step of steps) {
    try {
      await step();
    } catch (e) {
      first ??= e;
    }
  }
  if (first) throw first;
}
