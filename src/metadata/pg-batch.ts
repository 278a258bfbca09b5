import { createHash } from "node:crypto";
import type pg from "pg";

/**
 * The hot reads on PostgreSQL (manifest by tag or digest, a repository's blob), batched.
 *
 * On SQLite a hot read is a call into the same process; on PostgreSQL it is a round trip, and under load
 * the cost of each query (its messages, a backend's turn, the wake-ups on both sides) is most of the cost
 * of a manifest GET. Reads that arrive within one turn of the event loop go out as one query: the single
 * query's SQL runs once per key in a LATERAL join over the keys (`unnest` of one array per parameter),
 * as a named prepared statement like the single one. Equal keys are asked once.
 *
 * Nothing is cached: every answer comes from a query sent after its request arrived, so a write that
 * another replica committed before is always seen.
 */
export class HotReads {
  private readonly names = new Map<string, string>();
  private readonly batchSql = new Map<string, string>();
  private pending = new Map<string, Map<string, Waiter[]>>();
  private scheduled = false;

  constructor(private readonly pool: pg.Pool) {}

  /** One row of `sql` (with `$1`..`$n` text parameters), or undefined. */
  read<T>(sql: string, parameters: readonly unknown[]): Promise<T | undefined> {
    return new Promise((resolve, reject) => {
      const key = JSON.stringify(parameters);
      let byKey = this.pending.get(sql);
      if (!byKey) {
        byKey = new Map();
        this.pending.set(sql, byKey);
      }
      const waiters = byKey.get(key);
      const waiter: Waiter = { parameters, resolve: resolve as (row: unknown) => void, reject };
      if (waiters) waiters.push(waiter);
      else byKey.set(key, [waiter]);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const pending = this.pending;
    this.pending = new Map();
    for (const [sql, byKey] of pending) {
      const groups = [...byKey.values()];
      if (groups.length === 1) this.single(sql, groups[0]!);
      else this.batch(sql, groups);
    }
  }

  private single(sql: string, waiters: Waiter[]): void {
    this.pool.query({ name: this.nameOf(sql), text: sql, values: waiters[0]!.parameters as unknown[] }).then(
      (result) => {
        for (const w of waiters) w.resolve(result.rows[0]);
      },
      (err: unknown) => {
        for (const w of waiters) w.reject(err);
      },
    );
  }

  private batch(sql: string, groups: Waiter[][]): void {
    const arity = groups[0]![0]!.parameters.length;
    const text = this.batchOf(sql, arity);
    const columns: unknown[][] = Array.from({ length: arity }, () => []);
    for (const group of groups) {
      const parameters = group[0]!.parameters;
      for (let p = 0; p < arity; p++) columns[p]!.push(parameters[p]);
    }
    this.pool.query({ name: this.nameOf(text), text, values: columns }).then(
      (result) => {
        const rows = new Map<number, Record<string, unknown>>();
        for (const row of result.rows as Record<string, unknown>[]) {
          const { berth_key, ...rest } = row;
          rows.set(Number(berth_key), rest);
        }
        groups.forEach((group, i) => {
          const row = rows.get(i + 1);
          for (const w of group) w.resolve(row);
        });
      },
      (err: unknown) => {
        for (const group of groups) for (const w of group) w.reject(err);
      },
    );
  }

  /** `sql` run once per key: its `$k` parameters become the k-th column of the keys. */
  private batchOf(sql: string, arity: number): string {
    let text = this.batchSql.get(sql);
    if (!text) {
      const columns = Array.from({ length: arity }, (_, k) => `p${k + 1}`);
      const arrays = columns.map((_, k) => `$${k + 1}::text[]`).join(", ");
      const inner = sql.replace(/\$(\d+)\b/g, (_, n: string) => `berth_keys.p${n}`);
      text =
        `select berth_keys.berth_key, q.* from unnest(${arrays}) with ordinality ` +
        `as berth_keys(${columns.join(", ")}, berth_key) cross join lateral (${inner} limit 1) as q`;
      this.batchSql.set(sql, text);
    }
    return text;
  }

  private nameOf(text: string): string {
    let name = this.names.get(text);
    if (!name) {
      name = `berth_${createHash("sha1").update(text).digest("hex").slice(0, 16)}`;
      this.names.set(text, name);
    }
    return name;
  }
}

interface Waiter {
  parameters: readonly unknown[];
  resolve: (row: unknown) => void;
  reject: (err: unknown) => void;
}
