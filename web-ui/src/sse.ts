// Server-sent events over fetch. EventSource cannot send an Authorization header and
// the token must never go into a URL, so the dashboard reads the stream itself: a
// pure parser of the text/event-stream format, and a connection that reconnects
// with backoff, resuming after the last event id it saw.

export interface SseMessage {
  event: string;
  data: string;
  id?: string;
}

/** Incremental parser: feed it chunks of text, get back every complete message. */
export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];
  private id: string | undefined;

  push(chunk: string): SseMessage[] {
    this.buffer += chunk;
    const messages: SseMessage[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) break;
      // A lone \r at the very end may be the first half of \r\n: wait for more.
      if (match[0] === '\r' && match.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      const message = this.line(line);
      if (message) messages.push(message);
    }
    return messages;
  }

  private line(line: string): SseMessage | null {
    if (line === '') {
      if (this.data.length === 0) {
        this.event = '';
        return null;
      }
      const message: SseMessage = { event: this.event || 'message', data: this.data.join('\n') };
      if (this.id !== undefined) message.id = this.id;
      this.event = '';
      this.data = [];
      return message;
    }
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.id = value;
    return null;
  }
}

export type StreamState = 'connecting' | 'live' | 'lost';

export interface StreamOptions {
  url: (since: string | undefined) => string;
  headers: () => Record<string, string>;
  onMessage: (message: SseMessage) => void;
  onState: (state: StreamState) => void;
  onUnauthorized: () => void;
  /** Backoff after a failure: first, then doubling up to max (milliseconds). */
  retryMs?: { first: number; max: number };
}

/** Opens the stream and keeps it open until the returned function is called. */
export function openStream(options: StreamOptions): () => void {
  const retry = options.retryMs ?? { first: 1000, max: 10_000 };
  let stopped = false;
  let lastId: string | undefined;
  let delay = retry.first;
  let controller: AbortController | null = null;
  let timer: ReturnType<typeof setTimeout> | null = null;

  const connect = async () => {
    if (stopped) return;
    options.onState('connecting');
    controller = new AbortController();
    try {
      const response = await fetch(options.url(lastId), {
        headers: { accept: 'text/event-stream', ...options.headers() },
        signal: controller.signal,
        cache: 'no-store',
      });
      if (response.status === 401) {
        options.onUnauthorized();
        throw new Error('unauthorized');
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      options.onState('live');
      delay = retry.first;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const message of parser.push(value)) {
          if (message.id !== undefined) lastId = message.id;
          options.onMessage(message);
        }
      }
    } catch {
      // Reported below as a lost stream, then retried.
    }
    if (stopped) return;
    options.onState('lost');
    timer = setTimeout(connect, delay);
    delay = Math.min(delay * 2, retry.max);
  };

  void connect();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    controller?.abort();
  };
}
