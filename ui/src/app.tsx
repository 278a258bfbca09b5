import { useCallback, useEffect, useState } from "preact/hooks";
import { ApiError, api, forgetCredentials, type WhoAmI } from "./api.ts";
import { parseRoute } from "./lib/routes.ts";
import { EventsPage } from "./pages/events.tsx";
import { ImagePage } from "./pages/image.tsx";
import { LoginPage } from "./pages/login.tsx";
import { RepositoriesPage } from "./pages/repositories.tsx";
import { RepositoryPage } from "./pages/repository.tsx";
import { StoragePage } from "./pages/storage.tsx";
import { Link, navigate, useLocation } from "./router.tsx";
import { SessionContext } from "./state.ts";
import { ThemeToggle } from "./theme.tsx";

function Header({ me, onLogout, path }: { me: WhoAmI | null; onLogout: () => void; path: string }) {
  const inRepos = path === "/" || path.startsWith("/r/");
  return (
    <header class="topbar">
      <div class="topbar-inner">
        <Link href="/" class="brand" aria-label="Berth, all repositories">
          <svg viewBox="0 0 32 32" width="26" height="26" aria-hidden="true">
            <rect x="2" y="2" width="28" height="28" rx="7" fill="var(--accent)" />
            <path d="M8 19h16l-3 5H11z M10 12h5v5h-5z M17 9h5v8h-5z" fill="var(--accent-contrast)" />
          </svg>
          <span>Berth</span>
        </Link>
        <nav class="mainnav" aria-label="Main">
          <Link href="/" aria-current={inRepos ? "page" : undefined}>
            Repositories
          </Link>
          <Link href="/storage" aria-current={path === "/storage" ? "page" : undefined}>
            Storage
          </Link>
          {me?.admin && me.notifications > 0 ? (
            <Link href="/events" aria-current={path === "/events" ? "page" : undefined}>
              Events
            </Link>
          ) : null}
        </nav>
        <div class="topbar-actions">
          <ThemeToggle />
          {me && me.auth !== "none" ? (
            me.user ? (
              <span class="user">
                <span class="user-name" title={`Logged in as ${me.user}`} data-testid="user-name">
                  {me.user}
                </span>
                <button type="button" class="link-button" onClick={onLogout}>
                  Log out
                </button>
              </span>
            ) : (
              <Link href={`/login?next=${encodeURIComponent(path)}`} class="button primary small">
                Log in
              </Link>
            )
          ) : null}
        </div>
      </div>
    </header>
  );
}

function NotFound({ path }: { path: string }) {
  return (
    <div class="state">
      <h1>Page not found</h1>
      <p>
        There is no page at <code>{path}</code>.
      </p>
      <p>
        <Link href="/">Back to repositories</Link>
      </p>
    </div>
  );
}

export function App() {
  const loc = useLocation();
  const [me, setMe] = useState<WhoAmI | null>(null);
  const [bootError, setBootError] = useState<unknown>(null);

  const refresh = useCallback(async () => {
    try {
      setMe(await api.whoami());
      setBootError(null);
    } catch (err) {
      if (err instanceof ApiError && err.unauthorized) {
        // Stored credentials no longer work (password changed, user removed): continue anonymously.
        forgetCredentials();
        try {
          setMe(await api.whoami());
          setBootError(null);
          return;
        } catch (again) {
          setBootError(again);
          return;
        }
      }
      setBootError(err);
    }
  }, []);

  useEffect(() => {
    void refresh();
  }, [refresh]);

  const logout = useCallback(() => {
    forgetCredentials();
    void refresh().then(() => navigate("/"));
  }, [refresh]);

  const route = parseRoute(loc.path);
  let page = null;
  switch (route.page) {
    case "repositories":
      page = <RepositoriesPage />;
      break;
    case "repository":
      page = <RepositoryPage key={route.name} name={route.name} />;
      break;
    case "image":
      page = (
        <ImagePage key={`${route.name}@${route.reference}`} name={route.name} reference={route.reference} />
      );
      break;
    case "storage":
      page = <StoragePage />;
      break;
    case "events":
      page = <EventsPage />;
      break;
    case "login":
      page = <LoginPage />;
      break;
    default:
      page = <NotFound path={route.path} />;
  }

  return (
    <SessionContext.Provider value={{ me, refresh, logout }}>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <Header me={me} onLogout={logout} path={loc.path} />
      <main id="main" tabIndex={-1}>
        {bootError && !me ? (
          <div class="banner error" role="alert">
            Berth did not answer: {(bootError as Error).message}{" "}
            <button type="button" onClick={() => void refresh()}>
              Try again
            </button>
          </div>
        ) : null}
        {page}
      </main>
      <footer class="footer">
        <span>Berth container registry</span>
        <span class="muted">
          Registry API at <code>/v2/</code>, UI API at <code>/api/v1/</code>
        </span>
      </footer>
    </SessionContext.Provider>
  );
}
