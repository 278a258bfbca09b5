/**
 * Turns an image config's `history` into the Dockerfile steps that made the image.
 *
 * Builders record `created_by` differently:
 *  - the classic Docker builder and Buildah: `/bin/sh -c #(nop)  CMD ["sh"]` for metadata-only
 *    steps, `/bin/sh -c apt-get update` for RUN, `|2 A=1 B=2 /bin/sh -c make` for RUN with build args;
 *  - BuildKit: `RUN /bin/sh -c apk add curl # buildkit`, `COPY . . # buildkit`, `WORKDIR /app`,
 *    `EXPOSE map[8080/tcp:{}]`, `CMD ["node" "server.js"]` (Go's %q of a string slice);
 *  - Windows images: `cmd /S /C ...` or `powershell -Command ...`;
 *  - other tools (ko, Jib, Bazel, Nix) write free text, which is kept as a comment.
 */

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface DockerfileStep {
  /** Upper-case Dockerfile instruction ("RUN", "COPY", ...), or "" when the command is not one. */
  instruction: string;
  /** The rest of the line. For instruction "" this is the recorded text, shown as a comment. */
  args: string;
  /** Build arguments a classic RUN step was given (`|2 A=1 B=2 ...`), as "A=1 B=2". */
  buildArgs?: string;
  created?: string;
  comment?: string;
  /** True when the step made no filesystem layer. */
  emptyLayer: boolean;
  /** Index into the manifest's layers for steps that made one, when the counts line up. */
  layer: number | null;
}

const INSTRUCTIONS = new Set([
  "ADD",
  "ARG",
  "CMD",
  "COPY",
  "ENTRYPOINT",
  "ENV",
  "EXPOSE",
  "FROM",
  "HEALTHCHECK",
  "LABEL",
  "MAINTAINER",
  "ONBUILD",
  "RUN",
  "SHELL",
  "STOPSIGNAL",
  "USER",
  "VOLUME",
  "WORKDIR",
]);

const SHELL_PREFIXES = ["/bin/sh -c ", "/bin/bash -c ", "/bin/ash -c ", "sh -c ", "cmd /S /C ", "cmd /s /c "];

/** `|2 A=1 B=2 /bin/sh -c make` → { buildArgs: "A=1 B=2", rest: "/bin/sh -c make" }. */
function stripBuildArgs(text: string): { buildArgs?: string; rest: string } {
  const m = /^\|(\d+)\s+/.exec(text);
  if (!m) return { rest: text };
  let count = Number(m[1]);
  let rest = text.slice(m[0].length);
  const args: string[] = [];
  // Each argument is NAME=value without spaces in the value (that is how the builder writes them).
  while (count > 0) {
    const arg = /^(\S+)\s*/.exec(rest);
    if (!arg) break;
    args.push(arg[1]!);
    rest = rest.slice(arg[0].length);
    count--;
  }
  return { buildArgs: args.length ? args.join(" ") : undefined, rest };
}

/** Go's `%q` of a []string, `["node" "server.js"]`, as Dockerfile JSON: `["node", "server.js"]`. */
export function goSliceToJson(text: string): string {
  const trimmed = text.trim();
  if (!trimmed.startsWith("[") || !trimmed.endsWith("]")) return text;
  const inner = trimmed.slice(1, -1).trim();
  if (inner === "") return "[]";
  if (inner.includes('", "') || !inner.startsWith('"')) return trimmed; // already JSON, or not quoted strings
  const items: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"\s*/gy;
  let consumed = 0;
  for (let m = re.exec(inner); m; m = re.exec(inner)) {
    items.push(`"${m[1]}"`);
    consumed = re.lastIndex;
  }
  if (consumed !== inner.length) return trimmed;
  return `[${items.join(", ")}]`;
}

/** `map[80/tcp:{} 443/tcp:{}]` → `80/tcp 443/tcp`. */
function goPortMap(text: string): string {
  const m = /^map\[(.*)\]$/.exec(text.trim());
  if (!m) return text;
  return m[1]!
    .split(/\s+/)
    .map((entry) => entry.replace(/:\{\}$/, ""))
    .filter(Boolean)
    .join(" ");
}

function tidyArgs(instruction: string, args: string): string {
  const trimmed = args.trim();
  switch (instruction) {
    case "CMD":
    case "ENTRYPOINT":
    case "SHELL":
      return goSliceToJson(trimmed);
    case "EXPOSE":
      return goPortMap(trimmed);
    case "VOLUME": {
      // BuildKit: `VOLUME [/data /cache]` (a Go slice without quotes).
      const m = /^\[([^"\]]*)\]$/.exec(trimmed);
      return m ? m[1]!.trim() : trimmed;
    }
    default:
      return trimmed;
  }
}

/** Parses one `created_by` into a Dockerfile instruction and its arguments. */
export function parseCreatedBy(
  createdBy: string | undefined,
): Pick<DockerfileStep, "instruction" | "args" | "buildArgs"> {
  let text = (createdBy ?? "").trim();
  if (text === "") return { instruction: "", args: "" };
  const buildkit = / # buildkit$/.test(text);
  if (buildkit) text = text.replace(/ # buildkit$/, "").trim();

  // Classic builder metadata steps: `/bin/sh -c #(nop)  CMD ["sh"]`.
  const nop = /^(?:\/bin\/sh|\/bin\/bash|sh|cmd \/S \/C|cmd \/s \/c)\s+-?c?\s*#\(nop\)\s*(.*)$/s.exec(text);
  if (nop) {
    const rest = nop[1]!.trim();
    const word = /^([A-Za-z]+)\b\s*(.*)$/s.exec(rest);
    if (word && INSTRUCTIONS.has(word[1]!.toUpperCase())) {
      const instruction = word[1]!.toUpperCase();
      return { instruction, args: tidyArgs(instruction, word[2]!) };
    }
    return { instruction: "", args: rest };
  }

  let buildArgs: string | undefined;
  // BuildKit RUN: `RUN /bin/sh -c apk add curl` or `RUN |1 V=2 /bin/sh -c ...`.
  const leading = /^([A-Z]+)\b\s*(.*)$/s.exec(text);
  if (leading && INSTRUCTIONS.has(leading[1]!)) {
    const instruction = leading[1]!;
    let args = leading[2]!;
    if (instruction === "RUN") {
      const stripped = stripBuildArgs(args);
      buildArgs = stripped.buildArgs;
      args = stripShell(stripped.rest);
    }
    return { instruction, args: tidyArgs(instruction, args), ...(buildArgs ? { buildArgs } : {}) };
  }

  // Classic RUN: `/bin/sh -c apt-get update`, `|2 A=1 B=2 /bin/sh -c make`.
  const stripped = stripBuildArgs(text);
  buildArgs = stripped.buildArgs;
  const rest = stripped.rest;
  if (startsWithShell(rest) || rest.startsWith("powershell ")) {
    return { instruction: "RUN", args: stripShell(rest), ...(buildArgs ? { buildArgs } : {}) };
  }
  return { instruction: "", args: text };
}

function startsWithShell(text: string): boolean {
  return SHELL_PREFIXES.some((p) => text.startsWith(p));
}

function stripShell(text: string): string {
  for (const p of SHELL_PREFIXES) {
    if (text.startsWith(p)) return text.slice(p.length).trim();
  }
  return text.trim();
}

/**
 * Each history entry as a Dockerfile step. Steps that made a layer are matched to the
 * manifest's layers in order, when the number of such steps equals `layerCount`.
 */
export function historySteps(
  history: HistoryEntry[] | null | undefined,
  layerCount?: number,
): DockerfileStep[] {
  const entries = history ?? [];
  const withLayer = entries.filter((h) => !h.empty_layer).length;
  const mapLayers = layerCount === undefined || withLayer === layerCount;
  let next = 0;
  return entries.map((h) => {
    const parsed = parseCreatedBy(h.created_by);
    const emptyLayer = h.empty_layer === true;
    const layer = !emptyLayer && mapLayers ? next : null;
    if (!emptyLayer) next++;
    const step: DockerfileStep = { ...parsed, emptyLayer, layer };
    if (h.created) step.created = h.created;
    if (h.comment) step.comment = h.comment;
    if (!parsed.instruction && !parsed.args && h.comment) step.args = h.comment;
    return step;
  });
}

/** One step as a Dockerfile line; free text becomes a `#` comment. */
export function formatStep(step: Pick<DockerfileStep, "instruction" | "args">): string {
  if (!step.instruction) return step.args ? `# ${step.args}` : "# (no command recorded)";
  return step.args ? `${step.instruction} ${step.args}` : step.instruction;
}

/** The whole history as Dockerfile text, one step per line. */
export function renderDockerfile(history: HistoryEntry[] | null | undefined): string {
  return historySteps(history)
    .map((s) => formatStep(s))
    .join("\n");
}
