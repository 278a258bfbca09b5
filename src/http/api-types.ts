/**
 * Shapes of Berth's JSON API (/api/v1) that the server and the web UI share. No imports: the UI, a
 * separate browser build, reads this file too.
 */

/** The parts of an image configuration the UI shows. */
export interface ImageConfigSummary {
  created: string | null;
  author: string | null;
  os: string | null;
  architecture: string | null;
  variant: string | null;
  entrypoint: string[] | null;
  cmd: string[] | null;
  env: string[];
  workingDir: string | null;
  exposedPorts: string[];
  user: string | null;
  labels: Record<string, string>;
  volumes: string[];
  stopSignal: string | null;
}
