// The private CA of `berth tls init` (issue 15): serve picks it up, /ca.crt, renewal before expiry
// without a restart in every worker, and a CA that survives a second init.
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import tls from "node:tls";
import { afterAll, describe, expect, it } from "vitest";
import { type Berth, CLI, freePort, startBerth, tempDir } from "../helpers/server.js";
import { http2Request, httpsRequest } from "./auth-fixtures.js";

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

function berth(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const res = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

function peerSerial(port: number, ca: Buffer, servername = "localhost"): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, servername, ca }, () => {
      resolve(socket.getPeerCertificate().serialNumber);
      socket.end();
    });
    socket.on("error", reject);
  });
}

async function eventually<T>(fn: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

async function serve(dataDir: string, workers = 1): Promise<Berth> {
  const b = await startBerth({ dataDir, scheme: "https", workers, port: await freePort() });
  cleanups.push(() => b.stop());
  return b;
}

describe("berth tls init / trust / serve", () => {
  it("serve uses the certificate, serves the CA at /ca.crt, and trust prints its fingerprint", async () => {
    const dataDir = tempDir("berth-privca-");
    cleanups.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
    const init = berth([
      "tls",
      "init",
      "--data-dir",
      dataDir,
      "--host",
      "reg.home.lan",
      "--host",
      "localhost",
      "--ip",
      "127.0.0.1",
    ]);
    expect(init.status, init.stderr).toBe(0);
    // Issue 22: a server started before keeps plain HTTP; init says so.
    expect(init.stdout).toContain("a server already\nrunning keeps plain HTTP until it is restarted");
    const caFile = path.join(dataDir, "tls", "ca.crt");
    expect((fs.statSync(path.join(dataDir, "tls", "ca.key")).mode & 0o777).toString(8)).toBe("600");
    expect((fs.statSync(path.join(dataDir, "tls", "server.pem")).mode & 0o777).toString(8)).toBe("600");
    const ca = fs.readFileSync(caFile);
    const b = await serve(dataDir);

    const h1 = await httpsRequest(`${b.url}/v2/`, { ca });
    expect(h1.status).toBe(200);
    expect(h1.peerSubject).toBe("reg.home.lan");
    expect((await http2Request(`${b.url}/v2/`, { ca })).alpn).toBe("h2");
    // Issue 22: the access log names the client of an HTTP/2 request too.
    const lines = await eventually(async () => {
      const found = b.logs
        .map((l) => JSON.parse(l) as { msg?: string; path?: string; remote?: string })
        .filter((l) => l.msg === "request" && l.path === "/v2/");
      if (found.length < 2) throw new Error("no access log line of the HTTP/2 request yet");
      return found;
    }, 5_000);
    expect(lines.map((l) => l.remote)).toEqual(["127.0.0.1", "127.0.0.1"]);
    // Names in the certificate: DNS names and the address.
    await peerSerial(b.port, ca, "reg.home.lan");

    const served = await httpsRequest(`${b.url}/ca.crt`, { ca });
    expect(served.status).toBe(200);
    expect(served.headers["content-type"]).toBe("application/x-x509-ca-cert");
    expect(served.body).toBe(ca.toString());
    const fingerprint = new crypto.X509Certificate(served.body).fingerprint256;

    const trust = berth(["tls", "trust", "--data-dir", dataDir, "--addr", `0.0.0.0:${b.port}`]);
    expect(trust.status, trust.stderr).toBe(0);
    expect(trust.stdout).toContain(`SHA-256 fingerprint: ${fingerprint}`);
    expect(trust.stdout).toContain(`/etc/docker/certs.d/$r/ca.crt`);
    expect(trust.stdout).toContain(`for r in reg.home.lan:${b.port} localhost:${b.port} 127.0.0.1:${b.port}`);
    expect(trust.stdout).toContain("/etc/containers/certs.d/$r");
    expect(trust.stdout).toContain("hosts.toml");
    expect(trust.stdout).toMatch(/update-ca-certificates|update-ca-trust/);
    expect(trust.stdout).toContain(`curl -fsSk https://reg.home.lan:${b.port}/ca.crt`);
    const check = spawnSync(process.execPath, [CLI, "config", "check"], {
      encoding: "utf8",
      cwd: dataDir,
      env: { ...process.env, REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dataDir },
    });
    expect(check.stdout).toContain(`# private CA: ${caFile} (SHA-256 ${fingerprint})`);
    expect(check.stdout).toMatch(
      /server certificate for reg\.home\.lan, localhost, 127\.0\.0\.1 valid until/,
    );
  });

  it("renews the server certificate before it expires, in every worker, without a restart", async () => {
    const dataDir = tempDir("berth-privca-renew-");
    cleanups.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
    // 30 s certificates: renewal is due when a third of the lifetime is left.
    expect(
      berth([
        "tls",
        "init",
        "--data-dir",
        dataDir,
        "--host",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--validity",
        "30s",
      ]).status,
    ).toBe(0);
    const ca = fs.readFileSync(path.join(dataDir, "tls", "ca.crt"));
    const b = await serve(dataDir, 2);
    const pid = b.process.pid;
    const first = await peerSerial(b.port, ca);
    const renewed = await eventually(async () => {
      const serials = new Set<string>();
      // Several connections, so that both workers answer.
      for (let i = 0; i < 6; i++) serials.add(await peerSerial(b.port, ca));
      if (serials.has(first) || serials.size !== 1)
        throw new Error(`not renewed everywhere yet: ${[...serials]}`);
      return [...serials][0]!;
    }, 45_000);
    expect(renewed).not.toBe(first);
    // Once, not in a loop: the next renewal is due 20 s after this one.
    await new Promise((r) => setTimeout(r, 4_000));
    expect(b.process.pid).toBe(pid);
    expect(b.logs.filter((l) => l.includes("private CA: server certificate renewed"))).toHaveLength(1);
    expect((await httpsRequest(`${b.url}/v2/`, { ca })).status).toBe(200);
  }, 90_000);

  it("a second init keeps the CA (clients keep trusting it) unless --new-ca", () => {
    const dataDir = tempDir("berth-privca-reinit-");
    cleanups.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
    const caFile = path.join(dataDir, "tls", "ca.crt");
    expect(berth(["tls", "init", "--data-dir", dataDir, "--host", "a.lan"]).status).toBe(0);
    const ca = fs.readFileSync(caFile, "utf8");
    const again = berth(["tls", "init", "--data-dir", dataDir, "--host", "b.lan", "--ip", "10.0.0.5"]);
    expect(again.stdout).toMatch(/kept the existing CA/);
    expect(fs.readFileSync(caFile, "utf8")).toBe(ca);
    const server = fs.readFileSync(path.join(dataDir, "tls", "server.pem"), "utf8");
    const leaf = new crypto.X509Certificate(server.slice(server.indexOf("-----BEGIN CERTIFICATE-----")));
    expect(leaf.subjectAltName).toBe("DNS:b.lan, IP Address:10.0.0.5");
    expect(leaf.checkIssued(new crypto.X509Certificate(ca))).toBe(true);
    expect(berth(["tls", "init", "--data-dir", dataDir, "--host", "b.lan", "--new-ca"]).stdout).toMatch(
      /created a CA/,
    );
    expect(fs.readFileSync(caFile, "utf8")).not.toBe(ca);
    // Bad input is refused and changes nothing.
    const bad = berth(["tls", "init", "--data-dir", dataDir, "--ip", "not-an-ip"]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain("--ip not-an-ip");
    expect(berth(["tls", "trust", "--data-dir", tempDir("berth-privca-none-")]).stderr).toMatch(
      /berth tls init/,
    );
  });
});
