import { describe, expect, it } from 'vitest';

import { canaryLine, diffRevisions, runsLine } from '../src/revisions';
import type { Revision } from '../src/types';

const revision = (number: number, more: Partial<Revision> = {}): Revision => ({
  number,
  serving: false,
  command: './cart',
  created_at_ms: 0,
  created_by: 'admin token',
  ...more,
});

describe('revisions', () => {
  it('says what a revision runs on one line', () => {
    expect(runsLine(revision(1, { args: ['two words'], env: [{ name: 'LABEL', value: 'one' }] }))).toBe(
      './cart "two words" LABEL="one"',
    );
    expect(runsLine(revision(2, { command: undefined, image: 'ghcr.io/x/cart:2' }))).toBe('ghcr.io/x/cart:2');
  });

  it('lists what changed between two revisions, variable by variable', () => {
    const one = revision(1, { env: [{ name: 'LABEL', value: 'one' }, { name: 'KEEP', value: 'x' }] });
    const two = revision(2, { args: ['--fast'], env: [{ name: 'KEEP', value: 'x' }, { name: 'NEW', value: 'y' }] });
    expect(diffRevisions(one, two)).toEqual([
      { what: 'arguments', from: null, to: '"--fast"' },
      { what: 'env LABEL', from: 'one', to: null },
      { what: 'env NEW', from: null, to: 'y' },
    ]);
    expect(diffRevisions(two, two)).toEqual([]);
  });

  it('names a change of a Kubernetes pod template that the image does not show', () => {
    const pod = (template: string) => revision(1, { command: undefined, image: 'cart:1', template });
    expect(diffRevisions(pod('aa11'), pod('bb22'))).toEqual([{ what: 'pod template', from: 'aa11', to: 'bb22' }]);
  });

  it('says the traffic split of a canary, with its analysis', () => {
    const canary = { revision: 3, percent: 25, shards: 16, started_at_ms: 0 };
    expect(canaryLine(canary, 2)).toBe('Canary: revision 3 serves 25% of the traffic (16 shards), revision 2 the rest.');
    expect(canaryLine({ ...canary, shards: 1, max_error_rate: 0.05, min_calls: 20, window_ms: 30000 }, 2)).toBe(
      'Canary: revision 3 serves 25% of the traffic (1 shard), revision 2 the rest. ' +
        'Rolled back on its own above 5.0% errors over 30 s (at least 20 calls).',
    );
    expect(canaryLine({ ...canary, max_error_rate: 0.05, max_p99_ratio: 1.5 }, 2)).toBe(
      'Canary: revision 3 serves 25% of the traffic (16 shards), revision 2 the rest. ' +
        "Rolled back on its own above 5.0% errors or a p99 above 1.5 times revision 2's over 60 s (at least 20 calls).",
    );
  });
});
