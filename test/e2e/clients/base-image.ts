/**
 * Local base images for deploy/Dockerfile, where no image can be pulled: a minimal Debian 12 made by
 * debootstrap (--variant=minbase, from the mirror apt uses) with the host's Node.js copied in where the
 * official node images keep it (/usr/local: node, npm, the headers node-gyp builds against), imported
 * into a dockerd with `docker import`. Two images, as the Dockerfile's two arguments:
 *  - runtime (NODE_IMAGE): that and nothing more, about what node:*-bookworm-slim holds;
 *  - build (BUILD_IMAGE): the same with python3, make and g++ (apt-get in a chroot on the host, which
 *    reaches the mirror; a build container does not).
 * The host's CA bundle replaces Debian's, with NODE_EXTRA_CA_CERTS naming it, so that npm in the build
 * trusts what the host trusts (a proxy in front of the npm registry).
 * One debootstrap per call (about 30 s); callers build the images once per test run.
 */
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import path from "node:path";
import type { Dockerd } from "./dockerd.js";
import { requireTool, run } from "./exec.js";

export interface LocalBase {
  runtime: string;
  build: string;
}

/** The first Debian archive URI of apt's sources (E2E_DEBIAN_MIRROR replaces it). */
export function debianMirror(): string {
  if (process.env.E2E_DEBIAN_MIRROR) return process.env.E2E_DEBIAN_MIRROR;
  const files = ["/etc/apt/sources.list"];
  try {
    for (const f of readdirSync("/etc/apt/sources.list.d"))
      files.push(path.join("/etc/apt/sources.list.d", f));
  } catch {}
  for (const file of files) {
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n")) {
      if (line.trimStart().startsWith("#")) continue;
      const m = /(https?:\/\/\S+\/debian)\/?(\s|$)/.exec(line);
      if (m) return m[1]!;
    }
  }
  return "http://deb.debian.org/debian";
}

const CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";

async function importTree(dockerd: Dockerd, root: string, tarball: string, name: string): Promise<void> {
  await run(requireTool("tar"), ["-C", root, "--numeric-owner", "-cf", tarball, "."]);
  await dockerd.docker(["import", "--change", `ENV NODE_EXTRA_CA_CERTS=${CA_BUNDLE}`, tarball, name], {
    timeoutMs: 300_000,
  });
  rmSync(tarball, { force: true });
}

/** Builds and imports `${tag}/node-runtime:local` and `${tag}/node-build:local` into `dockerd`. */
export async function buildLocalBase(dockerd: Dockerd, workDir: string, tag: string): Promise<LocalBase> {
  const debootstrap = requireTool("debootstrap");
  const root = path.join(workDir, "rootfs");
  mkdirSync(workDir, { recursive: true });
  await run(
    debootstrap,
    ["--variant=minbase", "--include=passwd,ca-certificates", "bookworm", root, debianMirror()],
    { timeoutMs: 600_000 },
  );
  // What the official images have: docs, manuals and translations are left out.
  const empty = (dir: string) => {
    const full = path.join(root, dir);
    if (existsSync(full))
      for (const entry of readdirSync(full)) rmSync(path.join(full, entry), { recursive: true });
  };
  for (const dir of [
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "var/cache/apt/archives",
    "var/lib/apt/lists",
  ])
    empty(dir);
  const prefix = path.dirname(path.dirname(process.execPath));
  const local = path.join(root, "usr", "local");
  cpSync(process.execPath, path.join(local, "bin", "node"));
  for (const dir of ["include/node", "lib/node_modules/npm"]) {
    if (existsSync(path.join(prefix, dir)))
      cpSync(path.join(prefix, dir), path.join(local, dir), { recursive: true, verbatimSymlinks: true });
  }
  symlinkSync("../lib/node_modules/npm/bin/npm-cli.js", path.join(local, "bin", "npm"));
  symlinkSync("../lib/node_modules/npm/bin/npx-cli.js", path.join(local, "bin", "npx"));
  if (existsSync(CA_BUNDLE)) cpSync(CA_BUNDLE, path.join(root, CA_BUNDLE));

  const runtime = `${tag}/node-runtime:local`;
  const build = `${tag}/node-build:local`;
  await importTree(dockerd, root, path.join(workDir, "runtime.tar"), runtime);

  const chroot = requireTool("chroot");
  cpSync("/etc/resolv.conf", path.join(root, "etc", "resolv.conf"));
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  await run(chroot, [root, "apt-get", "update", "-qq"], { env, timeoutMs: 300_000 });
  await run(
    chroot,
    [root, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "python3", "make", "g++"],
    {
      env,
      timeoutMs: 600_000,
    },
  );
  await run(chroot, [root, "apt-get", "clean"], { env });
  empty("var/lib/apt/lists");
  await importTree(dockerd, root, path.join(workDir, "build.tar"), build);
  rmSync(root, { recursive: true, force: true });
  return { runtime, build };
}
