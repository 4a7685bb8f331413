// What every page may read: the token's rights and the live event state.

import { createContext } from 'preact';
import { useContext } from 'preact/hooks';

import { initialLive, type LiveState } from './live';
import type { Access } from './types';

export interface AppContextValue {
  access: Access;
  live: LiveState;
}

export const AppContext = createContext<AppContextValue>({ access: 'read_only', live: initialLive });

export function useApp(): AppContextValue {
  return useContext(AppContext);
}

export function useCanWrite(): boolean {
  return useApp().access === 'admin';
}
