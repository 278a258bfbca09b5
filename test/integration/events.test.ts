import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { blobOf, OCI_MANIFEST, RegistryClient, randomBlob, sha256 } from "../helpers/registry.js";
import { type Berth, CLI, databaseEnv, type StartOptions, startBerth, tempDir } from "../helpers/server.js";
import { basic, writeAuthConfig } from "./api-push.js";
import { parseEnvelope, Receiver, type Registry2Event, verifySignature } from "./events-receiver.js";

const started: Berth[] = [];
const receivers: Receiver[] = [];
async function start(options: StartOptions = {}): Promise<Berth> {
  const b = await startBerth(options);
  started.push(b);
  return b;
}
async function receiver(): Promise<Receiver> {
  const r = await new Receiver().start();
  receivers.push(r);
  return r;
}
afterEach(async () => {
  for (const b of started.splice(0)) await b.cleanup().catch(() => {});
  for (const r of receivers.splice(0)) await r.stop().catch(() => {});
});

/** A config file holding `notifications` (JSON is YAML). */
function config(notifications: object): string {
  const file = path.join(tempDir("berth-events-cfg-"), "config.yml");
  writeFileSync(file, JSON.stringify({ notifications }));
  return file;
}

const FAST = { timeout: "500ms", backoff: "50ms", maxbackoff: "200ms", threshold: 3 };

/** Pushes one small image (a config and a layer) and a manifest tagged `tag`. */
async function pushSmall(client: RegistryClient, name: string, tag: string) {
  return client.pushImage(name, tag, { layers: [randomBlob(64)] });
}

describe("notifications in registry:2's format", () => {
  it("sends push, pull, mount and delete events with every documented field, signed", async () => {
    const hook = await receiver();
    const file = config({
      events: { includereferences: true },
      endpoints: [
        {
          name: "ci",
          url: hook.url,
          headers: { Authorization: ["Bearer s3cr3t-token"] },
          signature: { secret: "hmac-key" },
          ...FAST,
        },
      ],
    });
    const berth = await start({ args: ["--config", file], env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
    const client = new RegistryClient(berth.url, { "user-agent": "events-test/1.0" });
    const image = await pushSmall(client, "team/app", "v1");
    await hook.waitFor(() => hook.events.length >= 3);
    const [configPush, layerPush, manifestPush] = hook.events;
    expect(configPush?.action).toBe("push");
    expect(configPush?.target).toMatchObject({
      mediaType: "application/octet-stream",
      digest: image.config.digest,
      size: image.config.size,
      length: image.config.size,
      repository: "team/app",
      url: `${berth.url}/v2/team/app/blobs/${image.config.digest}`,
    });
    expect(layerPush?.target.digest).toBe(image.layers[0]?.digest);
    expect(manifestPush).toMatchObject({
      action: "push",
      target: {
        mediaType: OCI_MANIFEST,
        digest: image.digest,
        size: image.manifest.length,
        length: image.manifest.length,
        repository: "team/app",
        tag: "v1",
        url: `${berth.url}/v2/team/app/manifests/${image.digest}`,
      },
      request: { method: "PUT", useragent: "events-test/1.0", host: berth.host },
    });
    expect(manifestPush?.target.references?.map((r) => r.digest)).toEqual([
      image.config.digest,
      image.layers[0]?.digest,
    ]);
    expect(manifestPush?.request.addr).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(manifestPush?.source.addr).toMatch(/:\d+$/);
    expect(manifestPush?.source.instanceID).toMatch(/^[0-9a-f-]{36}$/);
    // Headers from the configuration, the envelope's media type, and the signature over the body.
    const request = hook.requests[0]!;
    expect(request.headers.authorization).toBe("Bearer s3cr3t-token");
    expect(request.headers["content-type"]).toBe("application/vnd.docker.distribution.events.v1+json");
    for (const r of hook.requests)
      expect(verifySignature("hmac-key", r.body, r.headers["berth-signature"] as string)).toBe(true);
    expect(verifySignature("other-key", request.body, request.headers["berth-signature"] as string)).toBe(
      false,
    );

    // pull (by tag), mount, delete
    expect((await client.fetch(`/v2/team/app/manifests/v1`)).status).toBe(200);
    const mount = await client.fetch(`/v2/other/blobs/uploads/?mount=${image.config.digest}&from=team/app`, {
      method: "POST",
    });
    expect(mount.status).toBe(201);
    expect((await client.fetch(`/v2/team/app/manifests/${image.digest}`, { method: "DELETE" })).status).toBe(
      202,
    );
    await hook.waitFor(() => hook.events.length >= 6);
    const rest = hook.events.slice(3);
    const pull = rest.find((e) => e.action === "pull");
    expect(pull?.target).toMatchObject({ repository: "team/app", digest: image.digest, tag: "v1" });
    expect(pull?.request.method).toBe("GET");
    const mounted = rest.find((e) => e.action === "mount");
    expect(mounted?.target).toMatchObject({
      repository: "other",
      fromRepository: "team/app",
      digest: image.config.digest,
    });
    const deleted = rest.find((e) => e.action === "delete");
    expect(deleted?.target).toMatchObject({ repository: "team/app", digest: image.digest });
    // Commit order: the mount and the delete were committed in that order.
    expect(rest.filter((e) => e.action !== "pull").map((e) => e.action)).toEqual(["mount", "delete"]);
    // The secret header never reaches the log.
    expect(berth.logs.join("\n")).not.toContain("s3cr3t-token");
    expect(berth.logs.join("\n")).not.toContain("hmac-key");
  });

  it("retries a receiver that fails or hangs, marks it failing, and delivers everything once it is back", async () => {
    const hook = await receiver();
    hook.mode = "fail";
    const file = config({ endpoints: [{ name: "flaky", url: hook.url, ...FAST }] });
    const berth = await start({ args: ["--config", file] });
    const client = new RegistryClient(berth.url);
    for (let i = 0; i < 5; i++) await pushSmall(client, "flaky/app", `t${i}`);
    await hook.waitFor(() => hook.requests.length >= 4);
    // Now it hangs past the timeout.
    hook.mode = "hang";
    const before = hook.requests.length;
    await hook.waitFor(() => hook.requests.length >= before + 2);
    // And it goes away entirely.
    await hook.stop();
    const status = (await (await client.fetch("/api/v1/events")).json()) as {
      endpoints: { name: string; failing: boolean; backlog: number; lastError: string | null }[];
    };
    expect(status.endpoints[0]).toMatchObject({ name: "flaky", failing: true });
    expect(status.endpoints[0]?.backlog).toBe(15);
    expect(berth.logs.some((l) => l.includes("endpoint is failing"))).toBe(true);
    const metrics = await (await client.fetch("/metrics")).text();
    expect(metrics).toMatch(/berth_events_endpoint_failing\{endpoint="flaky"\} 1/);
    expect(metrics).toMatch(/berth_events_backlog\{endpoint="flaky"\} 15/);
    expect(metrics).toMatch(/berth_events_delivery_failures_total\{endpoint="flaky"\} [1-9]/);
    for (let i = 5; i < 8; i++) await pushSmall(client, "flaky/app", `t${i}`);
    hook.mode = "ok";
    await hook.start();
    await hook.waitFor(() => hook.unique().length >= 24);
    const manifests = hook.unique().filter((e) => e.target.tag);
    expect(manifests.map((e) => e.target.tag)).toEqual(["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"]);
    await hook.waitFor(() => berth.logs.some((l) => l.includes("endpoint recovered")));
  });

  it("never slows a push with a receiver that hangs, and records no pull events when told not to", async () => {
    const hook = await receiver();
    hook.mode = "hang";
    const file = config({
      events: { pull: false },
      endpoints: [{ name: "slow", url: hook.url, timeout: "5s", backoff: "50ms", maxbackoff: "200ms" }],
    });
    const berth = await start({ args: ["--config", file] });
    const client = new RegistryClient(berth.url);
    await pushSmall(client, "slow/app", "warm");
    await hook.waitFor(() => hook.requests.length >= 1);
    const times: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      await pushSmall(client, "slow/app", `s${i}`);
      times.push(performance.now() - t0);
    }
    // Each push (3 requests) is done long before the receiver's 5 s timeout would end.
    expect(Math.max(...times)).toBeLessThan(2500);
    expect((await client.fetch("/v2/slow/app/manifests/s0")).status).toBe(200);
    hook.mode = "ok";
    await hook.waitFor(() => hook.unique().length >= 33, 30_000);
    await new Promise((r) => setTimeout(r, 1500));
    expect(hook.unique()).toHaveLength(33);
    expect(hook.unique().some((e) => e.action === "pull")).toBe(false);
  });

  it("loses nothing to kill -9 with a backlog: every event arrives after a restart, in order, each id once", async () => {
    const hook = await receiver();
    await hook.stop();
    const file = config({ endpoints: [{ name: "audit", url: hook.url, batchsize: 4, ...FAST }] });
    const dataDir = tempDir();
    let berth = await startBerth({ args: ["--config", file], dataDir, workers: 2 });
    const client = new RegistryClient(berth.url);
    const tags: string[] = [];
    for (let i = 0; i < 20; i++) {
      await pushSmall(client, "crash/app", `c${i}`);
      tags.push(`c${i}`);
      if (i === 10) {
        // Receiver up for a moment: part of the backlog goes out, then it goes away again.
        hook.mode = "ok";
        await hook.start();
      }
      if (i === 13) await hook.stop();
    }
    await berth.kill();
    // Back up, but slow: kill -9 again while the backlog is being delivered, then restart once more.
    hook.delayMs = 40;
    await hook.start();
    berth = await startBerth({ args: ["--config", file], dataDir, workers: 2 });
    await hook.waitFor(() => hook.events.length >= 20, 60_000);
    await berth.kill();
    expect(hook.unique().length).toBeLessThan(60);
    hook.delayMs = 0;
    berth = await start({ args: ["--config", file], dataDir, workers: 2 });
    await hook.waitFor(() => hook.unique().length >= 60, 60_000);
    const unique = hook.unique();
    expect(unique).toHaveLength(60);
    expect(unique.filter((e) => e.target.tag).map((e) => e.target.tag)).toEqual(tags);
    // Each manifest push comes after the pushes of its own blobs.
    for (let i = 0; i < unique.length; i += 3) {
      expect(unique.slice(i, i + 3).map((e) => e.target.mediaType)).toEqual([
        "application/octet-stream",
        "application/octet-stream",
        OCI_MANIFEST,
      ]);
    }
    await berth.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("turns 1,000 pushes from 8 clients into 1,000 push events, each delivered by one of two processes", async () => {
    const hook = await receiver();
    const file = config({
      events: { pull: false },
      // A timeout that a loaded machine cannot reach: a batch answered after it would be sent again
      // (at least once, as registry:2), and this test counts exact deliveries between two processes.
      endpoints: [
        {
          name: "bulk",
          url: hook.url,
          ignoredmediatypes: ["application/octet-stream"],
          ...FAST,
          timeout: "10s",
        },
      ],
    });
    const berth = await start({ args: ["--config", file], workers: 2 });
    const client = new RegistryClient(berth.url);
    const layer = blobOf("shared layer");
    const cfg = blobOf(JSON.stringify({ architecture: "amd64", os: "linux" }));
    await client.pushBlob("bulk/app", layer);
    await client.pushBlob("bulk/app", cfg);
    const manifest = (i: number) => ({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: cfg.digest, size: cfg.size },
      layers: [
        { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layer.digest, size: layer.size },
      ],
      annotations: { n: String(i) },
    });
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (;;) {
          const i = next++;
          if (i >= 1000) return;
          const res = await client.putManifest("bulk/app", `v${i}`, manifest(i));
          expect(res.status).toBe(201);
        }
      }),
    );
    await hook.waitFor(() => hook.events.length >= 1000, 60_000);
    await new Promise((r) => setTimeout(r, 1500));
    expect(hook.events).toHaveLength(1000);
    expect(new Set(hook.events.map((e) => e.id)).size).toBe(1000);
    expect(new Set(hook.events.map((e) => e.target.tag)).size).toBe(1000);
    expect(hook.events.every((e) => e.action === "push" && e.target.mediaType === OCI_MANIFEST)).toBe(true);
  });

  it("filters by repository and action, and sends CloudEvents when asked", async () => {
    const all = await receiver();
    const cloud = await receiver();
    const file = config({
      endpoints: [
        { name: "deletes-only", url: all.url, actions: ["delete"], ...FAST },
        {
          name: "cloud",
          url: cloud.url,
          format: "cloudevents",
          repositories: ["prod/*"],
          ignore: { actions: ["pull"] },
          ...FAST,
        },
      ],
    });
    const berth = await start({ args: ["--config", file], env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
    const client = new RegistryClient(berth.url);
    await pushSmall(client, "dev/app", "a");
    const image = await pushSmall(client, "prod/app", "b");
    await client.fetch(`/v2/prod/app/manifests/b`);
    await client.fetch(`/v2/dev/app/manifests/a`, { method: "DELETE" });
    await cloud.waitFor(() => cloud.requests.length >= 3);
    await all.waitFor(() => all.events.length >= 1);
    await new Promise((r) => setTimeout(r, 1500));
    expect(all.events.map((e) => [e.action, e.target.repository, e.target.tag])).toEqual([
      ["delete", "dev/app", "a"],
    ]);
    expect(cloud.requests).toHaveLength(3);
    const ce = cloud.requests.map((r) => {
      expect(r.headers["content-type"]).toBe("application/cloudevents+json");
      return JSON.parse(r.body) as {
        specversion: string;
        id: string;
        type: string;
        subject: string;
        data: Registry2Event;
      };
    });
    expect(ce.every((e) => e.specversion === "1.0" && e.type === "io.berth.registry.push")).toBe(true);
    expect(ce[2]?.subject).toBe(`prod/app:b@${image.digest}`);
    expect(ce[2]?.data.target.repository).toBe("prod/app");
    expect(ce.map((e) => e.id)).toEqual(ce.map((e) => e.data.id));
  });
});

describe("receivers on any port", () => {
  it("delivers to a receiver on a port that browsers' fetch refuses (6000, 6666, 10080, ...)", async () => {
    let hook: Receiver | null = null;
    for (const port of [6666, 6667, 6668, 6000, 10080, 6665, 6669]) {
      try {
        hook = await new Receiver().start(port);
        break;
      } catch {
        // taken: try the next
      }
    }
    if (!hook) throw new Error("no bad port was free to listen on");
    receivers.push(hook);
    const file = config({ endpoints: [{ name: "irc", url: hook.url, ...FAST }] });
    const berth = await start({ args: ["--config", file] });
    await pushSmall(new RegistryClient(berth.url), "ports/app", "v1");
    await hook.waitFor(() => hook.events.length >= 3);
    expect(hook.events[2]?.target.tag).toBe("v1");
  });
});

describe("berth events and /api/v1/events", () => {
  it("shows endpoints to admins only, and redelivers kept events with their original ids", async () => {
    const hook = await receiver();
    const dir = tempDir("berth-events-auth-");
    const file = writeAuthConfig(dir, { admin: "adminpw", editor: "editorpw" }, [
      "notifications:",
      "  endpoints:",
      "    - name: ops",
      `      url: ${hook.url.replace("http://", "http://user:hunter2@")}`,
      "      timeout: 500ms",
      "      backoff: 50ms",
    ]);
    const berth = await start({ args: ["--config", file] });
    const editor = new RegistryClient(berth.url, { authorization: basic("editor", "editorpw") });
    const admin = new RegistryClient(berth.url, { authorization: basic("admin", "adminpw") });
    await pushSmall(editor, "team/app", "v1");
    await hook.waitFor(() => hook.events.length >= 3);
    expect(hook.events[2]?.actor).toEqual({ name: "editor" });
    expect(hook.requests[0]?.headers.authorization).toBe(
      `Basic ${Buffer.from("user:hunter2").toString("base64")}`,
    );

    expect((await new RegistryClient(berth.url).fetch("/api/v1/events")).status).toBe(401);
    expect((await editor.fetch("/api/v1/events")).status).toBe(403);
    const res = await admin.fetch("/api/v1/events");
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).not.toContain("hunter2");
    const status = JSON.parse(text) as {
      endpoints: { name: string; backlog: number; delivered: number; failing: boolean }[];
      deliveries: { ok: boolean; events: number }[];
    };
    expect(status.endpoints).toEqual([
      expect.objectContaining({ name: "ops", backlog: 0, delivered: 3, failing: false }),
    ]);
    expect(status.deliveries.reduce((n, d) => n + d.events, 0)).toBe(3);

    // Redeliver from the manifest's event (by its stable id): that event comes again, same id.
    const manifestEvent = hook.events[2]!;
    expect(
      (
        await editor.fetch("/api/v1/events/redeliver", {
          method: "POST",
          body: JSON.stringify({ endpoint: "ops", event: manifestEvent.id }),
          headers: { "content-type": "application/json" },
        })
      ).status,
    ).toBe(403);
    const redo = await admin.fetch("/api/v1/events/redeliver", {
      method: "POST",
      body: JSON.stringify({ endpoint: "ops", event: manifestEvent.id }),
      headers: { "content-type": "application/json" },
    });
    expect(redo.status).toBe(200);
    expect(await redo.json()).toMatchObject({ endpoint: "ops", backlog: 1 });
    await hook.waitFor(() => hook.events.length >= 4);
    expect(hook.events[3]?.id).toBe(manifestEvent.id);

    // The CLI: the same view, and redelivery of everything.
    const dbEnv = await databaseEnv(berth.dataDir);
    const cli = (...args: string[]) =>
      execFileSync(
        process.execPath,
        [CLI, "events", ...args, "--config", file, "--data-dir", berth.dataDir],
        { encoding: "utf8", env: { ...process.env, ...dbEnv } },
      );
    const shown = cli();
    expect(shown).toContain("ops");
    expect(shown).toContain("delivered 4");
    expect(shown).not.toContain("hunter2");
    expect(cli("redeliver", "ops", "--all")).toContain("3 events waiting");
    await hook.waitFor(() => hook.events.length >= 7);
    expect(hook.events.slice(4).map((e) => e.id)).toEqual(hook.events.slice(0, 3).map((e) => e.id));
    expect(() => cli("redeliver", "nope", "--all")).toThrow();
  });
});

describe("the receiver helper", () => {
  it("refuses envelopes registry:2 receivers could not parse", () => {
    expect(() => parseEnvelope("{}")).toThrow();
    expect(() =>
      parseEnvelope(JSON.stringify({ events: [{ id: "x", timestamp: "nope", action: "push", target: {} }] })),
    ).toThrow();
    expect(sha256("")).toMatch(/^sha256:/);
  });
});
