import { describe, expect, test } from "vitest";
import { loadConfig } from "../../src/config/load.js";
import { configSchema } from "../../src/config/schema.js";

const HOUR = 3_600_000;

describe("gc and retention configuration", () => {
  test("defaults", () => {
    const config = configSchema.parse({});
    expect(config.gc).toEqual({
      enabled: true,
      interval: HOUR,
      graceperiod: HOUR,
      batchsize: 100,
      pause: 10,
      untagged: { enabled: false, olderthan: 24 * HOUR },
    });
    expect(config.retention).toEqual({ enabled: true, interval: HOUR, dryrun: false, policies: [] });
  });

  test("durations, one pattern or a list, and anchored tag expressions", () => {
    const config = configSchema.parse({
      gc: { interval: "10m", graceperiod: "90s", untagged: { enabled: true, olderthan: "7d" } },
      retention: {
        policies: [
          { repositories: "team-a/*", keeplast: 5, keeptags: ["v\\d+\\.\\d+\\.\\d+"], olderthan: "30d" },
          { repositories: ["*"], keeppulledwithin: "14d" },
        ],
      },
    });
    expect(config.gc.interval).toBe(600_000);
    expect(config.gc.graceperiod).toBe(90_000);
    expect(config.gc.untagged.olderthan).toBe(7 * 24 * HOUR);
    expect(config.retention.policies[0]).toMatchObject({
      repositories: ["team-a/*"],
      keeplast: 5,
      olderthan: 30 * 24 * HOUR,
    });
    expect(config.retention.policies[1]).toMatchObject({
      repositories: ["*"],
      keeptags: [],
      keeppulledwithin: 14 * 24 * HOUR,
    });
  });

  test("refuses a policy with no rule, a bad expression, a bad pattern or a bad duration", () => {
    const bad = (retention: unknown) => configSchema.safeParse({ retention }).success;
    expect(bad({ policies: [{ repositories: "x/*" }] })).toBe(false);
    expect(bad({ policies: [{ repositories: "x/*", keeptags: ["(unclosed"] }] })).toBe(false);
    expect(bad({ policies: [{ repositories: "X Y", keeplast: 1 }] })).toBe(false);
    expect(bad({ policies: [{ repositories: "x", olderthan: "soon" }] })).toBe(false);
    expect(bad({ policies: [{ repositories: "x", keeplast: -1 }] })).toBe(false);
    expect(bad({ policies: [{ repositories: "x", keeplast: 0 }] })).toBe(true);
    expect(configSchema.safeParse({ gc: { batchsize: 0 } }).success).toBe(false);
  });

  test("through the loader: YAML file and REGISTRY_* variables", async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import("node:fs");
    const os = await import("node:os");
    const path = await import("node:path");
    const dir = mkdtempSync(path.join(os.tmpdir(), "berth-gc-config-"));
    try {
      const file = path.join(dir, "config.yml");
      writeFileSync(
        file,
        [
          "gc:",
          "  graceperiod: 2h",
          "retention:",
          "  policies:",
          '    - repositories: ["team-a/*"]',
          "      keeplast: 3",
          "",
        ].join("\n"),
      );
      const { config, sources } = loadConfig({
        file,
        defaultFiles: [],
        env: {
          REGISTRY_GC_INTERVAL: "15m",
          REGISTRY_GC_UNTAGGED_ENABLED: "true",
          REGISTRY_GC_BATCHSIZE: "50",
        },
      });
      expect(config.gc.graceperiod).toBe(2 * HOUR);
      expect(config.gc.interval).toBe(15 * 60_000);
      expect(config.gc.untagged.enabled).toBe(true);
      expect(config.gc.batchsize).toBe(50);
      expect(config.retention.policies[0]?.keeplast).toBe(3);
      expect(sources["gc.interval"]).toEqual({ kind: "env", name: "REGISTRY_GC_INTERVAL" });
      expect(() => loadConfig({ file, defaultFiles: [], env: { REGISTRY_GC_GRACEPERIOD: "later" } })).toThrow(
        /gc\.graceperiod/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
