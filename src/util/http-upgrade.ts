// Answering an HTTP upgrade that is refused, on the raw socket (no ServerResponse exists for an upgrade): the API's
// websocket proxy and a worker's internal route both do it.
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';

/** Ends `socket` with a plain-text answer of `status`; `headers`: extra header lines. A gone socket is left alone. */
export function refuseUpgrade(socket: Duplex, status: number, message: string, headers: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const body = `${message.replace(/[\r\n]+/g, ' ')}\n`;
  const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n${extra}content-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}
