// The metrics, in the order they run and appear in the table. A metric module exports
// { id, title, run(ctx) → Promise<row[]> } (rows from lib/report.mjs makeRow). To add one, write
// bench/metrics/<name>.mjs and list it here.
import adopt from "./adopt.mjs";
import blobHead from "./blob-head.mjs";
import blobHeadAuth from "./blob-head-auth.mjs";
import catalog from "./catalog.mjs";
import events from "./events.mjs";
import gc from "./gc.mjs";
import idle from "./idle.mjs";
import imageSize from "./image-size.mjs";
import manifestGet from "./manifest-get.mjs";
import pgBlobHead from "./pg-blob-head.mjs";
import pgCatalog from "./pg-catalog.mjs";
import pgGc from "./pg-gc.mjs";
import pgManifestGet from "./pg-manifest-get.mjs";
import pgSkopeo from "./pg-skopeo.mjs";
import proxy from "./proxy.mjs";
import pull from "./pull.mjs";
import pushChunked from "./push-chunked.mjs";
import pushMonolithic from "./push-monolithic.mjs";
import rss from "./rss.mjs";
import s3Adopt from "./s3-adopt.mjs";
import s3Pull from "./s3-pull.mjs";
import s3Push from "./s3-push.mjs";
import s3Replicas from "./s3-replicas.mjs";
import s3Skopeo from "./s3-skopeo.mjs";
import skopeo from "./skopeo.mjs";
import startup from "./startup.mjs";

export const METRICS = [
  pushMonolithic,
  pushChunked,
  pull,
  manifestGet,
  blobHead,
  blobHeadAuth,
  skopeo,
  catalog,
  rss,
  gc,
  events,
  proxy,
  startup,
  idle,
  adopt,
  pgManifestGet,
  pgBlobHead,
  pgSkopeo,
  pgCatalog,
  pgGc,
  s3Push,
  s3Pull,
  s3Skopeo,
  s3Replicas,
  s3Adopt,
  imageSize,
];
