// The shard map as a picture: one cell per shard, coloured by the instance that owns
// it; shards that changed owner since the previous look are outlined for a while.

import { useEffect, useRef, useState } from 'preact/hooks';

import type { ShardMap } from '../types';

const PALETTE = ['#355dd3', '#e0803a', '#2e9e6b', '#b94a9e', '#c9a227', '#3aa6c9', '#8a5cd6', '#d14b4b', '#6b8e23', '#7a7f8c'];
/** How long a moved shard stays highlighted. */
const HIGHLIGHT_MS = 8000;

export function ownerColors(owners: (string | null)[]): Map<string, string> {
  const distinct = [...new Set(owners.filter((owner): owner is string => owner !== null))].sort();
  return new Map(distinct.map((owner, i) => [owner, PALETTE[i % PALETTE.length]]));
}

/** Shards whose owner differs between two maps. */
export function movedShards(before: ShardMap | undefined, after: ShardMap): number[] {
  if (!before || before.shard_count !== after.shard_count) return [];
  return after.shards.filter((shard, i) => before.shards[i]?.owner !== shard.owner).map((shard) => shard.shard);
}

export function ShardMapPicture({ map }: { map: ShardMap }) {
  const previous = useRef<ShardMap | undefined>(undefined);
  const [moved, setMoved] = useState<Map<number, number>>(new Map());

  useEffect(() => {
    const now = Date.now();
    const changed = movedShards(previous.current, map);
    previous.current = map;
    setMoved((current) => {
      const next = new Map([...current].filter(([, at]) => now - at < HIGHLIGHT_MS));
      changed.forEach((shard) => next.set(shard, now));
      return next;
    });
  }, [map]);

  useEffect(() => {
    if (moved.size === 0) return;
    const timer = setTimeout(() => {
      const now = Date.now();
      setMoved((current) => new Map([...current].filter(([, at]) => now - at < HIGHLIGHT_MS)));
    }, HIGHLIGHT_MS);
    return () => clearTimeout(timer);
  }, [moved]);

  const colors = ownerColors(map.shards.map((shard) => shard.owner));
  const counts = new Map<string, number>();
  let unowned = 0;
  for (const shard of map.shards) {
    if (shard.owner) counts.set(shard.owner, (counts.get(shard.owner) ?? 0) + 1);
    else unowned++;
  }
  const description =
    [...counts].map(([owner, count]) => `${owner} owns ${count}`).join(', ') +
    (unowned ? `${counts.size ? ', ' : ''}${unowned} without an owner` : '');

  return (
    <div class="shardmap">
      <div class="shard-grid" role="img" aria-label={`${map.shard_count} shards: ${description || 'none'}`}>
        {map.shards.map((shard) => (
          <span
            key={shard.shard}
            class={`shard${moved.has(shard.shard) ? ' shard-moved' : ''}${shard.owner ? '' : ' shard-unowned'}`}
            style={shard.owner ? { background: colors.get(shard.owner) } : undefined}
            title={`shard ${shard.shard}: ${shard.owner ?? 'no owner'} (epoch ${shard.epoch})`}
          />
        ))}
      </div>
      <ul class="legend">
        {[...counts].map(([owner, count]) => (
          <li key={owner}>
            <span class="swatch" style={{ background: colors.get(owner) }} aria-hidden="true" />
            <code>{owner}</code> {count} shards
          </li>
        ))}
        {unowned ? (
          <li>
            <span class="swatch swatch-unowned" aria-hidden="true" /> {unowned} without an owner (no ready instance)
          </li>
        ) : null}
        {moved.size ? (
          <li>
            <span class="swatch swatch-moved" aria-hidden="true" /> {moved.size} just moved
          </li>
        ) : null}
      </ul>
    </div>
  );
}
