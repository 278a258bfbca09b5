import { describe, expect, it } from "vitest";
import { databaseUnavailable, markConnectionError } from "../../src/metadata/dialect.js";

describe("databaseUnavailable", () => {
  const err = (props: Record<string, unknown>, message = "x") => Object.assign(new Error(message), props);

  it("maps PostgreSQL's connection, shutdown and overload errors to a retry in 5 s", () => {
    for (const code of ["08006", "08001", "57P01", "57P02", "57P03", "53300"])
      expect(databaseUnavailable(err({ code }))?.retryAfter, code).toBe(5);
    expect(databaseUnavailable(err({ code: "ECONNREFUSED", syscall: "connect" }))).not.toBeNull();
    expect(databaseUnavailable(new Error("Connection terminated unexpectedly"))).not.toBeNull();
    expect(databaseUnavailable(new Error("timeout exceeded when trying to connect"))).not.toBeNull();
  });

  it("maps deadlocks and serialization failures to a retry in 1 s", () => {
    expect(databaseUnavailable(err({ code: "40P01" }))?.retryAfter).toBe(1);
    expect(databaseUnavailable(err({ code: "40001" }))?.retryAfter).toBe(1);
  });

  it("leaves other errors alone, a client's reset included, unless a database connection raised it", () => {
    expect(databaseUnavailable(err({ code: "23505" }))).toBeNull();
    expect(databaseUnavailable(err({ code: "ENOSPC" }))).toBeNull();
    const reset = err({ code: "ECONNRESET", syscall: "read" });
    expect(databaseUnavailable(reset)).toBeNull();
    markConnectionError(reset);
    expect(databaseUnavailable(reset)?.retryAfter).toBe(5);
    expect(databaseUnavailable(null)).toBeNull();
  });
});
