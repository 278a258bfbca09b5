import { useEffect, useRef, useState } from "preact/hooks";
import { api, type RepositorySummary } from "../api.ts";
import { CommandBox, EmptyState, ErrorState, Loading, Pager, Size, Time, useTitle } from "../components.tsx";
import { baseName, firstPushCommands, formatCount, groupByNamespace } from "../lib/format.ts";
import { repositoryPath } from "../lib/routes.ts";
import { Link, setQuery, useLocation } from "../router.tsx";
import { useDebounced, useLoad, useSession } from "../state.ts";

const SORTS = [
  { value: "name", label: "Name" },
  { value: "size", label: "Size" },
  { value: "pushed", label: "Last push" },
] as const;

const PAGE_SIZE = 50;

function plural(n: number, one: string, many: string): string {
  return `${formatCount(n)} ${n === 1 ? one : many}`;
}

function Row({ repo, grouped }: { repo: RepositorySummary; grouped: boolean }) {
  return (
    <tr>
      <th scope="row" class={grouped && repo.namespace ? "name-cell in-ns" : "name-cell"}>
        <Link href={repositoryPath(repo.name)} class="repo-link">
          {grouped && repo.namespace ? (
            <span>{baseName(repo.name)}</span>
          ) : (
            <>
              {repo.namespace ? <span class="ns">{repo.namespace}/</span> : null}
              <span>{baseName(repo.name)}</span>
            </>
          )}
        </Link>
        {repo.proxy ? (
          <span class="badge" title={`pull-through cache of ${repo.proxy.remoteurl}`}>
            mirror of {repo.proxy.upstream}
          </span>
        ) : null}
      </th>
      <td class="num" data-label="Tags">
        {formatCount(repo.tagCount)}
        <span class="unit"> {repo.tagCount === 1 ? "tag" : "tags"}</span>
      </td>
      <td class="num" data-label="Size">
        <Size bytes={repo.size} />
      </td>
      <td data-label="Last push">
        <Time value={repo.lastPush} />
      </td>
    </tr>
  );
}

export function RepositoriesPage() {
  useTitle("Repositories");
  const loc = useLocation();
  const { me } = useSession();
  const q = loc.search.get("q") ?? "";
  const sort = loc.search.get("sort") ?? "name";
  const order = loc.search.get("order") ?? (sort === "name" ? "asc" : "desc");
  const page = Math.max(1, Number(loc.search.get("page") ?? "1") || 1);

  // The box follows the URL, the URL follows the box (debounced): search as you type, and back/forward work.
  const [text, setText] = useState(q);
  const debounced = useDebounced(text, 180);
  useEffect(() => {
    if (debounced !== q) setQuery({ q: debounced.trim() || null, page: null }, { replace: true });
  }, [debounced]);
  useEffect(() => {
    if (q !== text.trim() && q !== debounced.trim()) setText(q);
  }, [q]);

  const search = useRef<HTMLInputElement>(null);
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement;
      if (e.key === "/" && !["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) {
        e.preventDefault();
        search.current?.focus();
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);

  const { data, error, loading, reload } = useLoad(
    () => api.repositories({ q, sort, order, page, limit: PAGE_SIZE }),
    [q, sort, order, page, me?.user],
  );

  const grouped = sort === "name";
  const host = window.location.host;

  return (
    <div class="page">
      <div class="page-head">
        <h1>Repositories</h1>
        {data ? <span class="count">{formatCount(data.total)}</span> : null}
      </div>

      <search class="toolbar">
        <label class="search">
          <span class="sr-only">Search repositories</span>
          <input
            ref={search}
            type="search"
            placeholder="Search repositories"
            value={text}
            onInput={(e) => setText((e.target as HTMLInputElement).value)}
            aria-keyshortcuts="/"
            data-testid="repo-search"
            autoComplete="off"
            spellcheck={false}
          />
          <span class="hint" aria-hidden="true">
            /
          </span>
        </label>
        <label class="select">
          <span>Sort</span>
          <select
            value={sort}
            onChange={(e) =>
              setQuery({ sort: (e.target as HTMLSelectElement).value, order: null, page: null })
            }
            data-testid="repo-sort"
          >
            {SORTS.map((s) => (
              <option key={s.value} value={s.value}>
                {s.label}
              </option>
            ))}
          </select>
        </label>
        <button
          type="button"
          class="order"
          onClick={() => setQuery({ order: order === "asc" ? "desc" : "asc", page: null })}
          aria-label={order === "asc" ? "Ascending; switch to descending" : "Descending; switch to ascending"}
          title={order === "asc" ? "Ascending" : "Descending"}
        >
          {order === "asc" ? "↑" : "↓"}
        </button>
      </search>

      {error ? (
        <ErrorState error={error} retry={reload} />
      ) : !data ? (
        <Loading />
      ) : data.total === 0 ? (
        q ? (
          <EmptyState title={`No repository matches “${q}”`}>
            <p>Try a shorter part of the name.</p>
          </EmptyState>
        ) : me && me.auth !== "none" && !me.user ? (
          <EmptyState title="Nothing to see without logging in">
            <p>
              Anonymous users may not pull any repository here. <Link href="/login">Log in</Link> to see
              yours.
            </p>
          </EmptyState>
        ) : (
          <EmptyState title="No repositories yet">
            <p>Push your first image:</p>
            <CommandBox command={firstPushCommands(host)} />
          </EmptyState>
        )
      ) : (
        <>
          <div class={`table-wrap ${loading ? "stale" : ""}`} aria-busy={loading}>
            <table class="list repos" data-testid="repo-table">
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col" class="num">
                    Tags
                  </th>
                  <th scope="col" class="num">
                    Size
                  </th>
                  <th scope="col">Last push</th>
                </tr>
              </thead>
              {grouped ? (
                groupByNamespace(data.items).map((g) => (
                  <tbody key={g.namespace}>
                    {g.namespace ? (
                      <tr class="group">
                        <th scope="rowgroup" colSpan={4}>
                          <span class="ns-icon" aria-hidden="true">
                            ▾
                          </span>
                          {g.namespace}/
                          <span class="muted small">
                            {" "}
                            {plural(
                              data.namespaces.find((n) => n.name === g.namespace)?.repositories ??
                                g.items.length,
                              "repository",
                              "repositories",
                            )}
                          </span>
                        </th>
                      </tr>
                    ) : null}
                    {g.items.map((r) => (
                      <Row key={r.name} repo={r} grouped />
                    ))}
                  </tbody>
                ))
              ) : (
                <tbody>
                  {data.items.map((r) => (
                    <Row key={r.name} repo={r} grouped={false} />
                  ))}
                </tbody>
              )}
            </table>
          </div>
          <Pager
            page={data.page}
            limit={data.limit}
            total={data.total}
            noun="repositories"
            onPage={(p) => setQuery({ page: p > 1 ? p : null })}
          />
        </>
      )}
    </div>
  );
}
