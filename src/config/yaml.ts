import { createRequire } from "node:module";
import type { Node } from "yaml";
import type { Path } from "./provenance.js";

type YamlLibrary = typeof import("yaml");
let library: YamlLibrary | undefined;

/**
 * The yaml package, loaded (synchronously, its CommonJS build) the first time there is YAML to read:
 * a configuration made only of defaults and flags never loads it, which `berth serve` feels at start-up.
 */
function yaml(): YamlLibrary {
  library ??= createRequire(import.meta.url)("yaml") as YamlLibrary;
  return library;
}

/**
 * Original spellings of scalars that YAML resolved to something other than a string
 * (`version: 0.10`, `secret: 0123`), so that a field that expects a string gets what was written.
 */
export type ScalarTexts = Map<string, string>;

export const textKey = (path: Path) => path.map(String).join("\u0000");

export class YamlError extends Error {}

/**
 * Parses YAML the way Distribution's Go decoder (yaml.v2, YAML 1.1) reads it: `yes`/`no`/`on`/`off`
 * are booleans too. Returns plain data and the source text of non-string scalars.
 */
export function parseYaml(text: string, where: string, base: Path = [], texts?: ScalarTexts): unknown {
  const doc = yaml().parseDocument(text, { version: "1.1", prettyErrors: true, uniqueKeys: true });
  const error = doc.errors[0];
  if (error) {
    throw new YamlError(`${where}: invalid YAML: ${error.message.split("\n")[0]?.replace(/:$/, "")}`);
  }
  const value = doc.toJS({ maxAliasCount: 1000 }) as unknown;
  if (texts && doc.contents) collectTexts(doc.contents as Node, [...base], texts);
  return value;
}

function collectTexts(node: Node, path: (string | number)[], texts: ScalarTexts): void {
  const { isMap, isPair, isScalar, isSeq } = yaml();
  if (isScalar(node)) {
    if (typeof node.value !== "string" && node.value !== null && typeof node.source === "string") {
      texts.set(textKey(path), node.source);
    }
    return;
  }
  if (isMap(node)) {
    for (const pair of node.items) {
      if (!isPair(pair) || !isScalar(pair.key) || !pair.value) continue;
      collectTexts(pair.value as Node, [...path, String(pair.key.value)], texts);
    }
    return;
  }
  if (isSeq(node)) {
    node.items.forEach((item, i) => {
      if (item) collectTexts(item as Node, [...path, i], texts);
    });
  }
}
