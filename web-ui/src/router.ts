// Client-side routes under /ui/ (the server answers every route with index.html).

import { useEffect, useState } from 'preact/hooks';

export const BASE = '/ui';

export type Page = 'overview' | 'service' | 'entities' | 'deploy' | 'cluster' | 'audit' | 'schedules' | 'not-found';

export interface Route {
  page: Page;
  /** The service of /services/{name}. */
  service?: string;
  query: URLSearchParams;
}

export function parseRoute(pathname: string, search: string): Route {
  const query = new URLSearchParams(search);
  let path = pathname.startsWith(BASE) ? pathname.slice(BASE.length) : pathname;
  path = path.replace(/\/+$/, '') || '/';
  if (path === '/') return { page: 'overview', query };
  if (path === '/deploy') return { page: 'deploy', query };
  if (path === '/cluster') return { page: 'cluster', query };
  if (path === '/audit') return { page: 'audit', query };
  if (path === '/schedules') return { page: 'schedules', query };
  if (path === '/entities') return { page: 'entities', query };
  const service = /^\/services\/([^/]+)$/.exec(path);
  if (service) return { page: 'service', service: decodeURIComponent(service[1]), query };
  return { page: 'not-found', query };
}

export function navigate(path: string): void {
  history.pushState(null, '', BASE + path);
  dispatchEvent(new PopStateEvent('popstate'));
}

export function useRoute(): Route {
  const read = () => parseRoute(location.pathname, location.search);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const onChange = () => setRoute(read());
    addEventListener('popstate', onChange);
    return () => removeEventListener('popstate', onChange);
  }, []);
  return route;
}
