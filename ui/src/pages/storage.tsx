import { useEffect, useState } from "preact/hooks";
import { api } from "../api.ts";
import { EmptyState, ErrorState, Loading, Pager, Size, useTitle } from "../components.tsx";
import { formatBytes, formatCount, formatPercent } from "../lib/format.ts";
import { repositoryPath } from "../lib/routes.ts";
import { Link, setQuery, useLocation } from "../router.tsx";
import { useDebounced, useLoad, useSession } from "../state.ts";

const PAGE_SIZE = 50;

export function StoragePage() {
  useTitle("Storage");
  const loc = useLocation();
  const { me } = useSession();
  const sort = loc.search.get("sort") ?? "size";
  const q = loc.search.get("q") ?? "";
  const page = Math.max(1, Number(loc.search.get("page") ?? "1") || 1);
  const [text, setText] = useState(q);
  const debounced = useDebounced(text, 180);
  useEffect(() => {
    if (debounced.trim() !== q) setQuery({ q: debounced.trim() || null, page: null }, { replace: true });
  }, [debounced]);
  const { data, error, loading, reload } = useLoad(
    () => api.usage({ sort, q, page, limit: PAGE_SIZE }),
    [sort, q, page, me?.user],
  );

  const largest = data?.repositories.items.reduce((max, r) => Math.max(max, r.size), 0) ?? 0;

  return (
    <div class="page">
      <div class="page-head">
        <h1>Storage</h1>
      </div>
      {error ? (
        <ErrorState error={error} retry={reload} />
      ) : !data ? (
        <Loading />
      ) : (
        <>
          {data.total && data.shared && data.unlinked ? (
            <UsageTotals total={data.total} shared={data.shared} unlinked={data.unlinked} />
          ) : (
            <p class="muted small explain" data-testid="usage-totals-hidden">
              Registry-wide totals are shown to those who may pull every repository; below are the
              repositories you may pull.
            </p>
          )}

          <section aria-labelledby="per-repo">
            <div class="section-head">
              <h2 id="per-repo">By repository</h2>
            </div>
            <p class="muted small explain">
              <strong>Size</strong> counts every blob a repository uses. <strong>Only here</strong> is the
              part no other repository uses (what deleting it would free); <strong>shared</strong> is the
              rest.
            </p>
            <div class="toolbar">
              <label class="search">
                <span class="sr-only">Filter repositories</span>
                <input
                  type="search"
                  placeholder="Filter repositories"
                  value={text}
                  onInput={(e) => setText((e.target as HTMLInputElement).value)}
                  autoComplete="off"
                  spellcheck={false}
                />
              </label>
              <label class="select">
                <span>Sort</span>
                <select
                  value={sort}
                  onChange={(e) => setQuery({ sort: (e.target as HTMLSelectElement).value, page: null })}
                >
                  <option value="size">Size</option>
                  <option value="unique">Only here</option>
                  <option value="shared">Shared</option>
                  <option value="name">Name</option>
                </select>
              </label>
            </div>
            {data.repositories.total === 0 ? (
              <EmptyState title={q ? `No repository matches “${q}”` : "No repositories"} />
            ) : (
              <>
                <div class={`table-wrap ${loading ? "stale" : ""}`}>
                  <table class="list usage" data-testid="usage-table">
                    <thead>
                      <tr>
                        <th scope="col">Repository</th>
                        <th scope="col" class="num">
                          Size
                        </th>
                        <th scope="col" class="num">
                          Only here
                        </th>
                        <th scope="col" class="num">
                          Shared
                        </th>
                        <th scope="col" class="bar-col">
                          <span class="sr-only">Share of the largest</span>
                        </th>
                      </tr>
                    </thead>
                    <tbody>
                      {data.repositories.items.map((r) => (
                        <tr key={r.name}>
                          <th scope="row" class="name-cell">
                            <Link href={repositoryPath(r.name)}>{r.name}</Link>
                          </th>
                          <td class="num" data-label="Size">
                            <Size bytes={r.size} />
                          </td>
                          <td class="num" data-label="Only here">
                            {formatBytes(r.unique)}
                          </td>
                          <td class="num" data-label="Shared">
                            {formatBytes(r.shared)}
                          </td>
                          <td class="bar-col" aria-hidden="true">
                            <span class="bar">
                              <span
                                class="bar-unique"
                                style={{ width: `${largest ? (r.unique / largest) * 100 : 0}%` }}
                              />
                              <span
                                class="bar-shared"
                                style={{ width: `${largest ? (r.shared / largest) * 100 : 0}%` }}
                              />
                            </span>
                          </td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
                <Pager
                  page={data.repositories.page}
                  limit={data.repositories.limit}
                  total={data.repositories.total}
                  noun="repositories"
                  onPage={(p) => setQuery({ page: p > 1 ? p : null })}
                />
              </>
            )}
          </section>
        </>
      )}
    </div>
  );
}

interface Count {
  bytes: number;
  blobs: number;
}

function UsageTotals({ total, shared, unlinked }: { total: Count; shared: Count; unlinked: Count }) {
  return (
    <div class="cards" data-testid="usage-totals">
      <div class="stat-card">
        <span class="stat-label">Stored</span>
        <span class="stat-value" data-testid="usage-total">
          <Size bytes={total.bytes} />
        </span>
        <span class="muted small">
          {formatCount(total.blobs)} {total.blobs === 1 ? "blob" : "blobs"}, each stored once
        </span>
      </div>
      <div class="stat-card">
        <span class="stat-label">Shared between repositories</span>
        <span class="stat-value" data-testid="usage-shared">
          <Size bytes={shared.bytes} />
        </span>
        <span class="muted small">
          {formatCount(shared.blobs)} {shared.blobs === 1 ? "blob" : "blobs"} ·{" "}
          {formatPercent(shared.bytes, total.bytes)} of the total
        </span>
      </div>
      <div class="stat-card">
        <span class="stat-label">Not in any repository</span>
        <span class="stat-value">
          <Size bytes={unlinked.bytes} />
        </span>
        <span class="muted small">
          {formatCount(unlinked.blobs)} {unlinked.blobs === 1 ? "blob" : "blobs"}, freed by the next garbage
          collection
        </span>
      </div>
    </div>
  );
}
