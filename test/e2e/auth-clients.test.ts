/**
 * Real clients log in, push and pull with credentials, and are refused without them: skopeo
 * (--creds), podman (login), docker (login, through a dockerd this file starts) and containerd's
 * `ctr --user`, against Berth over TLS with a CA made by openssl, in htpasswd mode and in token mode.
 *
 * Docker treats loopback registries as insecure and so does not check the certificate; it still
 * talks TLS. skopeo, podman and ctr are given the test CA and verify it (one test shows that
 * without the CA the connection is refused).
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { htpasswdText, makePki, type Pki } from "../integration/auth-fixtures.js";
import { type Containerd, startContainerd } from "./clients/containerd.js";
import { ContainerTools } from "./clients/containers.js";
import { type Dockerd, startDockerd } from "./clients/dockerd.js";
import type { RunResult } from "./clients/exec.js";
import { type Image, testImage, writeOciLayout } from "./clients/images.js";
import { cleanupAll, saveLogs } from "./clients/suite.js";

const PUSHER = { user: "pusher", password: "pusher-Pw-1" };
const READER = { user: "reader", password: "reader-Pw-2" };

let pki: Pki;
let tools: ContainerTools;
let dockerd: Dockerd;
let containerd: Containerd;
let src: string;
let image: Image;
/** For skopeo and podman: a directory with the CA as ca.crt. */
let certDir: string;

beforeAll(async () => {
  pki = makePki();
  certDir = path.join(pki.dir, "certs.d");
  fs.mkdirSync(certDir);
  fs.copyFileSync(pki.caCert, path.join(certDir, "ca.crt"));
  tools = ContainerTools.create("berth-e2e-auth-");
  image = testImage("auth");
  src = tools.subdir("src");
  writeOciLayout(src, { five: image });
  dockerd = await startDockerd();
  containerd = await startContainerd();
});

afterAll(async () => {
  saveLogs(undefined, "auth-clients", { dockerd: dockerd?.logs ?? [], containerd: containerd?.logs ?? [] });
  await cleanupAll(
    () => dockerd?.stop(),
    () => containerd?.stop(),
    () => tools?.cleanup(),
    () => fs.rmSync(pki.dir, { recursive: true, force: true }),
  );
});

function failed(result: RunResult, pattern: RegExp): void {
  expect(result.code, `${result.command}\n${result.stdout}\n${result.stderr}`).not.toBe(0);
  expect(`${result.stdout}\n${result.stderr}`).toMatch(pattern);
}

const REFUSED =
  /unauthorized|authentication required|denied|401|403|insufficient_scope|no basic auth credentials/i;

for (const mode of ["htpasswd", "token"] as const) {
  describe(`${mode} mode over TLS`, () => {
    let berth: Berth;
    const ref = (repo: string, tag = "v1") => `${berth.host}/${repo}:${tag}`;

    beforeAll(async () => {
      const dir = tempDir("berth-e2e-auth-conf-");
      const htpasswd = path.join(dir, "htpasswd");
      fs.writeFileSync(
        htpasswd,
        htpasswdText({ [PUSHER.user]: PUSHER.password, [READER.user]: READER.password }, 5),
      );
      const config = path.join(dir, "config.yml");
      fs.writeFileSync(
        config,
        [
          "auth:",
          "  htpasswd:",
          "    realm: Berth E2E",
          `    path: ${htpasswd}`,
          ...(mode === "token" ? ["  token:", "    service: berth-e2e"] : []),
          // Clients retry refused logins on their own; the throttle has its own tests.
          "  throttle: { enabled: false }",
          "  access:",
          "    rules:",
          '      - { repository: "e2e/*", users: [pusher], actions: [pull, push] }',
          '      - { repository: "e2e/*", users: [reader], actions: [pull] }',
          "",
        ].join("\n"),
      );
      berth = await startBerth({
        args: ["--config", config, "--tls-cert", pki.serverChain, "--tls-key", pki.serverKey],
        scheme: "https",
      });
    });

    afterAll(async () => {
      saveLogs(
        berth ? Object.assign(berth, { target: "berth" as const }) : undefined,
        `auth-clients-${mode}`,
      );
      await berth?.cleanup();
    });

    test("skopeo: refused without --creds, pushes and inspects with them, checks the CA", async () => {
      const dest = `docker://${ref("e2e/skopeo")}`;
      const copy = (creds: string[]) =>
        tools.skopeo(
          ["copy", "--dest-cert-dir", certDir, "--preserve-digests", ...creds, `oci:${src}:five`, dest],
          { allowFailure: true },
        );
      failed(await copy([]), REFUSED);
      failed(await copy(["--dest-creds", `${PUSHER.user}:wrong-password`]), REFUSED);
      failed(await copy(["--dest-creds", `${READER.user}:${READER.password}`]), REFUSED);
      const ok = await copy(["--dest-creds", `${PUSHER.user}:${PUSHER.password}`]);
      expect(ok.code, ok.stderr).toBe(0);

      const inspect = (args: string[]) =>
        tools.skopeo(["inspect", "--raw", ...args, dest], { allowFailure: true });
      const read = await inspect(["--cert-dir", certDir, "--creds", `${READER.user}:${READER.password}`]);
      expect(read.code, read.stderr).toBe(0);
      expect(JSON.parse(read.stdout).config.digest).toBe(image.config.digest);
      failed(await inspect(["--cert-dir", certDir]), REFUSED);
      // Without the test CA the server's certificate is not trusted.
      failed(await inspect(["--creds", `${READER.user}:${READER.password}`]), /certificate|x509/i);
    });

    test("podman: login, push, pull; refused after logout and with a wrong password", async () => {
      const login = (who: { user: string; password: string }) =>
        tools.podman(["login", "--cert-dir", certDir, "-u", who.user, "--password-stdin", berth.host], {
          input: `${who.password}\n`,
          allowFailure: true,
        });
      failed(
        await login({ user: PUSHER.user, password: "not-it" }),
        /unauthorized|invalid username\/password|401/i,
      );
      const ok = await login(PUSHER);
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stdout).toMatch(/Login Succeeded/);

      await tools.podman(["pull", `oci:${src}:five`]);
      const target = ref("e2e/podman");
      await tools.podman(["tag", image.config.digest.replace("sha256:", ""), target]);
      await tools.podman(["push", "--cert-dir", certDir, target]);

      await tools.podman(["logout", berth.host]);
      await tools.podman(["rmi", "--force", target]);
      failed(await tools.podman(["pull", "--cert-dir", certDir, target], { allowFailure: true }), REFUSED);

      expect((await login(READER)).code).toBe(0);
      const pulled = await tools.podman(["pull", "--cert-dir", certDir, target], { allowFailure: true });
      expect(pulled.code, pulled.stderr).toBe(0);
      expect(pulled.stdout.trim().split("\n").pop()).toBe(image.config.digest.replace("sha256:", ""));
      // The reader may not push.
      failed(
        await tools.podman(["push", "--cert-dir", certDir, target, ref("e2e/podman", "by-reader")], {
          allowFailure: true,
        }),
        REFUSED,
      );
      await tools.podman(["logout", berth.host]);
    });

    /**
     * Runs a docker command that must be refused, and checks that Berth refused it (401/403 on the
     * repository). Docker treats loopback registries as insecure: after the refusal over HTTPS it
     * retries over plain HTTP, and may report that attempt's EOF instead of the refusal.
     */
    async function dockerRefused(args: string[], repo: string, input?: string): Promise<void> {
      const mark = berth.logs.length;
      const result = await dockerd.docker(args, { allowFailure: true, input });
      failed(result, new RegExp(`${REFUSED.source}|EOF`, "i"));
      const refusals = berth.logs
        .slice(mark)
        .map((line) => {
          try {
            return JSON.parse(line) as { path?: string; status?: number };
          } catch {
            return {};
          }
        })
        .filter(
          (l) =>
            (l.status === 401 || l.status === 403) &&
            // Docker checks /v2/ first and, without credentials for a Basic challenge, stops there.
            (l.path?.includes(repo) ||
              l.path === "/v2/" ||
              (repo === "/v2/" && l.path?.startsWith("/auth/token"))),
        );
      expect(refusals.length, `no 401/403 logged for ${args.join(" ")}`).toBeGreaterThan(0);
    }

    test("docker: login, push, pull; refused when logged out, with a wrong password, or as a reader", async () => {
      const docker = (args: string[], input?: string) => dockerd.docker(args, { allowFailure: true, input });
      const target = ref("e2e/docker");
      const archive = path.join(tools.dir, `docker-${mode}.tar`);
      await tools.skopeo(["copy", `oci:${src}:five`, `docker-archive:${archive}:${target}`]);
      expect((await docker(["load", "--input", archive])).code).toBe(0);

      await dockerRefused(["push", target], "e2e/docker");
      await dockerRefused(["login", "-u", PUSHER.user, "--password-stdin", berth.host], "/v2/", "wrong\n");
      const login = await docker(
        ["login", "-u", PUSHER.user, "--password-stdin", berth.host],
        `${PUSHER.password}\n`,
      );
      expect(login.code, login.stderr).toBe(0);
      expect(login.stdout).toMatch(/Login Succeeded/);
      const stored = JSON.parse(fs.readFileSync(path.join(dockerd.dir, "cli", "config.json"), "utf8")) as {
        auths: Record<string, { auth?: string; identitytoken?: string }>;
      };
      if (mode === "token") {
        // docker login asked for an offline token and keeps the refresh token instead of the password.
        expect(stored.auths[berth.host]?.identitytoken).toBeTruthy();
      } else {
        expect(stored.auths[berth.host]?.auth).toBeTruthy();
      }
      const pushed = await docker(["push", target]);
      expect(pushed.code, pushed.stderr).toBe(0);
      const digest = /digest: (sha256:[0-9a-f]{64})/.exec(pushed.stdout)?.[1];
      expect(digest).toMatch(/^sha256:/);

      await docker(["logout", berth.host]);
      await docker(["rmi", "--force", target]);
      await dockerRefused(["pull", target], "e2e/docker");

      expect(
        (await docker(["login", "-u", READER.user, "--password-stdin", berth.host], `${READER.password}\n`))
          .code,
      ).toBe(0);
      const pulled = await docker(["pull", target]);
      expect(pulled.code, pulled.stderr).toBe(0);
      expect(pulled.stdout).toContain(`Digest: ${digest}`);
      const other = ref("e2e/docker", "by-reader");
      await docker(["tag", target, other]);
      await dockerRefused(["push", other], "e2e/docker");
      await docker(["logout", berth.host]);
      await docker(["rmi", "--force", target, other]);
    });

    test("ctr: pulls and pushes with --user, refused without", async () => {
      const source = ref("e2e/skopeo");
      // containerd 1.6 speaks plain HTTP to loopback hosts unless hosts.toml names https and the CA.
      const hostsDir = path.join(tools.dir, `ctr-hosts-${mode}`);
      fs.mkdirSync(path.join(hostsDir, berth.host), { recursive: true });
      fs.writeFileSync(
        path.join(hostsDir, berth.host, "hosts.toml"),
        [
          `server = "https://${berth.host}"`,
          "",
          `[host."https://${berth.host}"]`,
          '  capabilities = ["pull", "resolve", "push"]',
          `  ca = ${JSON.stringify(pki.caCert)}`,
          "",
        ].join("\n"),
      );
      const tls = ["--hosts-dir", hostsDir];
      const pull = (extra: string[]) =>
        containerd.ctr(["images", "pull", "--snapshotter", "native", ...tls, ...extra, source], {
          allowFailure: true,
        });
      failed(await pull([]), REFUSED);
      failed(await pull(["--user", `${READER.user}:wrong`]), REFUSED);
      const ok = await pull(["--user", `${READER.user}:${READER.password}`]);
      expect(ok.code, ok.stderr).toBe(0);
      const listed = (await containerd.ctr(["images", "ls", "-q"])).stdout;
      expect(listed).toContain(source);

      const target = ref("e2e/ctr");
      await containerd.ctr(["images", "tag", "--force", source, target]);
      failed(
        await containerd.ctr(
          ["images", "push", ...tls, "--user", `${READER.user}:${READER.password}`, target],
          { allowFailure: true },
        ),
        REFUSED,
      );
      const pushed = await containerd.ctr(
        ["images", "push", ...tls, "--user", `${PUSHER.user}:${PUSHER.password}`, target],
        {
          allowFailure: true,
        },
      );
      expect(pushed.code, pushed.stderr).toBe(0);
      const check = await tools.skopeo(
        [
          "inspect",
          "--raw",
          "--cert-dir",
          certDir,
          "--creds",
          `${READER.user}:${READER.password}`,
          `docker://${target}`,
        ],
        { allowFailure: true },
      );
      expect(check.code, check.stderr).toBe(0);
      expect(JSON.parse(check.stdout).config.digest).toBe(image.config.digest);
      await containerd.ctr(["images", "rm", "--sync", source, target]);
    });
  });
}
