// Issue 22 item 8: `berth retention` printed "in 0 repositorys".
import { describe, expect, it } from "vitest";
import { plural } from "../../src/cli/maintenance.js";

describe("plural", () => {
  it.each([
    [0, "repository", "0 repositories"],
    [1, "repository", "1 repository"],
    [2, "tag", "2 tags"],
    [1, "blob", "1 blob"],
    [3, "key", "3 keys"],
  ])("%d %s → %s", (count, word, text) => {
    expect(plural(count, word)).toBe(text);
  });
});
