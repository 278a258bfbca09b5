import fs from "node:fs/promises";
import path from "node:path";

/** Where registry:2 keeps its repositories' link files under a root directory. */
export function repositoriesDir(root: string): string {
  return path.join(root, "docker", "registry", "v2", "repositories");
}

/** One stat: does `root` hold registry:2 repositories? (Cheap enough for every start-up.) */
export async function hasDistributionRepositories(root: string): Promise<boolean> {
  try {
    return (await fs.stat(repositoriesDir(root))).isDirectory();
  } catch {
    return false;
  }
}
