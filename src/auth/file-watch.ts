import fs from "node:fs";
import path from "node:path";

/** Identity of a file's current contents, as far as stat can tell. */
export function fileSignature(file: string): string {
  try {
    const st = fs.statSync(file);
    return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
  } catch {
    return "missing";
  }
}

export interface WatchOptions {
  /** Stat polling period in ms (the safety net when fs.watch misses an event). */
  pollMs?: number;
  /** Coalescing delay after an fs.watch event, in ms, so that a half-written file is not read. */
  debounceMs?: number;
}

/**
 * Calls `onChange` when any of `files` changes, however it changed: written in place, replaced by
 * rename (as editors and `berth user add` do), or through a replaced symlink (as certbot does).
 * It watches the parent directories (fs.watch follows names, not inodes) and also polls stat, and
 * only reports a change when a file's signature (inode, size, mtime, ctime) really moved.
 * Returns a function that stops watching.
 */
export function watchFiles(files: string[], onChange: () => void, options: WatchOptions = {}): () => void {
  const pollMs = options.pollMs ?? 2_000;
  const debounceMs = options.debounceMs ?? 100;
  const resolved = files.map((f) => path.resolve(f));
  let signatures = resolved.map(fileSignature);
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  const check = () => {
    if (stopped) return;
    const now = resolved.map(fileSignature);
    if (now.some((sig, i) => sig !== signatures[i])) {
      signatures = now;
      try {
        onChange();
      } catch {
        // The callback reports its own errors; watching goes on.
      }
    }
  };
  const schedule = () => {
    if (stopped) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(check, debounceMs);
    timer.unref();
  };

  const watchers: fs.FSWatcher[] = [];
  const names = new Set(resolved.map((f) => path.basename(f)));
  for (const dir of new Set(resolved.map((f) => path.dirname(f)))) {
    try {
      const w = fs.watch(dir, { persistent: false }, (_event, filename) => {
        // Some platforms give no name; then any event in the directory triggers a (cheap) check.
        if (!filename || names.has(filename.toString()) || filename.toString().startsWith("..")) schedule();
      });
      w.on("error", () => {});
      watchers.push(w);
    } catch {
      // Directory missing or not watchable: polling still covers it.
    }
  }
  const poll = setInterval(check, pollMs);
  poll.unref();

  return () => {
    stopped = true;
    clearInterval(poll);
    if (timer) clearTimeout(timer);
    for (const w of watchers) w.close();
  };
}
