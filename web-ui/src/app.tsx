// The dashboard's shell: signs in when the API wants a token, keeps the event stream
// open (and says when it is lost), shows a banner while the API cannot be reached,
// and routes to the pages.

import { useEffect, useReducer, useState } from 'preact/hooks';

import { api, ApiError, authHeaders, getToken, setApiListener, setToken } from './api';
import { Link } from './components/ui';
import { AppContext } from './context';
import { actionFor, initialLive, reduceLive } from './live';
import { AuditLogPage } from './pages/audit';
import { SchedulesPage } from './pages/schedules';
import { ClusterPage } from './pages/cluster';
import { DeployPage } from './pages/deploy';
import { EntitiesPage } from './pages/entities';
import { Overview } from './pages/overview';
import { ServicePage } from './pages/service';
import { useRoute, type Page } from './router';
import { openStream } from './sse';
import type { Access } from './types';

type Session = { state: 'checking' } | { state: 'signed-out'; refused: boolean } | { state: 'signed-in'; access: Access };

export function App() {
  const [session, setSession] = useState<Session>({ state: 'checking' });
  const [reachable, setReachable] = useState(true);
  const [live, dispatch] = useReducer(reduceLive, initialLive);

  const check = () =>
    api.access().then(
      ({ access }) => setSession({ state: 'signed-in', access }),
      (error: unknown) => {
        // A 401 has already signed out (the API listener); anything else: try again
        // until the API answers.
        if (!(error instanceof ApiError && error.status === 401)) setTimeout(check, 2000);
      },
    );

  useEffect(() => {
    setApiListener({
      reachable: setReachable,
      unauthorized: () => {
        setSession({ state: 'signed-out', refused: getToken() !== null });
        setToken(null);
      },
    });
    void check();
  }, []);

  const signedIn = session.state === 'signed-in';
  useEffect(() => {
    if (!signedIn) return;
    dispatch({ type: 'reset' });
    const stop = openStream({
      url: (since) => `/api/v1/events${since ? `?since=${encodeURIComponent(since)}` : ''}`,
      headers: authHeaders,
      onMessage: (message) => {
        const action = actionFor(message);
        if (action) dispatch(action);
      },
      onState: (state) => dispatch({ type: 'state', state }),
      onUnauthorized: () => {
        setSession({ state: 'signed-out', refused: true });
        setToken(null);
      },
    });
    return stop;
  }, [signedIn]);

  return (
    <>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      {!reachable ? (
        <div class="banner banner-error" role="alert">
          The Strata API cannot be reached. Retrying; the page updates by itself when it is back.
        </div>
      ) : null}
      {session.state === 'signed-in' ? (
        <AppContext.Provider value={{ access: session.access, live }}>
          <Shell access={session.access} connection={live.connection} />
        </AppContext.Provider>
      ) : session.state === 'signed-out' ? (
        <TokenPrompt refused={session.refused} onSignedIn={check} />
      ) : (
        <main id="main" class="page">
          <p class="muted">Connecting to Strata…</p>
        </main>
      )}
    </>
  );
}

const NAV: { page: Page; href: string; label: string }[] = [
  { page: 'overview', href: '/', label: 'Services' },
  { page: 'entities', href: '/entities', label: 'Entities' },
  { page: 'cluster', href: '/cluster', label: 'Cluster' },
  { page: 'schedules', href: '/schedules', label: 'Schedules' },
  { page: 'audit', href: '/audit', label: 'Audit log' },
];

function Shell({ access, connection }: { access: Access; connection: string }) {
  const route = useRoute();
  useEffect(() => {
    const titles: Record<Page, string> = {
      overview: 'Services',
      service: route.service ?? 'Service',
      entities: 'Entity inspector',
      deploy: 'Deploy',
      cluster: 'Cluster',
      audit: 'Audit log',
      schedules: 'Schedules',
      'not-found': 'Not found',
    };
    document.title = `${titles[route.page]} · Strata`;
  }, [route.page, route.service]);
  const current = route.page === 'service' || route.page === 'deploy' ? 'overview' : route.page;
  return (
    <>
      <header class="topbar">
        <Link href="/" class="brand">
          <span class="brand-mark" aria-hidden="true" />
          Strata
        </Link>
        <nav aria-label="Main">
          <ul>
            {NAV.map((item) => (
              <li key={item.page}>
                <Link href={item.href} aria-current={current === item.page ? 'page' : undefined}>
                  {item.label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <div class="topbar-right">
          <span class={`live live-${connection}`} role="status" aria-live="polite">
            <span class="live-dot" aria-hidden="true" />
            {connection === 'live' ? 'live' : connection === 'lost' ? 'live updates lost, reconnecting…' : 'connecting…'}
          </span>
          {access === 'read_only' ? <span class="badge badge-readonly">read-only</span> : null}
          {getToken() ? (
            <button
              type="button"
              class="button button-small"
              onClick={() => {
                setToken(null);
                location.reload();
              }}
            >
              Sign out
            </button>
          ) : null}
        </div>
      </header>
      <main id="main">
        {route.page === 'overview' ? <Overview /> : null}
        {route.page === 'service' && route.service ? <ServicePage key={route.service} name={route.service} /> : null}
        {route.page === 'entities' ? <EntitiesPage query={route.query} /> : null}
        {route.page === 'deploy' ? <DeployPage /> : null}
        {route.page === 'cluster' ? <ClusterPage /> : null}
        {route.page === 'audit' ? <AuditLogPage /> : null}
        {route.page === 'schedules' ? <SchedulesPage /> : null}
        {route.page === 'not-found' ? (
          <div class="page">
            <h1>Not found</h1>
            <p>
              This page does not exist. <Link href="/">Go to the services</Link>
            </p>
          </div>
        ) : null}
      </main>
    </>
  );
}

function TokenPrompt({ refused, onSignedIn }: { refused: boolean; onSignedIn: () => void }) {
  const [value, setValue] = useState('');
  const submit = (event: Event) => {
    event.preventDefault();
    if (!value.trim()) return;
    setToken(value.trim());
    onSignedIn();
  };
  return (
    <main id="main" class="signin">
      <form class="card form" onSubmit={submit} aria-label="Sign in">
        <h1>Sign in to Strata</h1>
        <p>
          This API needs a token. <code>strata dev</code> prints its admin token when it starts (it is also in{' '}
          <code>.strata/admin-token</code>).
        </p>
        {refused ? (
          <p class="error-text" role="alert">
            That token was refused. Try again.
          </p>
        ) : null}
        <div class="field">
          <label for="token">API token</label>
          <input
            id="token"
            name="token"
            type="password"
            autoComplete="current-password"
            value={value}
            onInput={(event) => setValue((event.target as HTMLInputElement).value)}
            autoFocus
          />
        </div>
        <div class="form-actions">
          <button type="submit" class="button button-primary">
            Sign in
          </button>
        </div>
        <p class="hint">The token is kept in this tab only, and never put in a URL.</p>
      </form>
    </main>
  );
}
