import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, type LoadOptions, loadConfig } from "../../src/config/load.js";
import { MASK, maskSecrets } from "../../src/config/provenance.js";
import {
  backoffDelay,
  batchSizeOf,
  endpointSecret,
  formatBody,
  signature,
} from "../../src/registry/event-dispatch.js";
import { accepts, compileFilter, type EndpointConfig, EventRecorder } from "../../src/registry/events.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "berth-events-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function load(options: LoadOptions = {}) {
  return loadConfig({ env: {}, defaultFiles: [], ...options });
}

function file(text: string): string {
  const p = path.join(dir, `config-${Math.random().toString(36).slice(2)}.yml`);
  writeFileSync(p, text);
  return p;
}

function problems(options: LoadOptions): string[] {
  try {
    load(options);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("expected the configuration to be refused");
}

describe("notifications configuration", () => {
  it("takes registry:2's documented example as it is, with registry:2's defaults and no warning", () => {
    const { config, warnings } = load({
      file: file(
        [
          "notifications:",
          "  events:",
          "    includereferences: true",
          "  endpoints:",
          "    - name: alistener",
          "      disabled: false",
          "      url: https://my.listener.com/event",
          "      headers:",
          "        Authorization: [Bearer token]",
          "      timeout: 1s",
          "      threshold: 10",
          "      backoff: 1s",
          "      ignoredmediatypes:",
          "        - application/octet-stream",
          "      ignore:",
          "        mediatypes:",
          "           - application/octet-stream",
          "        actions:",
          "           - pull",
          "    - name: minimal",
          "      url: http://10.0.0.5:8080/hook",
        ].join("\n"),
      ),
    });
    expect(warnings).toEqual([]);
    expect(config.notifications.events.includereferences).toBe(true);
    const [first, minimal] = config.notifications.endpoints;
    expect(first).toMatchObject({
      name: "alistener",
      headers: { Authorization: ["Bearer token"] },
      timeout: 1000,
      ignore: { actions: ["pull"] },
    });
    expect(minimal).toMatchObject({
      timeout: 1000,
      threshold: 10,
      backoff: 1000,
      maxbackoff: 300_000,
      format: "distribution",
      disabled: false,
    });
    expect(config.notifications.events.pull).toBe(true);
    expect(config.notifications.events.keep).toBe(24 * 3_600_000);
  });

  it("takes the example of docs/events.md as it is", () => {
    const doc = readFileSync(path.join(import.meta.dirname, "../../docs/events.md"), "utf8");
    const example = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
    expect(example).toBeDefined();
    const { config, warnings } = load({ file: file(example as string) });
    expect(warnings).toEqual([]);
    expect(config.notifications.endpoints.map((e) => [e.name, e.format])).toEqual([
      ["ci", "distribution"],
      ["audit", "distribution"],
      ["knative", "cloudevents"],
    ]);
  });

  it("reads REGISTRY_NOTIFICATIONS_* variables: the endpoint list as YAML or JSON, and the event switches", () => {
    const yaml = load({
      env: {
        REGISTRY_NOTIFICATIONS_ENDPOINTS:
          "[{name: a, url: 'http://127.0.0.1:9/x', timeout: 250ms, threshold: 3}]",
        REGISTRY_NOTIFICATIONS_EVENTS_INCLUDEREFERENCES: "true",
        REGISTRY_NOTIFICATIONS_EVENTS_PULL: "false",
        REGISTRY_NOTIFICATIONS_EVENTS_KEEP: "2h",
      },
    }).config;
    expect(yaml.notifications.endpoints).toEqual([
      expect.objectContaining({ name: "a", url: "http://127.0.0.1:9/x", timeout: 250, threshold: 3 }),
    ]);
    expect(yaml.notifications.events).toEqual({ includereferences: true, pull: false, keep: 2 * 3_600_000 });
    const json = load({
      env: {
        REGISTRY_NOTIFICATIONS_ENDPOINTS: JSON.stringify([
          {
            name: "b",
            url: "https://hooks.internal/b",
            headers: { "X-Token": ["t"] },
            format: "cloudevents",
          },
        ]),
      },
    }).config;
    expect(json.notifications.endpoints[0]).toMatchObject({ name: "b", format: "cloudevents" });
  });

  it("refuses an endpoint list that could not work", () => {
    expect(
      problems({
        env: {
          REGISTRY_NOTIFICATIONS_ENDPOINTS: "[{name: a, url: 'http://x/1'}, {name: a, url: 'http://x/2'}]",
        },
      }).join("\n"),
    ).toContain("duplicate endpoint name");
    expect(
      problems({ env: { REGISTRY_NOTIFICATIONS_ENDPOINTS: "[{name: a, url: 'ftp://x'}]" } }).join("\n"),
    ).toContain("http:// or https://");
    expect(
      problems({
        env: {
          REGISTRY_NOTIFICATIONS_ENDPOINTS:
            "[{name: a, url: 'http://x', signature: {secret: s, secretfile: /f}}]",
        },
      }).join("\n"),
    ).toContain("exactly one of secret and secretfile");
    expect(
      problems({
        env: { REGISTRY_NOTIFICATIONS_ENDPOINTS: "[{name: a, url: 'http://x', actions: [pish]}]" },
      }),
    ).not.toEqual([]);
  });

  it("never repeats a header value in an error message", () => {
    const text = problems({
      env: {
        REGISTRY_NOTIFICATIONS_ENDPOINTS:
          "[{name: a, url: 'http://x', headers: {X-Api-Key: {v: key-abc-123}}}]",
      },
    }).join("\n");
    expect(text).toContain("headers");
    expect(text).not.toContain("key-abc-123");
  });

  it("masks every header value and the signature secret in what config check shows", () => {
    const masked = maskSecrets({
      notifications: {
        endpoints: [
          {
            name: "a",
            url: "https://user:pw@hooks.example.com/x",
            headers: { "X-Api-Key": ["k1", "k2"], Accept: ["*/*"] },
            signature: { secret: "hmac", header: "Berth-Signature" },
          },
        ],
      },
    }) as { notifications: { endpoints: Record<string, unknown>[] } };
    const e = masked.notifications.endpoints[0]!;
    expect(e.headers).toEqual({ "X-Api-Key": [MASK, MASK], Accept: [MASK] });
    expect(e.signature).toEqual({ secret: MASK, header: "Berth-Signature" });
    expect(e.url).toBe(`https://user:${MASK}@hooks.example.com/x`);
    expect(e.name).toBe("a");
  });
});

function endpoint(extra: Partial<EndpointConfig> = {}): EndpointConfig {
  return load({
    env: { REGISTRY_NOTIFICATIONS_ENDPOINTS: JSON.stringify([{ name: "e", url: "http://h/x", ...extra }]) },
  }).config.notifications.endpoints[0]!;
}

describe("delivery rules", () => {
  it("backs off exponentially from `backoff` up to `maxbackoff`", () => {
    const e = endpoint({ backoff: "1s", maxbackoff: "10s" } as never);
    expect([1, 2, 3, 4, 5, 50].map((n) => backoffDelay(e, n))).toEqual([
      1000, 2000, 4000, 8000, 10_000, 10_000,
    ]);
  });

  it("batches 100 events for Distribution's format and sends CloudEvents one by one unless told", () => {
    expect(batchSizeOf(endpoint())).toBe(100);
    expect(batchSizeOf(endpoint({ format: "cloudevents" }))).toBe(1);
    expect(batchSizeOf(endpoint({ format: "cloudevents", batchsize: 10 }))).toBe(10);
  });

  it("filters by registry:2's ignore lists, then by Berth's actions and repository patterns", () => {
    const f = compileFilter(
      endpoint({
        ignoredmediatypes: ["application/octet-stream"],
        ignore: { actions: ["pull"] },
        repositories: ["prod/*", "base"],
      }),
    );
    expect(accepts(f, { action: "push", repository: "prod/api", mediaType: "x" })).toBe(true);
    expect(
      accepts(f, { action: "push", repository: "prod/api", mediaType: "application/octet-stream" }),
    ).toBe(false);
    expect(accepts(f, { action: "pull", repository: "prod/api" })).toBe(false);
    expect(accepts(f, { action: "delete", repository: "base" })).toBe(true);
    expect(accepts(f, { action: "delete", repository: "base/other" })).toBe(false);
    const only = compileFilter(endpoint({ actions: ["delete"] }));
    expect(accepts(only, { action: "push", repository: "a" })).toBe(false);
    expect(accepts(only, { action: "delete", repository: "a" })).toBe(true);
  });

  it("signs the exact body, reads the secret from a file without its newline, and wraps CloudEvents", () => {
    const secretFile = path.join(dir, "secret");
    writeFileSync(secretFile, "from-file\n");
    const e = endpoint({ signature: { secretfile: secretFile } } as never);
    expect(endpointSecret(e, (f) => readFileSync(f, "utf8"))?.toString()).toBe("from-file");
    // RFC 4231 test case 2.
    expect(signature(Buffer.from("Jefe"), "what do ya want for nothing?")).toBe(
      "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    );
    const recorder = new EventRecorder(null, [], {
      includeReferences: false,
      pull: true,
      listenPort: "5000",
    });
    const event = recorder.build(
      "push",
      { repository: "r", digest: `sha256:${"a".repeat(64)}`, tag: "t" },
      undefined,
    );
    const distribution = formatBody("distribution", [event]);
    expect(distribution.contentType).toBe("application/vnd.docker.distribution.events.v1+json");
    expect(JSON.parse(distribution.body)).toEqual({ events: [event] });
    const one = formatBody("cloudevents", [event]);
    expect(one.contentType).toBe("application/cloudevents+json");
    expect(JSON.parse(one.body)).toMatchObject({
      specversion: "1.0",
      id: event.id,
      type: "io.berth.registry.push",
      subject: `r:t@sha256:${"a".repeat(64)}`,
      data: event,
    });
    const many = formatBody("cloudevents", [event, event]);
    expect(many.contentType).toBe("application/cloudevents-batch+json");
    expect(JSON.parse(many.body)).toHaveLength(2);
  });
});
