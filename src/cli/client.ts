// The CLI's client for a running workcell server: fetch for JSON routes, a small SSE reader for events.
// Problems (RFC 9457) from the server become ClientErrors carrying the server's own detail.

export class ClientError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = 'ClientError';
    this.status = status;
  }
}

export interface ServerEvent {
  id: string;
  event: string;
  data: { seq: number; type: string; step: number; time: string; data: Record<string, unknown> };
}

export class WorkcellClient {
  readonly baseUrl: string;
  readonly #apiKey: string | undefined;
  constructor(baseUrl: string, apiKey?: string) {
    this.baseUrl = baseUrl.replace(/\/$/, '');
    this.#apiKey = apiKey === '' ? undefined : apiKey;
  }

  async json<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    const response = await this.#fetch(path, {
      method,
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return (await response.json()) as T;
  }

  /** Streams the job's events; resolves when the server ends the stream (the job ended) or the signal aborts. */
  async *events(jobId: string, options: { follow: boolean; after?: number; signal?: AbortSignal }): AsyncGenerator<ServerEvent> {
    const query = new URLSearchParams({ follow: String(options.follow), ...(options.after ? { after: String(options.after) } : {}) });
    const response = await this.#fetch(`/jobs/${encodeURIComponent(jobId)}/events?${query.toString()}`, { headers: { accept: 'text/event-stream' }, ...(options.signal ? { signal: options.signal } : {}) });
    yield* parseSse(response.body!);
  }

  async download(path: string): Promise<Response> {
    return this.#fetch(path, {});
  }

  async #fetch(path: string, init: RequestInit): Promise<Response> {
    let response: Response;
    try {
      const headers = new Headers(init.headers);
      if (this.#apiKey !== undefined) headers.set('authorization', `Bearer ${this.#apiKey}`);
      response = await fetch(`${this.baseUrl}${path}`, { ...init, headers });
    } catch (error) {
      throw new ClientError(0, `cannot reach the workcell server at ${this.baseUrl} (${(error as Error).cause instanceof Error ? ((error as Error).cause as Error).message : (error as Error).message}): start one with \`workcell serve\` or set WORKCELL_URL`);
    }
    if (!response.ok) {
      const text = await response.text();
      let detail = text;
      try {
        detail = (JSON.parse(text) as { detail?: string }).detail ?? text;
      } catch {
        // not a problem document: show the text
      }
      throw new ClientError(response.status, `${response.status}: ${detail}`);
    }
    return response;
  }
}

/** A minimal Server-Sent Events parser (enough for our server: id, event, data lines). */
export async function* parseSse(body: ReadableStream<Uint8Array>): AsyncGenerator<ServerEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  let fields: Record<string, string> = {};
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, '');
      buffer = buffer.slice(newline + 1);
      if (line === '') {
        if (fields.data !== undefined) yield { id: fields.id ?? '', event: fields.event ?? 'message', data: JSON.parse(fields.data) as ServerEvent['data'] };
        fields = {};
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const name = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        fields[name] = name === 'data' && fields.data !== undefined ? `${fields.data}\n${value}` : value;
      }
    }
  }
}
