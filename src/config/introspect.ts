import type { z } from "zod";

/**
 * What a zod schema expects, seen through its wrappers (optional, default, prefault, pipe, ...).
 * The loader uses this to map REGISTRY_* names onto keys, to find unknown keys, and to coerce
 * YAML scalars the way Distribution's Go YAML decoder does.
 */
export type Expected =
  | { kind: "object"; fields: Record<string, z.ZodType> }
  | { kind: "record"; value: z.ZodType }
  | { kind: "array"; element: z.ZodType }
  | { kind: "string" }
  | { kind: "number" }
  | { kind: "boolean" }
  | { kind: "enum"; values: string[] }
  | { kind: "union"; options: z.ZodType[] }
  | { kind: "any" };

interface Def {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  valueType?: z.ZodType;
  element?: z.ZodType;
  entries?: Record<string, string | number>;
  values?: unknown[];
  options?: z.ZodType[];
  getter?: () => z.ZodType;
}

function defOf(schema: z.ZodType): Def {
  return (schema as unknown as { _zod: { def: Def } })._zod.def;
}

const WRAPPERS = new Set(["optional", "nullable", "default", "prefault", "readonly", "catch", "nonoptional"]);

export function expected(schema: z.ZodType): Expected {
  let def = defOf(schema);
  for (let i = 0; i < 50; i++) {
    if (WRAPPERS.has(def.type) && def.innerType) def = defOf(def.innerType);
    else if (def.type === "pipe" && def.in) def = defOf(def.in);
    else if (def.type === "lazy" && def.getter) def = defOf(def.getter());
    else break;
  }
  switch (def.type) {
    case "object":
      return { kind: "object", fields: def.shape ?? {} };
    case "record":
      return def.valueType ? { kind: "record", value: def.valueType } : { kind: "any" };
    case "array":
      return def.element ? { kind: "array", element: def.element } : { kind: "any" };
    case "string":
      return { kind: "string" };
    case "number":
    case "int":
    case "bigint":
      return { kind: "number" };
    case "boolean":
      return { kind: "boolean" };
    case "enum":
      return { kind: "enum", values: Object.values(def.entries ?? {}).map(String) };
    case "literal": {
      const values = def.values ?? [];
      if (values.every((v) => typeof v === "string")) return { kind: "enum", values: values as string[] };
      return { kind: "any" };
    }
    case "union":
      return { kind: "union", options: def.options ?? [] };
    default:
      return { kind: "any" };
  }
}

/** For a union, the object/record member a mapping value should be checked against, if any. */
export function mappingOption(options: z.ZodType[]): Expected | undefined {
  const objects = options.map(expected).filter((e) => e.kind === "object" || e.kind === "record");
  if (objects.length === 0) return undefined;
  if (objects.length === 1) return objects[0];
  // Several object shapes: accept the union of their keys.
  const fields: Record<string, z.ZodType> = {};
  for (const o of objects) if (o.kind === "object") Object.assign(fields, o.fields);
  return { kind: "object", fields };
}

/** Whether a union accepts a scalar of this JavaScript type without coercion. */
export function unionAccepts(options: z.ZodType[], kind: "string" | "number" | "boolean"): boolean {
  return options.some((o) => {
    const e = expected(o);
    return e.kind === kind || e.kind === "any" || (kind === "string" && e.kind === "enum");
  });
}

/** Short description for messages: "a boolean", "a list of strings", "a mapping with keys a, b". */
export function describeExpected(e: Expected): string {
  switch (e.kind) {
    case "object":
      return `a mapping (keys: ${Object.keys(e.fields).join(", ") || "none"})`;
    case "record":
      return "a mapping";
    case "array": {
      const inner = expected(e.element);
      return inner.kind === "string" ? "a list of strings" : "a list";
    }
    case "string":
      return "a string";
    case "number":
      return "a number";
    case "boolean":
      return "a boolean (true or false)";
    case "enum":
      return `one of ${e.values.join(", ")}`;
    case "union":
      return e.options.map((o) => describeExpected(expected(o))).join(" or ");
    default:
      return "a value";
  }
}

/** Whether `schema` is `target` under wrappers (optional, default, ...): finds fields built from a shared schema such as `duration`. */
export function isBuiltFrom(schema: z.ZodType, target: z.ZodType): boolean {
  let current: z.ZodType | undefined = schema;
  for (let i = 0; i < 50 && current; i++) {
    if (current === target) return true;
    const def = defOf(current);
    current = WRAPPERS.has(def.type) ? def.innerType : undefined;
  }
  return false;
}
