// One websocket to a Jupyter kernel's channels (`api/kernels/<id>/channels`), with Node's built-in WebSocket (it sends
// the token header, so the token never appears in a URL). An open socket does not always mean a kernel that listens
// (right after Jupyter restarted it, it may still be starting): code-runner.ts asks the kernel before sending code.
// Messages are Jupyter's JSON form of the messaging protocol (v5.3): header, parent_header, metadata, content and the
// channel; binary frames (messages with buffers, used by widgets) are not needed here and are ignored.
import { randomUUID } from 'node:crypto';

export interface KernelMessage {
  header: { msg_id: string; msg_type: string };
  parent_header: { msg_id?: string };
  channel: string;
  content: Record<string, unknown>;
}

export class KernelConnection {
  /** The client session (the header's `session`, and the URL's session_id): the server routes replies by it. */
  readonly session: string;
  readonly #socket: WebSocket;
  readonly #listeners = new Set<(message: KernelMessage) => void>();
  readonly #closeListeners = new Set<() => void>();
  #closed = false;

  private constructor(socket: WebSocket, session: string) {
    this.#socket = socket;
    this.session = session;
    socket.binaryType = 'arraybuffer';
    socket.addEventListener('message', (event: MessageEvent) => {
      if (typeof event.data !== 'string') return;
      let message: KernelMessage;
      try {
        message = JSON.parse(event.data) as KernelMessage;
      } catch {
        return;
      }
      if (typeof message.header?.msg_type !== 'string') return;
      message.parent_header ??= {};
      message.content ??= {};
      for (const listener of this.#listeners) listener(message);
    });
    socket.addEventListener('close', () => this.#markClosed());
    socket.addEventListener('error', () => this.#markClosed());
  }

  /** Opens the channels websocket; rejects when the server refuses it or does not open it within `timeoutMs`. */
  static open(url: string, headers: Record<string, string>, timeoutMs: number): Promise<KernelConnection> {
    return new Promise((resolve, reject) => {
      const session = randomUUID();
      const socket = new WebSocket(`${url}${url.includes('?') ? '&' : '?'}session_id=${session}`, { headers });
      const timer = setTimeout(() => {
        socket.close();
        reject(new Error(`the kernel's websocket did not open within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.addEventListener(
        'open',
        () => {
          clearTimeout(timer);
          resolve(new KernelConnection(socket, session));
        },
        { once: true },
      );
      socket.addEventListener(
        'error',
        (event) => {
          clearTimeout(timer);
          const detail = 'message' in event && typeof event.message === 'string' ? `: ${event.message}` : '';
          reject(new Error(`the kernel's websocket could not be opened${detail}`));
        },
        { once: true },
      );
    });
  }

  get isOpen(): boolean {
    return !this.#closed && this.#socket.readyState === WebSocket.OPEN;
  }

  /** Sends a request on a channel; returns its msg_id (replies carry it as their parent's). */
  send(channel: 'shell' | 'control', msgType: string, content: Record<string, unknown>): string {
    const msgId = randomUUID();
    this.#socket.send(
      JSON.stringify({
        header: { msg_id: msgId, msg_type: msgType, session: this.session, username: 'workcell', date: new Date().toISOString(), version: '5.3' },
        parent_header: {},
        metadata: {},
        content,
        channel,
        buffers: [],
      }),
    );
    return msgId;
  }

  /** Calls `listener` with every message; returns the function that stops it. */
  subscribe(listener: (message: KernelMessage) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Calls `listener` once the socket is closed (at once if it is). Returns the function that stops it. */
  onClose(listener: () => void): () => void {
    if (this.#closed) {
      listener();
      return () => {};
    }
    this.#closeListeners.add(listener);
    return () => this.#closeListeners.delete(listener);
  }

  close(): void {
    this.#socket.close();
    this.#markClosed();
  }

  #markClosed(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const listener of this.#closeListeners) listener();
    this.#closeListeners.clear();
  }
}
