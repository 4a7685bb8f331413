// A service's revisions as the dashboard shows them: what each runs on one line,
// and what changed between two of them (command or image, arguments, environment).

import type { Canary, Revision } from './types';

/** One difference between two revisions: what, and its value in each (`null`: unset). */
export interface Change {
  what: string;
  from: string | null;
  to: string | null;
}

/** What a revision runs, on one line: the command or image, its arguments, its environment. */
export function runsLine(revision: Revision): string {
  const words: string[] = [revision.command ?? revision.image ?? ''];
  for (const arg of revision.args ?? []) words.push(JSON.stringify(arg));
  for (const variable of revision.env ?? []) words.push(`${variable.name}=${JSON.stringify(variable.value)}`);
  return words.filter((word) => word !== '').join(' ');
}

/**
 * What changed from `from` to `to`, in a fixed order: command, image, arguments, each variable by name,
 * then the rest of a Kubernetes pod template (by its digest).
 */
export function diffRevisions(from: Revision, to: Revision): Change[] {
  const changes: Change[] = [];
  const field = (what: string, a: string | null, b: string | null) => {
    if (a !== b) changes.push({ what, from: a, to: b });
  };
  field('command', from.command ?? null, to.command ?? null);
  field('image', from.image ?? null, to.image ?? null);
  const args = (r: Revision) => (r.args && r.args.length ? r.args.map((a) => JSON.stringify(a)).join(' ') : null);
  field('arguments', args(from), args(to));
  const env = (r: Revision) => new Map((r.env ?? []).map((v) => [v.name, v.value]));
  const before = env(from);
  const after = env(to);
  const names = [...new Set([...before.keys(), ...after.keys()])].sort();
  for (const name of names) field(`env ${name}`, before.get(name) ?? null, after.get(name) ?? null);
  field('pod template', from.template ?? null, to.template ?? null);
  return changes;
}

/** The traffic split in a sentence, with the automatic analysis when there is one. */
export function canaryLine(canary: Canary, serving: number): string {
  let line =
    `Canary: revision ${canary.revision} serves ${canary.percent}% of the traffic ` +
    `(${canary.shards} shard${canary.shards === 1 ? '' : 's'}), revision ${serving} the rest.`;
  if (canary.max_error_rate !== undefined) {
    const percent = (canary.max_error_rate * 100).toFixed(1);
    const seconds = Math.round((canary.window_ms ?? 60000) / 1000);
    const slower =
      canary.max_p99_ratio !== undefined ? ` or a p99 above ${canary.max_p99_ratio} times revision ${serving}'s` : '';
    line += ` Rolled back on its own above ${percent}% errors${slower} over ${seconds} s (at least ${canary.min_calls ?? 20} calls).`;
  }
  return line;
}
