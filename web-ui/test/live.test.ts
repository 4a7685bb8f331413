import { describe, expect, it } from 'vitest';

import { actionFor, EVENT_LIMIT, initialLive, reduceLive, serviceTimeline } from '../src/live';
import type { RegistryEvent } from '../src/types';

function event(id: number, service: string | null = 'cart', kind: RegistryEvent['kind'] = 'scale'): RegistryEvent {
  return { id, at_ms: id * 1000, kind, service, instance: null, reason: `event ${id}` };
}

describe('reduceLive', () => {
  it('appends registry events in id order, once each', () => {
    let state = reduceLive(initialLive, { type: 'registry', event: event(1) });
    state = reduceLive(state, { type: 'registry', event: event(3) });
    state = reduceLive(state, { type: 'registry', event: event(2) });
    const again = reduceLive(state, { type: 'registry', event: event(3) });
    expect(again).toBe(state);
    expect(state.events.map((e) => e.id)).toEqual([1, 2, 3]);
    expect(state.version).toBe(3);
  });

  it('keeps a bounded history', () => {
    let state = initialLive;
    for (let id = 1; id <= EVENT_LIMIT + 5; id++) state = reduceLive(state, { type: 'registry', event: event(id) });
    expect(state.events.length).toBe(EVENT_LIMIT);
    expect(state.events[0].id).toBe(6);
  });

  it('tracks the connection and the leader', () => {
    let state = reduceLive(initialLive, { type: 'state', state: 'live' });
    expect(state.connection).toBe('live');
    expect(reduceLive(state, { type: 'state', state: 'live' })).toBe(state);
    state = reduceLive(state, { type: 'state', state: 'lost' });
    expect(state.connection).toBe('lost');
    state = reduceLive(state, { type: 'leader', leader: 2, term: 7 });
    expect([state.leader, state.term]).toEqual([2, 7]);
    expect(reduceLive(state, { type: 'reset' })).toEqual(initialLive);
  });
});

describe('actionFor', () => {
  it('reads registry and leader messages and ignores the rest', () => {
    expect(actionFor({ event: 'registry', data: JSON.stringify(event(4)) })).toEqual({ type: 'registry', event: event(4) });
    expect(actionFor({ event: 'leader', data: '{"observer":1,"leader":1,"term":3}' })).toEqual({
      type: 'leader',
      leader: 1,
      term: 3,
    });
    expect(actionFor({ event: 'leader', data: '{"observer":1,"leader":null,"term":4}' })).toEqual({
      type: 'leader',
      leader: null,
      term: 4,
    });
    expect(actionFor({ event: 'registry', data: 'not json' })).toBeNull();
    expect(actionFor({ event: 'message', data: '{}' })).toBeNull();
  });
});

describe('serviceTimeline', () => {
  it('lists one service, newest first, bounded', () => {
    const events = [event(1), event(2, 'other'), event(3), event(4, null, 'cluster'), event(5)];
    expect(serviceTimeline(events, 'cart').map((e) => e.id)).toEqual([5, 3, 1]);
    expect(serviceTimeline(events, 'cart', 2).map((e) => e.id)).toEqual([5, 3]);
  });
});
