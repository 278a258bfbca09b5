import { useEffect, useState } from "preact/hooks";
import { api, type TagItem } from "../api.ts";
import {
  CommandBox,
  ConfirmDialog,
  CopyButton,
  DeleteUnavailable,
  Digest,
  EmptyState,
  ErrorState,
  Loading,
  Pager,
  Platforms,
  Size,
  Time,
  useTitle,
} from "../components.tsx";
import {
  baseName,
  formatBytes,
  formatCount,
  mediaTypeLabel,
  namespaceOf,
  pullCommand,
} from "../lib/format.ts";
import { imagePath, repositoryPath } from "../lib/routes.ts";
import { Link, navigate, setQuery, useLocation } from "../router.tsx";
import { useDebounced, useLoad, useSession } from "../state.ts";

const PAGE_SIZE = 50;

export function Breadcrumbs({ name, last }: { name: string; last?: string }) {
  const ns = namespaceOf(name);
  return (
    <nav class="crumbs" aria-label="Breadcrumb">
      <Link href="/">Repositories</Link>
      {ns ? (
        <>
          <span aria-hidden="true">/</span>
          <Link href={`/?q=${encodeURIComponent(`${ns}/`)}`}>{ns}</Link>
        </>
      ) : null}
      <span aria-hidden="true">/</span>
      {last ? (
        <Link href={repositoryPath(name)}>{baseName(name)}</Link>
      ) : (
        <span aria-current="page">{baseName(name)}</span>
      )}
      {last ? (
        <>
          <span aria-hidden="true">{last.includes(":") ? "@" : ":"}</span>
          <span aria-current="page">{last}</span>
        </>
      ) : null}
    </nav>
  );
}

type Pending = { kind: "tag"; tag: TagItem; siblings: string[] } | { kind: "repository" };

export function RepositoryPage({ name }: { name: string }) {
  useTitle(name);
  const loc = useLocation();
  const { me } = useSession();
  const q = loc.search.get("q") ?? "";
  const sort = loc.search.get("sort") ?? "name";
  const order = loc.search.get("order") ?? (sort === "name" ? "asc" : "desc");
  const page = Math.max(1, Number(loc.search.get("page") ?? "1") || 1);
  const [text, setText] = useState(q);
  const debounced = useDebounced(text, 180);
  useEffect(() => {
    if (debounced.trim() !== q) setQuery({ q: debounced.trim() || null, page: null }, { replace: true });
  }, [debounced]);
  const [pending, setPending] = useState<Pending | null>(null);
  const [notice, setNotice] = useState<string | null>(null);

  const repo = useLoad(() => api.repository(name), [name, me?.user]);
  const tags = useLoad(
    () => api.tags(name, { q, sort, order, page, limit: PAGE_SIZE }),
    [name, q, sort, order, page, me?.user],
  );
  const host = window.location.host;
  const canDelete = repo.data?.permissions.delete === true;

  if (repo.error) {
    return (
      <div class="page">
        <Breadcrumbs name={name} />
        <ErrorState error={repo.error} retry={repo.reload} />
      </div>
    );
  }

  const defaultTag = tags.data?.items.find((t) => t.name === "latest")?.name ?? tags.data?.items[0]?.name;

  return (
    <div class="page">
      <Breadcrumbs name={name} />
      <div class="page-head">
        <h1 class="repo-title">
          {namespaceOf(name) ? <span class="ns">{namespaceOf(name)}/</span> : null}
          {baseName(name)}
          {repo.data?.proxy ? (
            <span class="badge" title={`pull-through cache of ${repo.data.proxy.remoteurl}`}>
              mirror of {repo.data.proxy.upstream}
            </span>
          ) : null}
        </h1>
        <CopyButton text={`${host}/${name}`} label="Copy name" title="Copy the repository's full name" />
      </div>

      {repo.data ? (
        <dl class="stats" data-testid="repo-stats">
          <div>
            <dt>Tags</dt>
            <dd>{formatCount(repo.data.tagCount)}</dd>
          </div>
          <div>
            <dt>Manifests</dt>
            <dd>{formatCount(repo.data.manifestCount)}</dd>
          </div>
          <div>
            <dt>Size</dt>
            <dd>
              <Size bytes={repo.data.size} />
            </dd>
          </div>
          <div>
            <dt title="Bytes no other repository links: what deleting this repository would free">
              Only here
            </dt>
            <dd>{formatBytes(repo.data.unique)}</dd>
          </div>
          <div>
            <dt>Last push</dt>
            <dd>
              <Time value={repo.data.lastPush} />
            </dd>
          </div>
        </dl>
      ) : null}

      {defaultTag ? <CommandBox label="Pull" command={pullCommand(host, name, defaultTag)} /> : null}

      {notice ? (
        <div class="banner ok" role="status">
          {notice}
        </div>
      ) : null}

      <section aria-labelledby="tags-heading">
        <div class="section-head">
          <h2 id="tags-heading">Tags</h2>
        </div>
        <div class="toolbar">
          <label class="search">
            <span class="sr-only">Filter tags</span>
            <input
              type="search"
              placeholder="Filter tags"
              value={text}
              onInput={(e) => setText((e.target as HTMLInputElement).value)}
              data-testid="tag-filter"
              autoComplete="off"
              spellcheck={false}
            />
          </label>
          <label class="select">
            <span>Sort</span>
            <select
              value={sort}
              onChange={(e) =>
                setQuery({ sort: (e.target as HTMLSelectElement).value, order: null, page: null })
              }
            >
              <option value="name">Name</option>
              <option value="date">Date pushed</option>
            </select>
          </label>
          <button
            type="button"
            class="order"
            onClick={() => setQuery({ order: order === "asc" ? "desc" : "asc", page: null })}
            aria-label={
              order === "asc" ? "Ascending; switch to descending" : "Descending; switch to ascending"
            }
            title={order === "asc" ? "Ascending" : "Descending"}
          >
            {order === "asc" ? "↑" : "↓"}
          </button>
        </div>

        {tags.error ? (
          <ErrorState error={tags.error} retry={tags.reload} />
        ) : !tags.data ? (
          <Loading />
        ) : tags.data.total === 0 ? (
          q ? (
            <EmptyState title={`No tag matches “${q}”`} />
          ) : (
            <EmptyState title="No tags">
              <p>This repository has no tags. Push one:</p>
              <CommandBox
                command={`docker tag myimage:latest ${host}/${name}:latest && docker push ${host}/${name}:latest`}
              />
            </EmptyState>
          )
        ) : (
          <>
            <div class={`table-wrap ${tags.loading ? "stale" : ""}`} aria-busy={tags.loading}>
              <table class="list tags" data-testid="tag-table">
                <thead>
                  <tr>
                    <th scope="col">Tag</th>
                    <th scope="col">Digest</th>
                    <th scope="col">Platforms</th>
                    <th scope="col" class="num">
                      Size
                    </th>
                    <th scope="col">Created</th>
                    <th scope="col">Pushed</th>
                    <th scope="col">
                      <span class="sr-only">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {tags.data.items.map((t) => (
                    <tr key={t.name} data-tag={t.name}>
                      <th scope="row" class="name-cell">
                        <Link href={imagePath(name, t.name)} class="tag-link">
                          {t.name}
                        </Link>
                        {t.artifactType ? <span class="badge">{mediaTypeLabel(t.artifactType)}</span> : null}
                      </th>
                      <td data-label="Digest">
                        <Digest digest={t.digest} />
                      </td>
                      <td data-label="Platforms">
                        <Platforms platforms={t.platforms} />
                      </td>
                      <td class="num" data-label="Size">
                        <Size bytes={t.size} />
                      </td>
                      <td data-label="Created" class="created">
                        <Time value={t.created} />
                      </td>
                      <td data-label="Pushed">
                        <Time value={t.pushed} />
                      </td>
                      <td class="actions">
                        <CopyButton
                          text={pullCommand(host, name, t.name)}
                          label="Pull"
                          title={`Copy: ${pullCommand(host, name, t.name)}`}
                        />
                        {canDelete ? (
                          <button
                            type="button"
                            class="danger subtle"
                            aria-label={`Delete tag ${t.name}`}
                            onClick={() =>
                              setPending({
                                kind: "tag",
                                tag: t,
                                siblings: tags
                                  .data!.items.filter((o) => o.digest === t.digest && o.name !== t.name)
                                  .map((o) => o.name),
                              })
                            }
                          >
                            Delete
                          </button>
                        ) : null}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
            <Pager
              page={tags.data.page}
              limit={tags.data.limit}
              total={tags.data.total}
              noun="tags"
              onPage={(p) => setQuery({ page: p > 1 ? p : null })}
            />
          </>
        )}
      </section>

      {canDelete ? (
        <section class="danger-zone" aria-labelledby="danger-heading">
          <h2 id="danger-heading">Delete this repository</h2>
          <p>
            Removes every tag and manifest of <code>{name}</code>. Layers that other repositories use stay;
            the rest is freed by the next garbage collection.
          </p>
          <button type="button" class="danger" onClick={() => setPending({ kind: "repository" })}>
            Delete repository…
          </button>
        </section>
      ) : (
        <DeleteUnavailable me={me} />
      )}

      {pending?.kind === "tag" ? (
        <ConfirmDialog
          title={`Delete tag ${pending.tag.name}?`}
          action="Delete tag"
          onClose={() => setPending(null)}
          onConfirm={async () => {
            await api.deleteTag(name, pending.tag.name);
            setNotice(`Deleted tag ${pending.tag.name}.`);
            tags.reload();
            repo.reload();
          }}
        >
          <p>
            <code>
              {name}:{pending.tag.name}
            </code>{" "}
            will no longer resolve. The image itself stays, under its digest
            {pending.siblings.length > 0 ? (
              <>
                {" "}
                and the other {pending.siblings.length === 1 ? "tag" : "tags"} on it:{" "}
                <strong>{pending.siblings.join(", ")}</strong>
              </>
            ) : null}
            .
          </p>
        </ConfirmDialog>
      ) : null}
      {pending?.kind === "repository" ? (
        <ConfirmDialog
          title={`Delete ${name}?`}
          action="Delete repository"
          confirmText={name}
          onClose={() => setPending(null)}
          onConfirm={async () => {
            await api.deleteRepository(name);
            navigate("/");
          }}
        >
          <p>
            All {formatCount(repo.data?.tagCount ?? 0)} tags and {formatCount(repo.data?.manifestCount ?? 0)}{" "}
            manifests of <code>{name}</code> will be deleted. This cannot be undone.
          </p>
        </ConfirmDialog>
      ) : null}
    </div>
  );
}
