import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT, tempDir } from "../helpers/server.js";

/**
 * Workers of `berth serve` start side by side and each opens (and if needed migrates) the database:
 * migrations run under SQLite's write lock, so the first process migrates and the others find it done.
 */
describe("database migrations", () => {
  it("are safe when several processes open a new database at the same instant", async () => {
    const dir = tempDir();
    const db = path.join(ROOT, "dist/metadata/db.js");
    const script = `
      const { openSqlite } = await import(${JSON.stringify(db)});
      const m = await openSqlite(${JSON.stringify(dir)});
      const rows = await m.db.selectFrom("kysely_migration").select("name").execute();
      await m.close();
      console.log(JSON.stringify(rows.map((r) => r.name)));
    `;
    const run = () =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
          stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        child.stdout.on("data", (c: Buffer) => {
          out += c.toString();
        });
        child.stderr.on("data", (c: Buffer) => {
          out += c.toString();
        });
        child.on("exit", (code) => resolve({ code, out }));
      });
    try {
      const results = await Promise.all(Array.from({ length: 6 }, run));
      for (const r of results) {
        expect(r.code, r.out).toBe(0);
        const names = JSON.parse(r.out.trim().split("\n").pop()!) as string[];
        expect(names).toContain("0001_initial");
        expect(new Set(names).size).toBe(names.length);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
