import { describe, expect, it } from 'vitest';

import { keepLatest, parseLogLine, splitLines } from '../src/logs';
import { loadAudit } from '../src/pages/audit';
import type { AuditPage, AuditRecord } from '../src/types';

describe('splitLines', () => {
  it('hands back whole lines and keeps the unfinished one for the next chunk', () => {
    const first = splitLines('', '{"a":1}\n{"b"');
    expect(first).toEqual({ lines: ['{"a":1}'], rest: '{"b"' });
    const second = splitLines(first.rest, ':2}\n\n');
    expect(second).toEqual({ lines: ['{"b":2}'], rest: '' });
    expect(splitLines('', 'no end yet')).toEqual({ lines: [], rest: 'no end yet' });
  });
});

describe('keepLatest', () => {
  it('drops the oldest lines past the limit', () => {
    expect(keepLatest([1, 2, 3], [4, 5], 4)).toEqual([2, 3, 4, 5]);
    expect(keepLatest([1], [2], 4)).toEqual([1, 2]);
  });
});

describe('parseLogLine', () => {
  it('reads a log line and skips anything else', () => {
    const line = { instance: 'cart-0a1b2c3d', process: 'function', at_ms: 1, at: '1970-01-01T00:00:00.001Z', line: 'hi' };
    expect(parseLogLine(JSON.stringify(line))).toEqual(line);
    expect(parseLogLine('{"error":{}}')).toBeNull();
    expect(parseLogLine('not json')).toBeNull();
  });
});

describe('loadAudit', () => {
  it('reads every page and puts the newest first', async () => {
    const record = (id: number): AuditRecord => ({
      id,
      at_ms: id,
      principal: 'admin',
      method: 'POST',
      path: '/api/v1/services',
      target: 'cart',
      status: 201,
    });
    const asked: string[] = [];
    const pages: Record<string, AuditPage> = {
      '/audit?limit=1000': { records: [record(1), record(2)], next_after: 2 },
      '/audit?limit=1000&after=2': { records: [record(3)], next_after: null },
    };
    const records = await loadAudit(async (path) => {
      asked.push(path);
      return pages[path];
    });
    expect(asked).toEqual(['/audit?limit=1000', '/audit?limit=1000&after=2']);
    expect(records.map((r) => r.id)).toEqual([3, 2, 1]);
  });
});
