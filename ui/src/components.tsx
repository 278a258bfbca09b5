/** Small shared pieces: copy buttons, digests, times, paging, dialogs, and loading/error/empty states. */
import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, type WhoAmI } from "./api.ts";
import { CheckIcon, CopyIcon } from "./icons.tsx";
import {
  formatAbsolute,
  formatBytes,
  formatBytesExact,
  formatCount,
  formatPlatforms,
  formatRelative,
  type Platform,
  shortDigest,
} from "./lib/format.ts";
import { Link } from "./router.tsx";

/**
 * Copies text. The Clipboard API needs a secure context (HTTPS or localhost); a registry reached over
 * plain HTTP on a LAN address is not one, so fall back to a hidden textarea and execCommand.
 */
export async function copyText(text: string): Promise<boolean> {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall through to the fallback
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

export function CopyButton({
  text,
  label = "Copy",
  title,
  class: cls,
}: {
  text: string;
  label?: string;
  title?: string;
  class?: string;
}) {
  const [state, setState] = useState<"idle" | "copied" | "failed">("idle");
  const timer = useRef<number | undefined>(undefined);
  useEffect(() => () => window.clearTimeout(timer.current), []);
  return (
    <button
      type="button"
      class={`copy ${cls ?? ""} ${state}`}
      title={title ?? `Copy ${text}`}
      aria-label={title ?? `${label}: ${text}`}
      data-copy={text}
      onClick={async () => {
        const ok = await copyText(text);
        setState(ok ? "copied" : "failed");
        window.clearTimeout(timer.current);
        timer.current = window.setTimeout(() => setState("idle"), 1800);
      }}
    >
      {state === "copied" ? <CheckIcon /> : <CopyIcon />}
      <span class="copy-label">
        {state === "copied" ? "Copied" : state === "failed" ? "Select & copy" : label}
      </span>
      <span class="sr-only" aria-live="polite">
        {state === "copied" ? "Copied to the clipboard" : ""}
      </span>
    </button>
  );
}

/** A command in a box with a copy button (docker pull ...). */
export function CommandBox({ command, label }: { command: string; label?: string }) {
  return (
    <div class="command" data-testid="command">
      {label ? <span class="command-label">{label}</span> : null}
      <code class="command-text">{command}</code>
      <CopyButton text={command} label="Copy" title="Copy the command" />
    </div>
  );
}

/** A short digest that shows the full one on hover and copies the full one. */
export function Digest({ digest, href, copy = true }: { digest: string; href?: string; copy?: boolean }) {
  const short = shortDigest(digest);
  return (
    <span class="digest">
      {href ? (
        <Link href={href} class="mono" title={digest}>
          {short}
        </Link>
      ) : (
        <code class="mono" title={digest}>
          {short}
        </code>
      )}
      {copy ? <CopyButton text={digest} label="" title="Copy the full digest" class="icon-only" /> : null}
    </span>
  );
}

export function Time({ value }: { value: number | string | null | undefined }) {
  const text = formatRelative(value);
  if (text === "—") return <span class="muted">—</span>;
  const abs = formatAbsolute(value);
  return (
    <time
      dateTime={new Date(typeof value === "string" ? Date.parse(value) : (value as number)).toISOString()}
      title={abs}
    >
      {text}
    </time>
  );
}

export function Size({ bytes }: { bytes: number | null | undefined }) {
  return <span title={formatBytesExact(bytes)}>{formatBytes(bytes)}</span>;
}

export function Platforms({ platforms }: { platforms: Platform[] }) {
  const list = formatPlatforms(platforms);
  if (list.length === 0) return <span class="muted">—</span>;
  return (
    <span class="chips">
      {list.map((p) => (
        <span class="chip" key={p}>
          {p}
        </span>
      ))}
    </span>
  );
}

export function Pager({
  page,
  limit,
  total,
  onPage,
  noun = "items",
}: {
  page: number;
  limit: number;
  total: number;
  onPage: (page: number) => void;
  noun?: string;
}) {
  const pages = Math.max(1, Math.ceil(total / limit));
  const first = total === 0 ? 0 : (page - 1) * limit + 1;
  const last = Math.min(total, page * limit);
  return (
    <nav class="pager" aria-label={`Pages of ${noun}`}>
      <span class="pager-info" aria-live="polite">
        {total === 0
          ? `No ${noun}`
          : `${formatCount(first)}–${formatCount(last)} of ${formatCount(total)} ${noun}`}
      </span>
      {pages > 1 ? (
        <span class="pager-buttons">
          <button type="button" onClick={() => onPage(1)} disabled={page <= 1} aria-label="First page">
            «
          </button>
          <button
            type="button"
            onClick={() => onPage(page - 1)}
            disabled={page <= 1}
            aria-label="Previous page"
          >
            ‹ Prev
          </button>
          <span class="pager-page">
            Page {formatCount(page)} of {formatCount(pages)}
          </span>
          <button
            type="button"
            onClick={() => onPage(page + 1)}
            disabled={page >= pages}
            aria-label="Next page"
          >
            Next ›
          </button>
          <button type="button" onClick={() => onPage(pages)} disabled={page >= pages} aria-label="Last page">
            »
          </button>
        </span>
      ) : null}
    </nav>
  );
}

export function Loading({ label = "Loading…" }: { label?: string }) {
  return (
    <div class="loading" role="status" aria-live="polite">
      <span class="spinner" aria-hidden="true" />
      {label}
    </div>
  );
}

export function ErrorState({ error, retry }: { error: unknown; retry?: () => void }) {
  const err = error instanceof ApiError ? error : null;
  const here = `${window.location.pathname}${window.location.search}`;
  let title = "Something went wrong";
  let body: ComponentChildren = err?.message ?? String((error as Error)?.message ?? error);
  if (err?.unauthorized) {
    title = "Log in to see this";
    body = (
      <>
        This registry needs you to log in first.{" "}
        <Link href={`/login?next=${encodeURIComponent(here)}`}>Log in</Link>
      </>
    );
  } else if (err?.forbidden) {
    title = "Not allowed";
    body = "Your account may not see this. Ask an administrator for pull access.";
  } else if (err?.notFound) {
    title = "Not found";
  } else if (err?.status === 0) {
    title = "Berth cannot be reached";
  }
  return (
    <div class="state error-state" role="alert">
      <h2>{title}</h2>
      <p>{body}</p>
      {err && err.code !== "UNKNOWN" && err.status !== 0 ? <p class="muted small">Code: {err.code}</p> : null}
      <p class="state-actions">
        {retry && !err?.notFound && !err?.unauthorized ? (
          <button type="button" onClick={retry}>
            Try again
          </button>
        ) : null}
        {err?.notFound ? <Link href="/">Back to repositories</Link> : null}
      </p>
    </div>
  );
}

export function EmptyState({ title, children }: { title: string; children?: ComponentChildren }) {
  return (
    <div class="state empty-state">
      <h2>{title}</h2>
      {children}
    </div>
  );
}

/**
 * Why there is no delete button, when the registry refuses every delete: deletes are off
 * (storage.delete.enabled, off by default as in registry:2) or the registry is read-only.
 */
export function DeleteUnavailable({ me }: { me: WhoAmI | null }) {
  if (!me || me.deleteEnabled) return null;
  return (
    <p class="muted small delete-unavailable" data-testid="delete-unavailable">
      {me.readOnly ? (
        "Deleting is unavailable: the registry is in read-only mode."
      ) : (
        <>
          Deleting is turned off on this registry (<code>storage.delete.enabled</code> is false, the default,
          as in registry:2). An operator can turn it on with <code>storage.delete.enabled: true</code> or{" "}
          <code>REGISTRY_STORAGE_DELETE_ENABLED=true</code>.
        </>
      )}
    </p>
  );
}

/**
 * A modal confirmation (native <dialog>: focus stays inside, Escape cancels). `confirmText`, when given,
 * must be typed before the action is enabled (for deleting a whole repository).
 */
export function ConfirmDialog({
  title,
  children,
  action,
  confirmText,
  onConfirm,
  onClose,
}: {
  title: string;
  children: ComponentChildren;
  action: string;
  confirmText?: string;
  onConfirm: () => Promise<void>;
  onClose: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const [typed, setTyped] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
    return () => dialog?.close();
  }, []);
  const ready = !confirmText || typed === confirmText;
  return (
    <dialog
      ref={ref}
      class="dialog"
      aria-labelledby="dialog-title"
      onCancel={(e) => {
        e.preventDefault();
        if (!busy) onClose();
      }}
    >
      <form
        method="dialog"
        onSubmit={async (e) => {
          e.preventDefault();
          if (!ready || busy) return;
          setBusy(true);
          setError(null);
          try {
            await onConfirm();
            onClose();
          } catch (err) {
            setError((err as Error).message);
            setBusy(false);
          }
        }}
      >
        <h2 id="dialog-title">{title}</h2>
        <div class="dialog-body">{children}</div>
        {confirmText ? (
          <label class="field">
            <span>
              Type <code>{confirmText}</code> to confirm
            </span>
            <input
              type="text"
              value={typed}
              autoComplete="off"
              spellcheck={false}
              onInput={(e) => setTyped((e.target as HTMLInputElement).value)}
            />
          </label>
        ) : null}
        {error ? (
          <p class="form-error" role="alert">
            {error}
          </p>
        ) : null}
        <div class="dialog-actions">
          <button type="button" onClick={onClose} disabled={busy}>
            Cancel
          </button>
          <button type="submit" class="danger" disabled={!ready || busy}>
            {busy ? "Deleting…" : action}
          </button>
        </div>
      </form>
    </dialog>
  );
}

/** Document title for the page. */
export function useTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} · Berth` : "Berth";
  }, [title]);
}
