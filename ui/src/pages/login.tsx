import { useState } from "preact/hooks";
import { ApiError, api } from "../api.ts";
import { useTitle } from "../components.tsx";
import { Link, navigate, useLocation } from "../router.tsx";
import { useSession } from "../state.ts";

/** Where to go after logging in: only paths of this site. */
function safeNext(next: string | null): string {
  return next?.startsWith("/") && !next.startsWith("//") && !next.startsWith("/login") ? next : "/";
}

export function LoginPage() {
  useTitle("Log in");
  const loc = useLocation();
  const { me, refresh } = useSession();
  const [user, setUser] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const next = safeNext(loc.search.get("next"));

  if (me && me.auth === "none") {
    return (
      <div class="page narrow">
        <h1>No login needed</h1>
        <p>This registry runs without authentication: everyone may pull and push.</p>
        <p>
          <Link href="/">Go to the repositories</Link>
        </p>
      </div>
    );
  }

  return (
    <div class="page narrow">
      <h1>Log in</h1>
      {me?.user ? (
        <p class="banner ok">
          You are logged in as <strong>{me.user}</strong>. Log in again to switch accounts.
        </p>
      ) : (
        <p class="muted">
          Use the same user name and password as for <code>docker login</code>.
        </p>
      )}
      <form
        class="login-form"
        onSubmit={async (e) => {
          e.preventDefault();
          if (busy) return;
          setBusy(true);
          setError(null);
          try {
            await api.login(user.trim(), password);
            await refresh();
            navigate(next);
          } catch (err) {
            setError(
              err instanceof ApiError && (err.unauthorized || err.forbidden)
                ? "Wrong user name or password."
                : err instanceof ApiError && err.status === 429
                  ? "Too many attempts. Wait a little and try again."
                  : `Could not log in: ${(err as Error).message}`,
            );
            setBusy(false);
          }
        }}
      >
        <label class="field">
          <span>User name</span>
          <input
            name="username"
            autoComplete="username"
            value={user}
            required
            onInput={(e) => setUser((e.target as HTMLInputElement).value)}
          />
        </label>
        <label class="field">
          <span>Password</span>
          <input
            name="password"
            type="password"
            autoComplete="current-password"
            value={password}
            required
            onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
          />
        </label>
        {error ? (
          <p class="form-error" role="alert">
            {error}
          </p>
        ) : null}
        <button type="submit" class="primary" disabled={busy}>
          {busy ? "Logging in…" : "Log in"}
        </button>
        <p class="muted small">
          Your credentials are kept in this browser tab only, until you log out or close it.
        </p>
      </form>
    </div>
  );
}
