import { useEffect } from "preact/hooks";
import { api } from "../api.ts";
import { EmptyState, ErrorState, Loading, Time, useTitle } from "../components.tsx";
import { formatCount } from "../lib/format.ts";
import { useLoad, useSession } from "../state.ts";

const REFRESH_MS = 5_000;

/**
 * Notification endpoints (issue 14, GET /api/v1/events): each one's state, backlog and the latest
 * deliveries, refreshed every few seconds. Redelivery is `berth events redeliver` or the API.
 */
export function EventsPage() {
  useTitle("Events");
  const { me } = useSession();
  const { data, error, loading, reload } = useLoad(() => api.events({ limit: 20 }), [me?.user]);
  useEffect(() => {
    const timer = setInterval(reload, REFRESH_MS);
    return () => clearInterval(timer);
  }, [reload]);

  return (
    <div class="page">
      <div class="page-head">
        <h1>Events</h1>
      </div>
      {error ? (
        <ErrorState error={error} retry={reload} />
      ) : !data ? (
        <Loading />
      ) : data.endpoints.length === 0 ? (
        <EmptyState title="No notification endpoints">
          <p>
            Add endpoints under <code>notifications.endpoints</code> in the configuration.
          </p>
        </EmptyState>
      ) : (
        <>
          <section aria-labelledby="endpoints">
            <div class="section-head">
              <h2 id="endpoints">Endpoints</h2>
            </div>
            <div class={`table-wrap ${loading ? "stale" : ""}`}>
              <table class="list" data-testid="endpoints-table">
                <thead>
                  <tr>
                    <th scope="col">Endpoint</th>
                    <th scope="col">State</th>
                    <th scope="col" class="num">
                      Waiting
                    </th>
                    <th scope="col" class="num">
                      Delivered
                    </th>
                    <th scope="col">Last success</th>
                    <th scope="col">Last error</th>
                  </tr>
                </thead>
                <tbody>
                  {data.endpoints.map((e) => (
                    <tr key={e.name} data-testid={`endpoint-${e.name}`}>
                      <th scope="row" class="name-cell">
                        {e.name}
                        <div class="muted small">{e.url}</div>
                      </th>
                      <td data-label="State" data-testid="endpoint-state">
                        {e.disabled ? (
                          "disabled"
                        ) : e.failing ? (
                          <strong class="danger-text">
                            failing since <Time value={e.failingSince} />
                          </strong>
                        ) : e.failures > 0 ? (
                          `retrying (${e.failures} ${e.failures === 1 ? "failure" : "failures"})`
                        ) : (
                          "ok"
                        )}
                      </td>
                      <td class="num" data-label="Waiting" data-testid="endpoint-backlog">
                        {formatCount(e.backlog)}
                      </td>
                      <td class="num" data-label="Delivered">
                        {formatCount(e.delivered)}
                      </td>
                      <td data-label="Last success">
                        {e.lastSuccessAt ? <Time value={e.lastSuccessAt} /> : "never"}
                      </td>
                      <td data-label="Last error">{e.lastError ?? "—"}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </section>
          <section aria-labelledby="deliveries">
            <div class="section-head">
              <h2 id="deliveries">Recent deliveries</h2>
            </div>
            {data.deliveries.length === 0 ? (
              <p class="muted">Nothing delivered yet.</p>
            ) : (
              <div class="table-wrap">
                <table class="list" data-testid="deliveries-table">
                  <thead>
                    <tr>
                      <th scope="col">When</th>
                      <th scope="col">Endpoint</th>
                      <th scope="col" class="num">
                        Events
                      </th>
                      <th scope="col">Result</th>
                      <th scope="col" class="num">
                        Time
                      </th>
                    </tr>
                  </thead>
                  <tbody>
                    {data.deliveries.map((d) => (
                      <tr key={d.id}>
                        <td data-label="When">
                          <Time value={d.at} />
                        </td>
                        <td data-label="Endpoint">{d.endpoint}</td>
                        <td class="num" data-label="Events">
                          {formatCount(d.events)}
                        </td>
                        <td data-label="Result">
                          {d.ok ? (
                            `${d.status}`
                          ) : (
                            <span class="danger-text">{d.error ?? `HTTP ${d.status}`}</span>
                          )}
                        </td>
                        <td class="num" data-label="Time">
                          {d.ms} ms
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            )}
            <p class="muted small explain">
              Events wait in Berth's database until each endpoint has answered; to send some again, run{" "}
              <code>berth events redeliver</code>.
            </p>
          </section>
        </>
      )}
    </div>
  );
}
