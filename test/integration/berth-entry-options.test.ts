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

// The `berth` command reads a plain `berth serve` command line itself (src/cli/berth.cts), by the same
// declaration of serve's options (src/cli/serve-options.cts) that commander's serve is built from. A serve
// option it did not know would only send the command line to commander (more memory, still correct).
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

  // Workers and `--workers 1` take their flags from plainServe, not from commander: the same command line
  // must give the same flags, down to lists, switches and the last of a repeated option.
  it("reads a command line into the flags commander would give serve", () => {
    const lines = [
      ["serve"],
      [],
      ["serve", "--addr", "127.0.0.1:5000", "--data-dir", "/srv/berth", "--workers", "3"],
      ["--addr=:5000", "-c", "/etc/berth/config.yml", "--read-only", "--log-level", "debug"],
      ["serve", "--config=/a.yml", "--config", "/b.yml", "--tls-cert", "c.pem", "--tls-key=k.pem"],
      [
        "serve",
        "--acme-host",
        "a.example, b.example",
        "--acme-host=c.example",
        "--acme-email",
        "x@example.org",
      ],
      ["serve", "--acme-directory", "https://acme.example/dir", "--acme-http-addr", ":80", "--data-dir="],
    ];
    for (const args of lines) {
      let parsed: object | undefined;
      const program = new Command().exitOverride();
      registerServeCommand(program);
      const serve = program.commands.find((c) => c.name() === "serve")!;
      serve.action((flags: object) => {
        parsed = { ...flags };
      });
      program.parse(["node", "berth", ...args]);
      expect(plainServe(args), args.join(" ")).toEqual(parsed);
    }
  });
});
