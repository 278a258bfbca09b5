import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

// The bundled worker (scripts/bundle-worker.mjs, made by `npm run build`). V8 keeps the source text of
// every module a process loaded for as long as it lives, so what a worker reads at start-up is resident
// in every worker, and twice over when it is held as UTF-16.
const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../dist/cli");
const files = readdirSync(dir).filter((f) => f === "worker.bundle.mjs" || f.startsWith("worker.chunk-"));

describe("the bundled worker", () => {
  it("is there (npm run build made it)", () => {
    expect(files).toContain("worker.bundle.mjs");
  });

  it("is ASCII only, so that V8 holds its source one byte per character", () => {
    for (const file of files) {
      const text = readFileSync(path.join(dir, file), "utf8");
      const at = text.search(/[\u0080-\uffff]/);
      expect(at === -1 ? "" : `${file}: ${text.slice(Math.max(0, at - 40), at + 40)}`).toBe("");
    }
  });

  it("is split, and holds no comments or indentation", () => {
    // What the worker imports with import() only when some set-up uses it (TLS, the proxy, S3, x509...)
    // is in chunks of its own, read only when used. Unsplit and unminified it was one file of 4.4 MB.
    const sizes = files.map((f) => readFileSync(path.join(dir, f)).length);
    expect(files.length).toBeGreaterThan(10);
    expect(Math.max(...sizes)).toBeLessThan(1024 * 1024);
    expect(sizes.reduce((a, b) => a + b, 0)).toBeLessThan(3 * 1024 * 1024);
  });

  it("holds zod's English messages alone, not its 60 locales", () => {
    const text = files.map((f) => readFileSync(path.join(dir, f), "utf8")).join("\n");
    expect(text).toContain("Invalid input");
    // Catalan and German, two of the locales zod's index re-exports.
    expect(text).not.toContain("Entrada inv");
    expect(text).not.toContain("Ung\\xFCltige Eingabe");
  });
});
