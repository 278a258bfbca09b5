/**
 * skopeo, podman and buildah, isolated from the host: a temp HOME, their own policy.json,
 * registries.conf, storage.conf and containers.conf, and vfs storage under a temp root, so that
 * nothing the host has configured (or stored) changes what the tests see.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { removeTree, trackDir } from "./cleanup.js";
import { type RunOptions, type RunResult, requireTool, run } from "./exec.js";

export class ContainerTools {
  readonly dir: string;
  readonly home: string;
  readonly policy: string;
  readonly root: string;
  readonly runroot: string;
  readonly tmp: string;
  readonly env: Record<string, string>;
  private readonly registriesConf: string;
  private readonly insecure = new Set<string>();

  private constructor(dir: string) {
    this.dir = dir;
    this.home = path.join(dir, "home");
    this.root = path.join(dir, "storage", "root");
    this.runroot = path.join(dir, "storage", "run");
    this.tmp = path.join(dir, "tmp");
    const conf = path.join(dir, "conf");
    for (const d of [
      this.home,
      path.join(this.home, ".config", "containers"),
      this.root,
      this.runroot,
      this.tmp,
      conf,
    ]) {
      mkdirSync(d, { recursive: true });
    }
    this.policy = path.join(conf, "policy.json");
    const policy = JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] });
    writeFileSync(this.policy, policy);
    // c/image reads ~/.config/containers/policy.json first where a command has no policy flag.
    writeFileSync(path.join(this.home, ".config", "containers", "policy.json"), policy);
    const registries = path.join(conf, "registries.conf");
    this.registriesConf = registries;
    this.writeRegistriesConf();
    const storage = path.join(conf, "storage.conf");
    writeFileSync(
      storage,
      `[storage]\ndriver = "vfs"\ngraphroot = "${this.root}"\nrunroot = "${this.runroot}"\n`,
    );
    const containers = path.join(conf, "containers.conf");
    writeFileSync(
      containers,
      [
        "[engine]",
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        `tmp_dir = "${path.join(this.tmp, "libpod")}"`,
        "",
      ].join("\n"),
    );
    this.env = {
      HOME: this.home,
      TMPDIR: this.tmp,
      XDG_CONFIG_HOME: path.join(this.home, ".config"),
      CONTAINERS_REGISTRIES_CONF: registries,
      CONTAINERS_STORAGE_CONF: storage,
      CONTAINERS_CONF: containers,
      REGISTRY_AUTH_FILE: path.join(conf, "auth.json"),
      BUILDAH_ISOLATION: "chroot",
    };
    writeFileSync(this.env.REGISTRY_AUTH_FILE!, "{}");
  }

  static create(prefix = "berth-e2e-containers-"): ContainerTools {
    // Lower case only: podman derives image names from oci: layout paths, and names are lower case.
    const dir = path.join(os.tmpdir(), `${prefix}${randomBytes(6).toString("hex")}`);
    mkdirSync(dir, { mode: 0o700 });
    trackDir(dir);
    return new ContainerTools(dir);
  }

  private writeRegistriesConf(): void {
    const lines = ["unqualified-search-registries = []", 'short-name-mode = "disabled"', ""];
    for (const host of this.insecure)
      lines.push("[[registry]]", `location = "${host}"`, "insecure = true", "");
    writeFileSync(this.registriesConf, lines.join("\n"));
  }

  /**
   * Marks a registry as plain-HTTP in registries.conf, for commands that have no --tls-verify
   * flag (podman manifest inspect of a remote image).
   */
  allowInsecure(host: string): void {
    this.insecure.add(host);
    this.writeRegistriesConf();
  }

  /** A fresh directory inside this tool set's temp dir. */
  subdir(name: string): string {
    const d = path.join(this.dir, name);
    mkdirSync(d, { recursive: true });
    return d;
  }

  private opts(options: RunOptions): RunOptions {
    return { ...options, env: { ...this.env, ...options.env } };
  }

  skopeo(args: string[], options: RunOptions = {}): Promise<RunResult> {
    return run(
      requireTool("skopeo"),
      ["--policy", this.policy, "--tmpdir", this.tmp, ...args],
      this.opts(options),
    );
  }

  podman(args: string[], options: RunOptions = {}): Promise<RunResult> {
    return run(
      requireTool("podman"),
      [
        "--root",
        this.root,
        "--runroot",
        this.runroot,
        "--storage-driver",
        "vfs",
        "--cgroup-manager=cgroupfs",
        "--events-backend=file",
        "--tmpdir",
        path.join(this.tmp, "libpod"),
        ...args,
      ],
      this.opts(options),
    );
  }

  buildah(args: string[], options: RunOptions = {}): Promise<RunResult> {
    return run(
      requireTool("buildah"),
      ["--root", this.root, "--runroot", this.runroot, "--storage-driver", "vfs", ...args],
      this.opts(options),
    );
  }

  async cleanup(): Promise<void> {
    await removeTree(this.dir);
  }
}
