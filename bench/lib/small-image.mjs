// The small single-layer image the request-rate metrics (manifest GET, blob HEAD) hit.
import { pushSmallImage, smallImage } from "./registry.mjs";

export const SMALL_REPO = "bench/small";
export const SMALL_TAG = "latest";

export function benchSmallImage() {
  return smallImage("bench-small", 4096);
}

/** Pushes the small image to server once per run (memoised on the context). */
export function ensureSmallImage(ctx, server) {
  return ctx.once(`small-image:${server.baseUrl}`, () =>
    pushSmallImage(server, SMALL_REPO, SMALL_TAG, benchSmallImage()),
  );
}
