/**
 * Notifications with a real client: skopeo pushes a five-layer image and pulls it back, and a
 * receiver written against registry:2's documented format gets a push event per blob and for the
 * tagged manifest, then pull events for what skopeo fetched, with skopeo's user agent.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { type Berth, startBerth } from "../helpers/server.js";
import { Receiver } from "../integration/events-receiver.js";
import { ContainerTools } from "./clients/containers.js";
import { blobsOf, type Image, MT, testImage, writeOciLayout } from "./clients/images.js";

let berth: Berth;
let hook: Receiver;
let tools: ContainerTools;
let image: Image;
let src: string;

beforeAll(async () => {
  hook = await new Receiver().start();
  tools = ContainerTools.create("berth-e2e-events-");
  image = testImage("events-skopeo");
  src = tools.subdir("src");
  writeOciLayout(src, { five: image });
  const file = path.join(tools.dir, "config.yml");
  writeFileSync(
    file,
    JSON.stringify({
      notifications: {
        events: { includereferences: true },
        endpoints: [{ name: "ci", url: hook.url, timeout: "2s", backoff: "100ms" }],
      },
    }),
  );
  berth = await startBerth({ args: ["--config", file], workers: 2 });
}, 120_000);

afterAll(async () => {
  await berth?.cleanup();
  await hook?.stop();
  await tools?.cleanup();
});

test("skopeo copy in and out produces registry:2's push and pull events", async () => {
  const NO_TLS = ["--src-tls-verify=false", "--dest-tls-verify=false"];
  await tools.skopeo(["copy", ...NO_TLS, `oci:${src}:five`, `docker://${berth.host}/e2e/app:v1`]);
  const blobs = blobsOf(image).filter((b) => b.digest !== image.manifest.digest);
  await hook.waitFor(() => hook.unique().filter((e) => e.action === "push").length >= blobs.length + 1);
  const pushes = hook.unique().filter((e) => e.action === "push");
  expect(pushes).toHaveLength(blobs.length + 1);
  expect(new Set(pushes.slice(0, -1).map((e) => e.target.digest))).toEqual(
    new Set(blobs.map((b) => b.digest)),
  );
  const manifest = pushes[pushes.length - 1]!;
  expect(manifest.target).toMatchObject({
    repository: "e2e/app",
    tag: "v1",
    digest: image.manifest.digest,
    mediaType: MT.ociManifest,
    size: image.manifest.size,
  });
  expect(manifest.target.references?.map((r) => r.digest)).toEqual([
    image.config.digest,
    ...image.layers.map((l) => l.digest),
  ]);
  expect(manifest.request.useragent).toMatch(/skopeo|containers/i);

  const dest = tools.subdir("dest");
  await tools.skopeo(["copy", ...NO_TLS, `docker://${berth.host}/e2e/app:v1`, `oci:${dest}:five`]);
  await hook.waitFor(() => hook.unique().some((e) => e.action === "pull" && e.target.tag === "v1"));
  await hook.waitFor(
    () => hook.unique().filter((e) => e.action === "pull" && !e.target.tag).length >= blobs.length,
  );
  const pulledBlobs = hook
    .unique()
    .filter((e) => e.action === "pull" && e.target.mediaType === "application/octet-stream");
  expect(new Set(pulledBlobs.map((e) => e.target.digest))).toEqual(new Set(blobs.map((b) => b.digest)));
});
