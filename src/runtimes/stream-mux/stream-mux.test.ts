// The mux over an in-memory pair of streams: channels both ways carry bytes and half-closes, each side's channel
// numbering keeps them apart, control requests get their answers, and a malformed frame ends the mux (the other side
// is never trusted).
import { createServer, connect, type Server } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { bridgeChannel, encodeFrame, FrameDecoder, frameTypes, maxFramePayload, requestOverChannel, StreamMux, type MuxChannel } from './stream-mux.ts';

function pair(onHostOpen: (channel: MuxChannel, mux: StreamMux) => void, onGuestOpen: (channel: MuxChannel, mux: StreamMux) => void) {
  const hostToGuest = new PassThrough();
  const guestToHost = new PassThrough();
  const failures: Error[] = [];
  const host: StreamMux = new StreamMux({ input: guestToHost, output: hostToGuest, side: 'host', onOpen: (channel) => onHostOpen(channel, host), onFailure: (error) => failures.push(error) });
  const guest: StreamMux = new StreamMux({ input: hostToGuest, output: guestToHost, side: 'guest', onOpen: (channel) => onGuestOpen(channel, guest), onFailure: (error) => failures.push(error) });
  return { host, guest, failures, hostToGuest, guestToHost };
}

let cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const step of cleanup) await step();
  cleanup = [];
});

describe('StreamMux', () => {
  it('frames round-trip, and oversized or unknown frames are refused', () => {
    const decoder = new FrameDecoder();
    const frame = encodeFrame(frameTypes.data, 7, Buffer.from('hello'));
    expect(decoder.push(frame.subarray(0, 4))).toEqual([]);
    expect(decoder.push(frame.subarray(4))).toEqual([{ type: frameTypes.data, channel: 7, payload: Buffer.from('hello') }]);
    const huge = Buffer.alloc(9);
    huge.writeUInt8(frameTypes.data, 0);
    huge.writeUInt32BE(maxFramePayload + 1, 5);
    expect(() => new FrameDecoder().push(huge)).toThrow(/exceeds/);
    expect(() => new FrameDecoder().push(Buffer.from([9, 0, 0, 0, 1, 0, 0, 0, 0]))).toThrow(/unknown frame type/);
  });

  it('bridges a local socket on one side to a server on the other, both ways, with large payloads', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'workcell-mux-'));
    const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('end', () => socket.end(Buffer.concat([Buffer.from('got '), Buffer.from(String(Buffer.concat(chunks).length))])));
    });
    await new Promise<void>((resolve) => server.listen(join(dir, 'echo.sock'), resolve));
    cleanup.push(async () => {
      await new Promise((resolve) => server.close(resolve));
      await rm(dir, { recursive: true, force: true });
    });
    const { host } = pair(
      (channel) => channel.close(),
      (channel, guest) => {
        expect(channel.target).toBe('sandboxd');
        expect(channel.id % 2).toBe(0);
        bridgeChannel(guest, channel, connect({ path: join(dir, 'echo.sock'), allowHalfOpen: true }));
      },
    );
    const answer = await new Promise<string>((resolve) => {
      const channel = host.open('sandboxd');
      let text = '';
      channel.onData = (data) => {
        text += data.toString('utf8');
      };
      channel.onClose = () => resolve(text);
      channel.onEnd = () => resolve(text);
      channel.write(Buffer.alloc(3 * maxFramePayload + 5, 0x61));
      channel.end();
    });
    expect(answer).toBe(`got ${3 * maxFramePayload + 5}`);
  });

  it('answers a control request, and the guest may open only odd channels', async () => {
    const { host } = pair(
      (channel) => channel.close(),
      (channel) => {
        channel.onEnd = () => {
          channel.write(Buffer.from(JSON.stringify({ target: channel.target, oomKills: 2 })));
          channel.end();
        };
      },
    );
    const answer = await requestOverChannel(host, 'control:counters', Buffer.from('{}'), { timeoutMs: 2000 });
    expect(JSON.parse(answer.toString('utf8'))).toEqual({ target: 'control:counters', oomKills: 2 });
  });

  it('ends the mux on a malformed frame or a channel number the other side may not use', async () => {
    const { failures, guestToHost } = pair(
      (channel) => channel.close(),
      (channel) => channel.close(),
    );
    // The guest "opens" an even (host-numbered) channel.
    guestToHost.write(encodeFrame(frameTypes.open, 4, Buffer.from('proxy')));
    while (failures.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(failures.map((error) => error.message)).toEqual(['the other side opened channel 4, which it may not']);
  });
});
