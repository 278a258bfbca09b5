/**
 * Issue 22: the npm package. `npm pack` of this checkout (built by `npm test`), installed with
 * `npm install -g --prefix` into a temporary prefix as docs/deployment.md says; the `berth` it puts in
 * PREFIX/bin serves with its embedded defaults (no configuration file, data in the working directory)
 * and skopeo pushes to it. Then the package's install script again with no C/C++ compiler on the PATH:
 * it succeeds, says which addons did not build, and Berth still serves without them.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, symlinkSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { freePort, portOpen, ROOT } from "../helpers/server.js";
import { ContainerTools } from "./clients/containers.js";
import { requireTool, run, waitFor } from "./clients/exec.js";
import { type Image, testImage, writeOciLayout } from "./clients/images.js";
import { cleanupAll } from "./clients/suite.js";

const NAME = "berth-registry";
const ADDONS = ["sendfile", "sha256", "memory"];

let tools: ContainerTools;
let prefix: string;
let src: string;
let image: Image;
const servers: ChildProcess[] = [];

/** PREFIX/lib/node_modules/berth-registry, where `npm install -g --prefix PREFIX` puts the package. */
const installed = () => path.join(prefix, "lib", "node_modules", NAME);
const npm = () => requireTool("npm");

beforeAll(async () => {
  tools = ContainerTools.create("berth-e2e-package-");
  image = testImage("package");
  src = tools.subdir("src");
  writeOciLayout(src, { five: image });
  prefix = tools.subdir("prefix");
  const packed = await run(npm(), ["pack", "--json", "--pack-destination", tools.dir], { cwd: ROOT });
  const [{ filename }] = JSON.parse(packed.stdout) as { filename: string }[];
  // From the tarball; dependencies come from npm's cache where it has them (after `npm ci`, all of them).
  await run(
    npm(),
    [
      "install",
      "--global",
      "--prefix",
      prefix,
      "--prefer-offline",
      "--no-audit",
      "--no-fund",
      `--allow-scripts=${NAME},better-sqlite3`,
      path.join(tools.dir, filename),
    ],
    { cwd: tools.dir, timeoutMs: 900_000 },
  );
}, 1_000_000);

afterAll(async () => {
  await cleanupAll(
    ...servers.map((child) => () => {
      if (child.exitCode === null) child.kill("SIGKILL");
    }),
    () => tools?.cleanup(),
  );
});

/** `PREFIX/bin/berth serve` on a free port in a new working directory; resolves once it accepts. */
async function serve(label: string, env: Record<string, string> = {}) {
  const port = await freePort();
  const cwd = tools.subdir(label);
  const child = spawn(path.join(prefix, "bin", "berth"), ["serve", "--addr", `127.0.0.1:${port}`], {
    cwd,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  servers.push(child);
  const logs: string[] = [];
  child.stdout?.on("data", (c: Buffer) => logs.push(c.toString()));
  child.stderr?.on("data", (c: Buffer) => logs.push(c.toString()));
  await waitFor(
    `berth from the package on :${port}`,
    () => child.exitCode === null && portOpen(port),
    30_000,
    100,
  ).catch((e: unknown) => {
    throw new Error(`${String(e)}\n${logs.join("")}`);
  });
  return { port, cwd, logs, child };
}

async function pushAndCheck(port: number, repo: string): Promise<void> {
  await tools.skopeo([
    "copy",
    "--dest-tls-verify=false",
    "--preserve-digests",
    `oci:${src}:five`,
    `docker://127.0.0.1:${port}/${repo}:v1`,
  ]);
  const res = await fetch(`http://127.0.0.1:${port}/v2/${repo}/manifests/v1`, {
    method: "HEAD",
    headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
  });
  expect(res.headers.get("docker-content-digest")).toBe(image.manifest.digest);
}

async function stop(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  child.kill("SIGTERM");
  return exited;
}

describe("the npm package", () => {
  test("installs with `npm install -g --prefix`, its berth serves with the embedded defaults, skopeo pushes", async () => {
    expect(existsSync(path.join(prefix, "bin", "berth"))).toBe(true);
    const version = await run(path.join(prefix, "bin", "berth"), ["--version"]);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    for (const addon of ADDONS)
      expect(
        existsSync(path.join(installed(), "native", addon, "build", "Release", `berth_${addon}.node`)),
      ).toBe(true);
    const server = await serve("defaults");
    await pushAndCheck(server.port, "package/app");
    // Embedded defaults: the data directory is ./data of the working directory.
    expect(existsSync(path.join(server.cwd, "data"))).toBe(true);
    expect(await stop(server.child)).toBe(0);
  });

  test("without a compiler on the PATH, the install script warns and succeeds, and Berth serves without the addons", async () => {
    // A PATH of everything the usual one has but C and C++ compilers.
    const bin = tools.subdir("no-compiler-bin");
    const hidden = /^(g\+\+|c\+\+|gcc|cc|clang|clang\+\+|x86_64-linux-gnu-g(cc|\+\+))(-\d+)?$/;
    for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
      if (!dir || !existsSync(dir)) continue;
      for (const name of readdirSync(dir)) {
        if (hidden.test(name) || existsSync(path.join(bin, name))) continue;
        symlinkSync(path.join(dir, name), path.join(bin, name));
      }
    }
    mkdirSync(bin, { recursive: true });
    const env = { PATH: bin, CC: "", CXX: "" };
    const rebuilt = await run(
      npm(),
      ["rebuild", "--global", "--prefix", prefix, "--foreground-scripts", `--allow-scripts=${NAME}`, NAME],
      {
        env,
        timeoutMs: 300_000,
      },
    );
    const said = rebuilt.stdout + rebuilt.stderr;
    for (const addon of ADDONS) {
      expect(said).toContain(`the ${addon} addon did not build`);
      expect(
        existsSync(path.join(installed(), "native", addon, "build", "Release", `berth_${addon}.node`)),
      ).toBe(false);
    }
    const server = await serve("no-addons");
    await pushAndCheck(server.port, "package/plain");
    const pull = await fetch(`http://127.0.0.1:${server.port}/v2/package/plain/blobs/${image.config.digest}`);
    expect(pull.status).toBe(200);
    expect(await stop(server.child)).toBe(0);
  });
});
