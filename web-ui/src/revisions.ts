// A service's revisions as the dashboard shows them: what each runs on one line,
// and what changed between two of them (command or image, arguments, environment).

import type { Revision } from './types';

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

/** What changed from `from` to `to`, in a fixed order: command, image, arguments, then each variable by name. */
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
  return changes;
}
