/**
 * A small client-side router over the History API: pages change without a full reload, the back and
 * forward buttons work, and every page has a URL that can be shared or reloaded.
 */
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";

export interface Location {
  path: string;
  search: URLSearchParams;
  /** Bumped on every navigation, including to the same URL. */
  key: number;
}

type Listener = (loc: Location) => void;
const listeners = new Set<Listener>();
let counter = 0;

function current(): Location {
  return {
    path: window.location.pathname,
    search: new URLSearchParams(window.location.search),
    key: counter,
  };
}

function emit(): void {
  counter++;
  const loc = current();
  for (const l of listeners) l(loc);
}

window.addEventListener("popstate", () => emit());

/**
 * Goes to `to` (a path with an optional query). `replace` rewrites the current history entry, for state
 * such as a search box that should not fill the history.
 */
export function navigate(to: string, options: { replace?: boolean } = {}): void {
  const url = new URL(to, window.location.origin);
  const target = url.pathname + url.search + url.hash;
  const here = window.location.pathname + window.location.search + window.location.hash;
  if (options.replace) {
    window.history.replaceState(null, "", target);
  } else if (target !== here) {
    window.history.pushState(null, "", target);
    window.scrollTo(0, 0);
    // Tell assistive technology that the page changed: move focus to the main region.
    queueMicrotask(() => document.getElementById("main")?.focus({ preventScroll: true }));
  }
  emit();
}

/** Updates query parameters of the current URL (empty values are removed). */
export function setQuery(
  changes: Record<string, string | number | null | undefined>,
  options: { replace?: boolean } = {},
): void {
  const params = new URLSearchParams(window.location.search);
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === undefined || v === "") params.delete(k);
    else params.set(k, String(v));
  }
  const qs = params.toString();
  navigate(`${window.location.pathname}${qs ? `?${qs}` : ""}`, options);
}

export function useLocation(): Location {
  const [loc, setLoc] = useState<Location>(current);
  useEffect(() => {
    const l: Listener = (next) => setLoc(next);
    listeners.add(l);
    return () => {
      listeners.delete(l);
    };
  }, []);
  return loc;
}

interface LinkProps {
  href: string;
  children?: ComponentChildren;
  class?: string;
  title?: string;
  target?: string;
  "aria-label"?: string;
  "aria-current"?: "page";
  onClick?: (event: MouseEvent) => void;
}

/** An <a> that navigates in place; modified clicks (new tab, download) keep the browser's behaviour. */
export function Link({ href, onClick, ...rest }: LinkProps) {
  return (
    <a
      href={href}
      onClick={(event) => {
        onClick?.(event);
        if (
          event.defaultPrevented ||
          event.button !== 0 ||
          event.metaKey ||
          event.ctrlKey ||
          event.shiftKey ||
          event.altKey ||
          rest.target
        ) {
          return;
        }
        event.preventDefault();
        navigate(href);
      }}
      {...rest}
    />
  );
}
