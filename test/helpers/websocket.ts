// Test helper: a raw websocket client (RFC 6455, binary frames) over a plain TCP socket, enough to speak RFB to
// websockify through the orchestrator's proxy without a browser.
import { createHash, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { connectHost } from './job-origin.ts';

export interface RawWebSocket {
  /** The 101 response's head (status line and headers). */
  head: string;
  /** Reads exactly `length` bytes of message payload (across frames). */
  read(length: number, timeoutMs?: number): Promise<Buffer>;
  send(payload: Buffer): void;
  close(): void;
}

/** Opens a websocket to `url` (http://host:port/path?query); rejects with the response head when it is not a 101. */
export function openWebSocket(url: string, headers: Record<string, string> = {}): Promise<RawWebSocket> {
  const target = new URL(url);
  const key = randomBytes(16).toString('base64');
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(Number(target.port), connectHost(target.hostname));
    let buffer = Buffer.alloc(0);
    let upgraded = false;
    let payload = Buffer.alloc(0);
    let waiter: (() => void) | undefined;
    const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
    socket.on('connect', () =>
      socket.write(
        `GET ${target.pathname}${target.search} HTTP/1.1\r\nhost: ${target.host}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n` +
          `sec-websocket-version: 13\r\nsec-websocket-key: ${key}\r\nsec-websocket-protocol: binary\r\n${extra}\r\n`,
      ),
    );
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (!upgraded) {
        const end = buffer.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buffer.subarray(0, end).toString('latin1');
        buffer = buffer.subarray(end + 4);
        if (!head.startsWith('HTTP/1.1 101')) {
          socket.destroy();
          return reject(new Error(`no websocket: ${head}`));
        }
        const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
        if (!new RegExp(`^sec-websocket-accept: ${accept.replace(/[+/=]/g, '\\$&')}$`, 'im').test(head)) {
          socket.destroy();
          return reject(new Error(`wrong Sec-WebSocket-Accept in ${head}`));
        }
        upgraded = true;
        resolve({
          head,
          read: (length, timeoutMs = 15_000) =>
            new Promise((resolveRead, rejectRead) => {
              const timer = setTimeout(() => rejectRead(new Error(`timed out waiting for ${length} bytes (have ${payload.length})`)), timeoutMs);
              const check = () => {
                if (payload.length < length) return false;
                clearTimeout(timer);
                waiter = undefined;
                const out = payload.subarray(0, length);
                payload = payload.subarray(length);
                resolveRead(Buffer.from(out));
                return true;
              };
              if (!check()) waiter = () => void check();
            }),
          send(data) {
            const mask = randomBytes(4);
            const masked = Buffer.from(data.map((byte, index) => byte ^ mask[index % 4]!));
            const header = data.length < 126 ? Buffer.from([0x82, 0x80 | data.length]) : Buffer.from([0x82, 0x80 | 126, data.length >> 8, data.length & 0xff]);
            socket.write(Buffer.concat([header, mask, masked]));
          },
          close: () => socket.destroy(),
        });
      }
      // Server frames are unmasked: opcode, length (7, 16 or 64 bits), payload.
      for (;;) {
        if (buffer.length < 2) break;
        const opcode = buffer[0]! & 0x0f;
        let length = buffer[1]! & 0x7f;
        let offset = 2;
        if (length === 126) {
          if (buffer.length < 4) break;
          length = buffer.readUInt16BE(2);
          offset = 4;
        } else if (length === 127) {
          if (buffer.length < 10) break;
          length = Number(buffer.readBigUInt64BE(2));
          offset = 10;
        }
        if (buffer.length < offset + length) break;
        if (opcode === 0x0 || opcode === 0x1 || opcode === 0x2) payload = Buffer.concat([payload, buffer.subarray(offset, offset + length)]);
        buffer = buffer.subarray(offset + length);
      }
      waiter?.();
    });
  });
}
