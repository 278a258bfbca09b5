import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { api, type IndexChild, type ManifestDetail } from "../api.ts";
import {
  CommandBox,
  ConfirmDialog,
  CopyButton,
  DeleteUnavailable,
  Digest,
  ErrorState,
  Loading,
  Platforms,
  Size,
  Time,
  useTitle,
} from "../components.tsx";
import {
  formatAbsolute,
  formatBytes,
  formatCreated,
  formatPlatform,
  isIndexMediaType,
  isMeaningfulDate,
  isUnknownPlatform,
  mediaTypeLabel,
  pullCommand,
  shortDigest,
  splitEnv,
  toMillis,
} from "../lib/format.ts";
import { formatStep, historySteps, renderDockerfile } from "../lib/history.ts";
import { imagePath, repositoryPath } from "../lib/routes.ts";
import { Link, navigate } from "../router.tsx";
import { useLoad, useSession } from "../state.ts";
import { Breadcrumbs } from "./repository.tsx";

function Section({
  id,
  title,
  children,
  extra,
}: {
  id: string;
  title: string;
  children: ComponentChildren;
  extra?: ComponentChildren;
}) {
  return (
    <section class="card" aria-labelledby={id} data-section={id}>
      <div class="section-head">
        <h2 id={id}>{title}</h2>
        {extra}
      </div>
      {children}
    </section>
  );
}

function KeyValues({ entries, empty = "None" }: { entries: Array<[string, string]>; empty?: string }) {
  if (entries.length === 0) return <p class="muted">{empty}</p>;
  return (
    <table class="kv">
      <tbody>
        {entries.map(([k, v]) => (
          <tr key={k}>
            <th scope="row">
              <code>{k}</code>
            </th>
            <td>
              <code class="wrap">{v}</code>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** A string list as Dockerfile exec-form JSON: ["node", "server.js"]. */
function json(list: string[] | null): string {
  return list ? `[${list.map((item) => JSON.stringify(item)).join(", ")}]` : "";
}

function ConfigSection({ detail }: { detail: ManifestDetail }) {
  const image = detail.config?.image;
  if (!image) return null;
  const rows: Array<[string, ComponentChildren]> = [
    [
      "Entrypoint",
      image.entrypoint ? <code class="wrap">{json(image.entrypoint)}</code> : <span class="muted">—</span>,
    ],
    ["Cmd", image.cmd ? <code class="wrap">{json(image.cmd)}</code> : <span class="muted">—</span>],
    ["Working dir", image.workingDir ? <code>{image.workingDir}</code> : <span class="muted">/</span>],
    ["User", image.user ? <code>{image.user}</code> : <span class="muted">root (not set)</span>],
    [
      "Exposed ports",
      image.exposedPorts.length ? (
        <span class="chips">
          {image.exposedPorts.map((p) => (
            <span class="chip" key={p}>
              {p}
            </span>
          ))}
        </span>
      ) : (
        <span class="muted">—</span>
      ),
    ],
  ];
  if (image.volumes.length) rows.push(["Volumes", <code key="v">{image.volumes.join(" ")}</code>]);
  if (image.stopSignal) rows.push(["Stop signal", <code key="s">{image.stopSignal}</code>]);
  if (image.author) rows.push(["Author", image.author]);
  rows.push(["Created", formatCreated(image.created)]);
  return (
    <Section id="config" title="Config">
      <dl class="props" data-testid="config">
        {rows.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>
      <h3>Environment</h3>
      <KeyValues entries={image.env.map(splitEnv)} empty="No environment variables." />
      <h3>Labels</h3>
      <KeyValues
        entries={Object.entries(image.labels).sort(([a], [b]) => a.localeCompare(b))}
        empty="No labels."
      />
    </Section>
  );
}

function LayersSection({ detail }: { detail: ManifestDetail }) {
  if (detail.kind === "index") return null;
  const total = detail.layers.reduce((sum, l) => sum + l.size, 0);
  const title = detail.kind === "artifact" ? "Files" : "Layers";
  return (
    <Section
      id="layers"
      title={`${title} (${detail.layers.length})`}
      extra={<span class="muted">{formatBytes(total)} in total</span>}
    >
      {detail.layers.length === 0 ? (
        <p class="muted">No {title.toLowerCase()}.</p>
      ) : (
        <div class="table-wrap">
          <table class="list layers" data-testid="layers">
            <thead>
              <tr>
                <th scope="col" class="num">
                  #
                </th>
                <th scope="col">Digest</th>
                <th scope="col">Media type</th>
                <th scope="col" class="num">
                  Size
                </th>
              </tr>
            </thead>
            <tbody>
              {detail.layers.map((l, i) => (
                <tr key={`${l.digest}-${i}`}>
                  <td class="num muted">{i + 1}</td>
                  <td data-label="Digest">
                    <Digest digest={l.digest} />
                    {l.annotations?.["org.opencontainers.image.title"] ? (
                      <span class="file-title">{l.annotations["org.opencontainers.image.title"]}</span>
                    ) : null}
                  </td>
                  <td data-label="Media type">
                    <span title={l.mediaType}>{mediaTypeLabel(l.mediaType)}</span>
                  </td>
                  <td class="num" data-label="Size">
                    <Size bytes={l.size} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Section>
  );
}

function HistorySection({ detail }: { detail: ManifestDetail }) {
  if (detail.kind !== "image") return null;
  const steps = historySteps(detail.history, detail.layers.length);
  return (
    <Section
      id="history"
      title="History"
      extra={
        steps.length ? (
          <CopyButton
            text={renderDockerfile(detail.history)}
            label="Copy as Dockerfile"
            title="Copy the steps as Dockerfile text"
          />
        ) : null
      }
    >
      {steps.length === 0 ? (
        <p class="muted">The image config records no history.</p>
      ) : (
        <ol class="history" data-testid="history">
          {steps.map((s, i) => {
            const layer = s.layer !== null ? detail.layers[s.layer] : undefined;
            return (
              <li key={i} class={s.emptyLayer ? "empty" : ""}>
                <pre class="step">
                  {s.instruction ? <span class="instr">{s.instruction}</span> : null}
                  {s.instruction ? " " : ""}
                  <span class={s.instruction ? "" : "comment"}>{s.instruction ? s.args : formatStep(s)}</span>
                </pre>
                <span class="step-meta">
                  {layer ? (
                    <span title={`Layer ${(s.layer ?? 0) + 1}: ${layer.digest}`}>
                      <Size bytes={layer.size} />
                    </span>
                  ) : s.emptyLayer ? (
                    <span class="muted">no layer</span>
                  ) : null}
                  {s.buildArgs ? (
                    <span class="muted small" title="Build arguments">
                      {s.buildArgs}
                    </span>
                  ) : null}
                  {s.created &&
                  isMeaningfulDate(toMillis(s.created)) &&
                  s.created.slice(0, 10) !== steps[i - 1]?.created?.slice(0, 10) ? (
                    <span class="muted small">
                      <Time value={s.created} />
                    </span>
                  ) : null}
                </span>
              </li>
            );
          })}
        </ol>
      )}
    </Section>
  );
}

function PlatformsSection({ detail }: { detail: ManifestDetail }) {
  if (detail.kind !== "index") return null;
  const images = detail.manifests.filter(
    (m) => !m.attestationFor && !(m.platform && isUnknownPlatform(m.platform)),
  );
  const others = detail.manifests.filter((m) => !images.includes(m));
  const row = (m: IndexChild) => (
    <tr key={m.digest}>
      <th scope="row" class="name-cell">
        {m.attestationFor ? (
          <span>attestation for {shortDigest(m.attestationFor)}</span>
        ) : m.platform ? (
          <span class="chip">{formatPlatform(m.platform)}</span>
        ) : (
          <span class="muted">{m.artifactType ? mediaTypeLabel(m.artifactType) : "no platform"}</span>
        )}
      </th>
      <td data-label="Digest">
        <Digest digest={m.digest} href={m.present ? imagePath(detail.repository, m.digest) : undefined} />
      </td>
      <td data-label="Type">
        <span title={m.mediaType}>{mediaTypeLabel(m.mediaType)}</span>
      </td>
      <td class="num" data-label="Size">
        {m.present ? <Size bytes={m.totalSize} /> : <span class="muted">not stored here</span>}
      </td>
    </tr>
  );
  const table = (list: IndexChild[], testid: string) => (
    <div class="table-wrap">
      <table class="list" data-testid={testid}>
        <thead>
          <tr>
            <th scope="col">Platform</th>
            <th scope="col">Digest</th>
            <th scope="col">Type</th>
            <th scope="col" class="num">
              Size
            </th>
          </tr>
        </thead>
        <tbody>{list.map(row)}</tbody>
      </table>
    </div>
  );
  return (
    <Section id="platforms" title={`Platforms (${images.length})`}>
      {images.length ? table(images, "platforms") : <p class="muted">This index lists no platform images.</p>}
      {others.length ? (
        <>
          <h3>Attestations and other entries</h3>
          {table(others, "index-others")}
        </>
      ) : null}
    </Section>
  );
}

/** For an index: pick a platform and read that image's config, layers and history right here. */
function PlatformImage({ detail }: { detail: ManifestDetail }) {
  const images = detail.manifests.filter(
    (m) => m.present && !m.attestationFor && !(m.platform && isUnknownPlatform(m.platform)),
  );
  const preferred =
    images.find((m) => m.platform?.os === "linux" && m.platform.architecture === "amd64") ?? images[0];
  const [selected, setSelected] = useState(preferred?.digest ?? null);
  const child = useLoad(
    () => (selected ? api.manifest(detail.repository, selected) : Promise.resolve(null)),
    [detail.repository, selected],
  );
  if (!selected || images.length === 0) return null;
  const current = images.find((m) => m.digest === selected);
  return (
    <>
      <fieldset class="platform-picker">
        <legend class="muted small">Showing the image for</legend>
        {images.map((m) => (
          <button
            type="button"
            key={m.digest}
            class={`chip-button ${m.digest === selected ? "selected" : ""}`}
            aria-pressed={m.digest === selected}
            onClick={() => setSelected(m.digest)}
          >
            {formatPlatform(m.platform) || shortDigest(m.digest)}
          </button>
        ))}
        {current ? (
          <Link href={imagePath(detail.repository, current.digest)} class="small">
            Open this image on its own page
          </Link>
        ) : null}
      </fieldset>
      {child.error ? (
        <ErrorState error={child.error} retry={child.reload} />
      ) : !child.data || child.data.digest !== selected ? (
        <Loading />
      ) : (
        <>
          <ConfigSection detail={child.data} />
          <LayersSection detail={child.data} />
          <HistorySection detail={child.data} />
        </>
      )}
    </>
  );
}

function ReferrersSection({ detail }: { detail: ManifestDetail }) {
  return (
    <Section id="referrers" title={`Referrers (${detail.referrers.length})`}>
      {detail.referrers.length === 0 ? (
        <p class="muted">No signatures, SBOMs or attestations refer to this manifest.</p>
      ) : (
        <div class="table-wrap">
          <table class="list" data-testid="referrers">
            <thead>
              <tr>
                <th scope="col">Artifact type</th>
                <th scope="col">Digest</th>
                <th scope="col" class="num">
                  Size
                </th>
                <th scope="col">Pushed</th>
              </tr>
            </thead>
            <tbody>
              {detail.referrers.map((r) => (
                <tr key={r.digest}>
                  <th scope="row" class="name-cell">
                    <span class="badge" title={r.artifactType ?? r.mediaType}>
                      {mediaTypeLabel(r.artifactType ?? r.mediaType)}
                    </span>
                  </th>
                  <td data-label="Digest">
                    <Digest digest={r.digest} href={imagePath(detail.repository, r.digest)} />
                  </td>
                  <td class="num" data-label="Size">
                    <Size bytes={r.size} />
                  </td>
                  <td data-label="Pushed">
                    <Time value={r.pushed} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Section>
  );
}

function Summary({ detail, reference }: { detail: ManifestDetail; reference: string }) {
  const image = detail.config?.image;
  const created = image?.created ?? null;
  return (
    <dl class="props summary" data-testid="summary">
      <div>
        <dt>Digest</dt>
        <dd class="digest-full">
          <code class="wrap">{detail.digest}</code>
          <CopyButton text={detail.digest} label="" title="Copy the digest" class="icon-only" />
        </dd>
      </div>
      <div>
        <dt>Type</dt>
        <dd>
          <span title={detail.mediaType}>{mediaTypeLabel(detail.mediaType)}</span>
          {detail.artifactType ? (
            <span class="badge" title={detail.artifactType}>
              {mediaTypeLabel(detail.artifactType)}
            </span>
          ) : null}
        </dd>
      </div>
      {detail.kind === "image" ? (
        <div>
          <dt>Platform</dt>
          <dd>
            <Platforms platforms={detail.platform ? [detail.platform] : []} />
          </dd>
        </div>
      ) : null}
      {detail.kind === "index" ? (
        <div>
          <dt>Platforms</dt>
          <dd>
            <Platforms
              platforms={detail.manifests
                .map((m) => m.platform)
                .filter((p): p is NonNullable<typeof p> => p !== null)}
            />
          </dd>
        </div>
      ) : null}
      <div>
        <dt>Size</dt>
        <dd>
          <Size bytes={detail.totalSize} />
        </dd>
      </div>
      <div>
        <dt>Pushed</dt>
        <dd>
          <Time value={detail.pushed} /> <span class="muted small">{formatAbsolute(detail.pushed)}</span>
        </dd>
      </div>
      {created ? (
        <div>
          <dt>Created</dt>
          <dd>{isMeaningfulDate(toMillis(created)) ? <Time value={created} /> : formatCreated(created)}</dd>
        </div>
      ) : null}
      <div>
        <dt>Tags</dt>
        <dd class="chips">
          {detail.tags.length === 0 ? <span class="muted">untagged</span> : null}
          {detail.tags.map((t) => (
            <Link
              key={t}
              href={imagePath(detail.repository, t)}
              class={`chip link ${t === reference ? "current" : ""}`}
            >
              {t}
            </Link>
          ))}
        </dd>
      </div>
      {detail.parents.length ? (
        <div>
          <dt>Part of</dt>
          <dd class="chips">
            {detail.parents.map((p) => (
              <Link key={p} href={imagePath(detail.repository, p)} class="chip link mono" title={p}>
                index {shortDigest(p)}
              </Link>
            ))}
          </dd>
        </div>
      ) : null}
      {detail.subject ? (
        <div>
          <dt>Refers to</dt>
          <dd>
            <Digest digest={detail.subject} href={imagePath(detail.repository, detail.subject)} />
          </dd>
        </div>
      ) : null}
    </dl>
  );
}

export function ImagePage({ name, reference }: { name: string; reference: string }) {
  const isDigest = reference.includes(":");
  const label = isDigest ? `${name}@${shortDigest(reference)}` : `${name}:${reference}`;
  useTitle(label);
  const { me } = useSession();
  const [confirming, setConfirming] = useState(false);
  const { data, error, reload } = useLoad(() => api.manifest(name, reference), [name, reference, me?.user]);
  const host = window.location.host;

  return (
    <div class="page">
      <Breadcrumbs name={name} last={isDigest ? shortDigest(reference) : reference} />
      <div class="page-head">
        <h1 class="image-title">
          <span class="repo-part">{name}</span>
          <span class="ref-part">{isDigest ? `@${shortDigest(reference)}` : `:${reference}`}</span>
        </h1>
        {data ? <span class="kind">{data.kind === "index" ? "multi-platform index" : data.kind}</span> : null}
      </div>
      {error ? (
        <ErrorState error={error} retry={reload} />
      ) : !data ? (
        <Loading />
      ) : (
        <>
          <CommandBox label="Pull" command={pullCommand(host, name, isDigest ? data.digest : reference)} />
          <Summary detail={data} reference={reference} />
          <PlatformsSection detail={data} />
          {data.kind === "index" ? <PlatformImage detail={data} /> : null}
          <ConfigSection detail={data} />
          <LayersSection detail={data} />
          <HistorySection detail={data} />
          <Section id="annotations" title="Annotations">
            <KeyValues entries={Object.entries(data.annotations)} empty="No annotations." />
          </Section>
          <ReferrersSection detail={data} />
          {data.permissions.delete ? (
            <section class="danger-zone" aria-labelledby="delete-manifest">
              <h2 id="delete-manifest">
                Delete this {isIndexMediaType(data.mediaType) ? "index" : "manifest"}
              </h2>
              <p>
                Deletes the manifest <code>{shortDigest(data.digest)}</code>
                {data.tags.length ? (
                  <>
                    {" "}
                    and {data.tags.length === 1 ? "its tag" : `all ${data.tags.length} tags on it`}:{" "}
                    <strong>{data.tags.join(", ")}</strong>
                  </>
                ) : null}
                . To remove a single tag only, delete the tag from the{" "}
                <Link href={repositoryPath(name)}>repository page</Link>.
              </p>
              <button type="button" class="danger" onClick={() => setConfirming(true)}>
                Delete manifest…
              </button>
            </section>
          ) : (
            <DeleteUnavailable me={me} />
          )}
          {confirming ? (
            <ConfirmDialog
              title={`Delete manifest ${shortDigest(data.digest)}?`}
              action="Delete manifest"
              onClose={() => setConfirming(false)}
              onConfirm={async () => {
                await api.deleteManifest(name, data.digest);
                navigate(repositoryPath(name));
              }}
            >
              <p>
                <code class="wrap">
                  {name}@{data.digest}
                </code>{" "}
                will be deleted
                {data.tags.length ? (
                  <>
                    , and with it the {data.tags.length === 1 ? "tag" : "tags"}{" "}
                    <strong>{data.tags.join(", ")}</strong>
                  </>
                ) : null}
                . Clients that pull it by digest will get an error.
              </p>
              {data.parents.length ? (
                <p class="warning">
                  It is listed by {data.parents.length} index(es) in this repository; they will point at a
                  missing manifest.
                </p>
              ) : null}
            </ConfirmDialog>
          ) : null}
        </>
      )}
    </div>
  );
}
