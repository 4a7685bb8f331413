// What the event stream has told the dashboard: the registry's recent history (scale
// decisions with their reasons, instance changes), the leader, and whether the stream
// is connected. A pure reducer, unit-tested; the app feeds it stream messages.

import type { RegistryEvent } from './types';
import type { SseMessage, StreamState } from './sse';

/** How many registry events the page keeps (the server keeps 1000). */
export const EVENT_LIMIT = 1000;

export interface LiveState {
  connection: StreamState;
  /** Oldest first, unique by id. */
  events: RegistryEvent[];
  leader: number | null;
  term: number | null;
  /** Counts registry events received; pages refetch when it moves. */
  version: number;
}

export type LiveAction =
  | { type: 'state'; state: StreamState }
  | { type: 'registry'; event: RegistryEvent }
  | { type: 'leader'; leader: number | null; term: number }
  | { type: 'reset' };

export const initialLive: LiveState = { connection: 'connecting', events: [], leader: null, term: null, version: 0 };

export function reduceLive(state: LiveState, action: LiveAction): LiveState {
  switch (action.type) {
    case 'state':
      return state.connection === action.state ? state : { ...state, connection: action.state };
    case 'registry': {
      const event = action.event;
      const last = state.events[state.events.length - 1];
      let events: RegistryEvent[];
      if (!last || event.id > last.id) {
        events = [...state.events, event];
      } else if (state.events.some((known) => known.id === event.id)) {
        return state;
      } else {
        events = [...state.events, event].sort((a, b) => a.id - b.id);
      }
      if (events.length > EVENT_LIMIT) events = events.slice(events.length - EVENT_LIMIT);
      return { ...state, events, version: state.version + 1 };
    }
    case 'leader':
      return { ...state, leader: action.leader, term: action.term };
    case 'reset':
      return initialLive;
  }
}

/** Turns one stream message into an action, or null for messages the page ignores. */
export function actionFor(message: SseMessage): LiveAction | null {
  try {
    if (message.event === 'registry') {
      const event = JSON.parse(message.data) as RegistryEvent;
      return typeof event.id === 'number' ? { type: 'registry', event } : null;
    }
    if (message.event === 'leader') {
      const data = JSON.parse(message.data) as { leader: number | null; term: number };
      return { type: 'leader', leader: data.leader ?? null, term: data.term };
    }
  } catch {
    return null;
  }
  return null;
}

/** Events about one service, newest first: its scale decisions and instance changes. */
export function serviceTimeline(events: RegistryEvent[], service: string, limit = 50): RegistryEvent[] {
  const out: RegistryEvent[] = [];
  for (let i = events.length - 1; i >= 0 && out.length < limit; i--) {
    if (events[i].service === service) out.push(events[i]);
  }
  return out;
}
