import { parentPort, workerData } from "node:worker_threads";
import { DistributionLayout } from "../storage/distribution-layout.js";
import { RepositoryReader } from "./adopt.js";

/**
 * A worker thread of adoption (src/registry/adopt.ts): reads the repositories it is sent, synchronously, and
 * posts back their rows and problems. Several of them overlap their reads on a cold disk.
 */
const data = workerData as { root: string; maxManifestBytes: number };
const reader = new RepositoryReader(new DistributionLayout(data.root), data.maxManifestBytes);
parentPort?.on("message", async (names: string[]) => {
  const out = [];
  // Every read underneath is synchronous (DistributionLayout): awaiting each costs a microtask.
  for (const name of names) out.push(await reader.read(name));
  parentPort?.postMessage(out);
});
