import { describe, expect, it } from 'vitest';

import { SseParser } from '../src/sse';

describe('SseParser', () => {
  it('parses events split anywhere across chunks', () => {
    const text = 'event: registry\nid: 7\ndata: {"a":1}\n\n: keep-alive\n\nevent: leader\ndata: x\n\n';
    for (let split = 0; split <= text.length; split++) {
      const parser = new SseParser();
      const messages = [...parser.push(text.slice(0, split)), ...parser.push(text.slice(split))];
      expect(messages).toEqual([
        { event: 'registry', data: '{"a":1}', id: '7' },
        { event: 'leader', data: 'x', id: '7' },
      ]);
    }
  });

  it('joins multi-line data and accepts CRLF and CR line ends', () => {
    const parser = new SseParser();
    expect(parser.push('data: one\r\ndata: two\r\n\r\ndata:three\r\r')).toEqual([{ event: 'message', data: 'one\ntwo' }]);
    // A CR at the end of a chunk may be half of a CRLF: it is decided by the next chunk.
    expect(parser.push('data: four\n\n')).toEqual([
      { event: 'message', data: 'three' },
      { event: 'message', data: 'four' },
    ]);
  });

  it('dispatches nothing for an event without data', () => {
    const parser = new SseParser();
    expect(parser.push('event: registry\n\ndata: y\n\n')).toEqual([{ event: 'message', data: 'y' }]);
  });
});
