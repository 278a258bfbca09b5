import { parentPort, workerData } from "node:worker_threads";
import { DistributionLayout } from "../storage/distribution-layout.js";
import { RepositoryReader } from "./adopt.js";

/**
 * A worker thread of adoption (src/registry/adopt.ts): reads the repositories it is sent, synchronously, and
 * posts back their rows and problems. Several of them overlap their reads on a cold disk.
 */
const reader = new RepositoryReader(new DistributionLayout((workerData as { root: string }).root));
parentPort?.on("message", (names: string[]) => {
  parentPort?.postMessage(names.map((name) => reader.read(name)));
});
