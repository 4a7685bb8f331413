// The service page's Logs card: every instance's function and sidecar output of the
// last 15 minutes, then followed live while the page is open (`../logs`).

import { useEffect, useRef, useState } from 'preact/hooks';

import { formatClock } from '../format';
import { followLogs, keepLatest } from '../logs';
import type { LogLine } from '../types';
import { Card } from './ui';

/** After the stream ends or fails (the API restarted), how long before reading again. */
const RETRY_MS = 2000;

export function LogsCard({ service }: { service: string }) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [error, setError] = useState<string | null>(null);
  const box = useRef<HTMLOListElement>(null);

  useEffect(() => {
    const abort = new AbortController();
    let latest = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const open = () => {
      // Reopened after a break: from the last line seen, without repeating it.
      const cutoff = latest;
      const since = cutoff ? `${Math.max(1, Date.now() - cutoff)}ms` : '15m';
      followLogs(
        service,
        since,
        (more) => {
          const fresh = more.filter((line) => line.at_ms > cutoff);
          for (const line of fresh) latest = Math.max(latest, line.at_ms);
          setError(null);
          setLines((kept) => keepLatest(kept, fresh));
        },
        abort.signal,
      ).then(
        () => {
          if (!abort.signal.aborted) timer = setTimeout(open, RETRY_MS);
        },
        (failure: unknown) => {
          if (abort.signal.aborted) return;
          setError(failure instanceof Error ? failure.message : String(failure));
          timer = setTimeout(open, RETRY_MS);
        },
      );
    };
    open();
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
  }, [service]);

  // Keep the newest line in view unless the reader scrolled up.
  useEffect(() => {
    const element = box.current;
    if (element && element.scrollHeight - element.scrollTop - element.clientHeight < 80) {
      element.scrollTop = element.scrollHeight;
    }
  }, [lines]);

  return (
    <Card title="Logs">
      {error ? (
        <p class="error-text" role="alert">
          {error}
        </p>
      ) : null}
      {lines.length === 0 ? (
        <p class="muted">No output in the last 15 minutes; new lines appear here as the instances write them.</p>
      ) : null}
      <ol class="logs" ref={box} aria-label="Instance output, oldest first" aria-live="off">
        {lines.map((line, index) => (
          <li key={index} class={`log log-${line.process}`}>
            <time dateTime={line.at}>{formatClock(line.at_ms)}</time> <code class="log-instance">{line.instance}</code>{' '}
            <span class="log-process">{line.process}</span> <span class="log-text">{line.line}</span>
          </li>
        ))}
      </ol>
    </Card>
  );
}
