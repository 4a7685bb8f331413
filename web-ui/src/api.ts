// The one way the dashboard talks to the management API: adds the bearer token (kept
// in this tab's session storage, never in a URL), turns error bodies into ApiError
// (with the field a form should mark), and tells the app when the API is unreachable
// or refuses the token.

import type { Access } from './types';

const TOKEN_KEY = 'strata.token';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

export interface ApiListener {
  /** The API answered (true) or could not be reached (false). */
  reachable(ok: boolean): void;
  /** The API wants a (new) token. */
  unauthorized(): void;
}

let listener: ApiListener = { reachable: () => {}, unauthorized: () => {} };

export function setApiListener(next: ApiListener): void {
  listener = next;
}

export function getToken(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(token: string | null): void {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused (private mode): the token lives only as long as the page.
  }
}

export function authHeaders(): Record<string, string> {
  const token = getToken();
  return token ? { authorization: `Bearer ${token}` } : {};
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  let response: Response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method,
      headers: {
        ...authHeaders(),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    listener.reachable(false);
    throw new ApiError(0, 'unreachable', 'The Strata API cannot be reached.');
  }
  // A proxy in front of a stopped API answers 502/504: that is unreachable too.
  listener.reachable(response.status !== 502 && response.status !== 504);
  if (response.status === 401) listener.unauthorized();
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!response.ok) {
    const error = (parsed as { error?: { code?: string; message?: string; field?: string } } | null)?.error;
    throw new ApiError(
      response.status,
      error?.code ?? 'http_error',
      error?.message ?? `The API answered HTTP ${response.status}.`,
      error?.field,
    );
  }
  return parsed as T;
}

export const api = {
  get: <T>(path: string) => request<T>('GET', path),
  post: <T>(path: string, body: unknown) => request<T>('POST', path, body),
  patch: <T>(path: string, body: unknown) => request<T>('PATCH', path, body),
  delete: (path: string) => request<void>('DELETE', path),
  access: () => request<{ access: Access }>('GET', '/access'),
};

export function encode(segment: string): string {
  return encodeURIComponent(segment);
}
