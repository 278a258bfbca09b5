import type { Command } from "commander";
import type { ConfigCheckOptions } from "./config.js";
import type { GcFlags, RelocateFlags, RepoRmFlags, RetentionFlags, UsageFlags } from "./maintenance.js";
import type { ServeFlags } from "./serve.js";
import { SERVE_OPTIONS } from "./serve-options.cjs";
import { collect } from "./tls-flags.js";

/**
 * The commands of `berth` and their options. Nothing here loads what a command needs to run: each
 * action imports its implementation when it runs, so that `berth --help` or `berth user list` does
 * not pay for the server, the database or the configuration schema.
 */

export function registerServeCommand(program: Command): void {
  const command = program
    .command("serve", { isDefault: true })
    .description("run the registry (the OCI distribution API, the web UI and Berth's API on one port)");
  for (const option of SERVE_OPTIONS) {
    if (option.list) command.option(option.flags, option.description, collect);
    else command.option(option.flags, option.description);
  }
  command.action(async (flags: ServeFlags) => {
    await (await import("./serve.js")).serve(flags);
  });
}

/** `berth config check [--config FILE] [--json]`. */
export function registerConfigCommand(program: Command): void {
  const config = program.command("config").description("inspect Berth's configuration");
  config
    .command("check")
    .description(
      "validate the configuration (file < REGISTRY_* environment) and print the effective values, " +
        "each with where it came from; secrets are masked. Exits 1 when the configuration is invalid.",
    )
    .option(
      "-c, --config <file>",
      "YAML configuration file (default: $REGISTRY_CONFIGURATION_PATH, else /etc/berth/config.yml when present)",
    )
    .option("--json", "print { file, config, sources, warnings } as JSON")
    .option("-q, --quiet", "print only warnings and errors")
    .option(
      "--offline",
      "with storage.s3, do not write a probe object to the bucket (checks the file and variables only)",
    )
    .action(async (opts: ConfigCheckOptions) => {
      const { runConfigCheck, checkBlobStore } = await import("./config.js");
      const io = {
        stdout: (t: string) => process.stdout.write(t),
        stderr: (t: string) => process.stderr.write(t),
      };
      process.exitCode = runConfigCheck(opts, io);
      // With storage.s3: the bucket is reachable and writable (unless --offline).
      if (process.exitCode === 0 && !opts.offline) process.exitCode = await checkBlobStore(opts, io);
    });
}

function commonOptions(cmd: Command): Command {
  return cmd
    .option("-c, --config <file>", "YAML configuration file (default /etc/berth/config.yml when present)")
    .option(
      "--data-dir <dir>",
      "where blobs and the database live (storage.filesystem.rootdirectory); with storage.s3, the database and scratch only",
    );
}

// ------------------------------------------------------------------------------------------------

export function registerMaintenanceCommands(program: Command): void {
  commonOptions(
    program
      .command("gc")
      .description(
        "collect garbage now: unreferenced blobs, orphan files, abandoned uploads (and untagged manifests when configured)",
      )
      .option("--dry-run", "list what would be removed and how many bytes, remove nothing")
      .option("--untagged", "also remove untagged manifests (as gc.untagged.enabled)")
      .option(
        "--grace-period <duration>",
        "keep anything newer than this (gc.graceperiod); pushes in progress need it",
      )
      .option("--wait <duration>", "how long to wait for a collection running elsewhere (default 10m)")
      .option("--no-list", "print totals only, not every item")
      .option(
        "--i-know-the-store-is-mine",
        "collect files without a database row even when the database knows no blob (the store holds only Berth's own blobs)",
      )
      .option("--json", "print the report as JSON"),
  ).action(async (flags: GcFlags) => (await import("./maintenance.js")).runGc(flags));

  commonOptions(
    program
      .command("relocate")
      .description(
        "S3: copy the blobs that were uploaded in parts to registry:2's keys now (as the background job does while registry:2's link files are kept); run it before starting registry:2 on the bucket",
      )
      .option(
        "--retire-after <duration>",
        "delete the first copies once moved longer ago than this (default 1h; 0s once Berth is stopped)",
      )
      .option("--wait <duration>", "how long to wait for a relocation running elsewhere (default 10m)"),
  ).action(async (flags: RelocateFlags) => (await import("./maintenance.js")).runRelocate(flags));

  commonOptions(
    program
      .command("retention")
      .description("apply the retention policies now (retention.policies)")
      .option("--dry-run", "list what each policy would remove and why, remove nothing")
      .option("--repository <name>", "only this repository")
      .option("--json", "print the report as JSON"),
  ).action(async (flags: RetentionFlags) => (await import("./maintenance.js")).runRetention(flags));

  commonOptions(
    program
      .command("usage")
      .description("storage used, in total and per repository (unique and shared bytes)")
      .option("--repository <name>", "only this repository")
      .option("--json", "print as JSON"),
  ).action(async (flags: UsageFlags) => (await import("./maintenance.js")).runUsage(flags));

  const repo = program.command("repo").description("manage repositories");
  commonOptions(
    repo
      .command("rm")
      .argument("<name>", "repository to delete")
      .description(
        "delete a repository: its tags, manifests, blob links and uploads (blobs go at the next gc); " +
          "needs storage.delete.enabled (REGISTRY_STORAGE_DELETE_ENABLED=true)",
      )
      .option("--json", "print the result as JSON"),
  ).action(async (name: string, flags: RepoRmFlags) =>
    (await import("./maintenance.js")).runRepoRm(name, flags),
  );
}
