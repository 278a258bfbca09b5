import { createRequire } from "node:module";
import path from "node:path";
import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { registerServeCommand } from "../../src/cli/commands.js";
import { ROOT } from "../helpers/server.js";

// The built entry (CommonJS), as the berth command runs it.
const { plainServe } = createRequire(import.meta.url)(path.join(ROOT, "dist/cli/berth.cjs")) as {
  plainServe(args: string[]): object | undefined;
};

// The `berth` command reads a plain `berth serve` command line itself (src/cli/berth.cts) and knows
// serve's options by a list of its own. A serve option missing from that list only sends the command
// line to commander (more memory, still correct), but every option commander declares should be there.
describe("the berth command's own reading of serve", () => {
  it("knows every option of serve that commander declares", () => {
    const program = new Command();
    registerServeCommand(program);
    const serve = program.commands.find((c) => c.name() === "serve")!;
    for (const option of serve.options) {
      for (const flag of [option.short, option.long].filter((f): f is string => Boolean(f))) {
        const line = option.required || option.optional ? ["serve", flag, "x"] : ["serve", flag];
        expect(plainServe(line), `${flag} is read by src/cli/berth.cts`).toBeDefined();
      }
    }
    expect(plainServe(["serve", "--no-such-flag"])).toBeUndefined();
    expect(plainServe(["user", "list"])).toBeUndefined();
  });
});
