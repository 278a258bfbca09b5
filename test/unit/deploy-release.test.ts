// Issue 22: what cannot run here, checked as files. The release workflow (.github/workflows/release.yml)
// parses and does what docs/deployment.md says (a version tag publishes the image for amd64 and arm64
// with SBOM and provenance, and the npm package); the package declares the Node versions the docs name;
// the Dockerfile's default base is the newest Node LTS.
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import YAML from "yaml";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const read = (p: string) => readFileSync(path.join(ROOT, p), "utf8");

interface Step {
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
}
interface Workflow {
  on: { push: { tags: string[] } };
  jobs: Record<string, { "runs-on": string; permissions?: Record<string, string>; steps: Step[] }>;
}

describe(".github/workflows/release.yml", () => {
  const workflow = YAML.parse(read(".github/workflows/release.yml"), { strict: true }) as Workflow;
  const steps = (job: string) => workflow.jobs[job]?.steps ?? [];

  it("runs on version tags", () => {
    expect(workflow.on.push.tags).toEqual(["v*.*.*"]);
  });

  it("builds deploy/Dockerfile for linux/amd64 and linux/arm64 to ghcr.io with SBOM and provenance", () => {
    const build = steps("image").find((s) => s.uses?.startsWith("docker/build-push-action@"));
    expect(build?.with).toMatchObject({
      file: "deploy/Dockerfile",
      platforms: "linux/amd64,linux/arm64",
      push: true,
      sbom: true,
      provenance: "mode=max",
    });
    const meta = steps("image").find((s) => s.uses?.startsWith("docker/metadata-action@"));
    expect(meta?.with?.images).toBe(["ghcr.io/", "{{ github.repository_owner }}/berth"].join("$"));
    expect(workflow.jobs.image?.permissions).toMatchObject({ packages: "write", "id-token": "write" });
    for (const s of steps("image")) if (s.uses) expect(s.uses).toMatch(/^[\w-]+\/[\w-]+@v\d+$/);
  });

  it("publishes the npm package after a build", () => {
    const runs = steps("npm").flatMap((s) => (s.run ? [s.run] : []));
    expect(runs).toEqual(["npm ci", "npm run build", "npm publish --provenance --access public"]);
  });
});

describe("package.json and deploy/Dockerfile", () => {
  const pkg = JSON.parse(read("package.json")) as {
    name: string;
    bin: Record<string, string>;
    engines: { node: string };
    files: string[];
  };

  it("is berth-registry, with the berth command, for Node 20 and later", () => {
    expect(pkg.name).toBe("berth-registry");
    expect(pkg.bin).toEqual({ berth: "dist/cli/berth.cjs" });
    expect(pkg.engines.node).toBe(">=20");
    for (const addon of ["sendfile", "sha256", "memory"])
      expect(pkg.files.some((f) => f.startsWith(`native/${addon}/`))).toBe(true);
  });

  it("builds on the newest Node LTS by default", () => {
    expect(read("deploy/Dockerfile")).toMatch(/^ARG NODE_IMAGE=node:24-bookworm-slim$/m);
    expect(read("docs/deployment.md")).toContain("Node.js 24");
  });
});
