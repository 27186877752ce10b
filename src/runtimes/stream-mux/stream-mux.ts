// Many connections over one byte stream. Runtimes whose sandbox is reached through a single stream rather than a
// socket the host can connect to (a gVisor or runc container's stdin/stdout through `docker attach`, a QEMU microVM's
// virtio-serial port, a Firecracker vsock connection) carry every sandboxd request and every egress-proxy connection
// over it. Both ends run this code: the host (runtimes/stream-mux/host-end.ts) and the guest agent in the sandbox
// (runtimes/guest-agent/main.ts).
//
// Wire format, after a line-based handshake (host: a token line; guest: sandboxd's ready line): frames of
//   type u8 | channel u32 BE | length u32 BE | payload (length bytes, at most maxFramePayload)
// OPEN carries the target's name (UTF-8); DATA the bytes; END says the sender will write no more (half-close);
// CLOSE that the channel is gone. The host numbers the channels it opens even, the guest odd, so both can open
// channels without agreeing first. Flow control is the carrier's own: a local socket that cannot take more pauses
// the carrier until it drains, and a carrier that cannot take more pauses every local socket; memory stays bounded.
// Each side decides what it lets the other open (the host: only the egress proxy; the guest: sandboxd and its
// control requests). The other side is never trusted: a malformed frame ends the whole mux.
import type { Duplex, Readable, Writable } from 'node:stream';

export const frameTypes = { open: 1, data: 2, end: 3, close: 4 } as const;
type FrameType = (typeof frameTypes)[keyof typeof frameTypes];
export const maxFramePayload = 64 * 1024;
const headerBytes = 9;
/** Channels open at once; more OPENs are refused (closed at once). */
export const maxChannels = 1024;

export interface Frame {
  type: FrameType;
  channel: number;
  payload: Buffer;
}

export function encodeFrame(type: FrameType, channel: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  if (payload.length > maxFramePayload) throw new Error(`frame payload of ${payload.length} bytes exceeds ${maxFramePayload}`);
  const header = Buffer.alloc(headerBytes);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(channel >>> 0, 1);
  header.writeUInt32BE(payload.length, 5);
  return Buffer.concat([header, payload]);
}

/** Splits a byte stream into frames; throws on anything malformed. */
export class FrameDecoder {
  #buffer: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    const frames: Frame[] = [];
    while (this.#buffer.length >= headerBytes) {
      const type = this.#buffer.readUInt8(0);
      const channel = this.#buffer.readUInt32BE(1);
      const length = this.#buffer.readUInt32BE(5);
      if (type < frameTypes.open || type > frameTypes.close) throw new Error(`unknown frame type ${type}`);
      if (length > maxFramePayload) throw new Error(`frame of ${length} bytes exceeds ${maxFramePayload}`);
      if (this.#buffer.length < headerBytes + length) break;
      frames.push({ type: type as FrameType, channel, payload: Buffer.from(this.#buffer.subarray(headerBytes, headerBytes + length)) });
      this.#buffer = this.#buffer.subarray(headerBytes + length);
    }
    return frames;
  }
}

/**
 * Reads one newline-terminated line from the start of a stream (at most maxBytes); what followed it is returned too,
 * for the frame decoder. Rejects when the stream ends or errs first.
 */
export function readFirstLine(input: Readable, maxBytes = 64 * 1024, signal?: AbortSignal): Promise<{ line: string; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const cleanup = () => {
      input.off('data', onData);
      input.off('end', onEnd);
      input.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
    };
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const newline = buffered.indexOf(0x0a);
      if (newline === -1) {
        if (buffered.length > maxBytes) {
          cleanup();
          input.pause();
          reject(new Error(`the first line is longer than ${maxBytes} bytes`));
        }
        return;
      }
      cleanup();
      input.pause();
      resolve({ line: buffered.subarray(0, newline).toString('utf8'), rest: buffered.subarray(newline + 1) });
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`the stream ended before its first line${buffered.length > 0 ? ` (got ${JSON.stringify(buffered.toString('utf8').slice(0, 200))})` : ''}`));
    };
    const onError = (error: Error) => {
      cleanup();
      reject(error);
    };
    const onAbort = () => {
      cleanup();
      reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
    };
    input.on('data', onData);
    input.once('end', onEnd);
    input.once('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
    input.resume();
  });
}

/** One end of a channel, as the mux hands it to the code that uses it. */
export interface MuxChannel {
  readonly id: number;
  readonly target: string;
  /** Sends bytes; false when the carrier is full (wait for the mux's 'drain' via onCarrierDrain). */
  write(data: Buffer): boolean;
  /** Half-close: nothing more will be written. */
  end(): void;
  /** Closes the channel both ways. */
  close(): void;
  onData: (data: Buffer) => boolean | void;
  onEnd: () => void;
  onClose: () => void;
}

export interface StreamMuxOptions {
  input: Readable;
  output: Writable;
  /** Bytes of the stream already read past the handshake. */
  initial?: Buffer;
  side: 'host' | 'guest';
  /** The other side opened a channel: bridge it (e.g. bridgeChannel) or close it. */
  onOpen: (channel: MuxChannel) => void;
  /** The carrier ended or broke, or the other side sent something malformed. */
  onFailure?: (error: Error) => void;
}

export class StreamMux {
  readonly #input: Readable;
  readonly #output: Writable;
  readonly #onOpen: (channel: MuxChannel) => void;
  readonly #onFailure: ((error: Error) => void) | undefined;
  readonly #channels = new Map<number, MuxChannel & { closed: boolean; ended: boolean }>();
  readonly #decoder = new FrameDecoder();
  readonly #drainWaiters = new Set<() => void>();
  #nextId: number;
  #pausedBy = 0;
  #failed = false;

  constructor(options: StreamMuxOptions) {
    this.#input = options.input;
    this.#output = options.output;
    this.#onOpen = options.onOpen;
    this.#onFailure = options.onFailure;
    this.#nextId = options.side === 'host' ? 2 : 1;
    this.#output.on('drain', () => {
      for (const waiter of [...this.#drainWaiters]) waiter();
      this.#drainWaiters.clear();
    });
    this.#output.on('error', (error: Error) => this.#fail(error));
    this.#input.on('data', (chunk: Buffer) => this.#receive(chunk));
    this.#input.on('end', () => this.#fail(new Error('the carrier stream ended')));
    this.#input.on('error', (error: Error) => this.#fail(error));
    if (options.initial !== undefined && options.initial.length > 0) queueMicrotask(() => this.#receive(options.initial!));
    this.#input.resume();
  }

  get failed(): boolean {
    return this.#failed;
  }

  /** Opens a channel to `target` on the other side. */
  open(target: string): MuxChannel {
    const id = this.#nextId;
    this.#nextId += 2;
    const channel = this.#makeChannel(id, target);
    this.#send(frameTypes.open, id, Buffer.from(target, 'utf8'));
    return channel;
  }

  /** Runs `callback` once the carrier can take more. */
  onCarrierDrain(callback: () => void): void {
    this.#drainWaiters.add(callback);
  }

  /** Closes every channel and stops reading the carrier. */
  destroy(): void {
    this.#fail(new Error('the mux was closed'), false);
  }

  #fail(error: Error, report = true): void {
    if (this.#failed) return;
    this.#failed = true;
    for (const channel of [...this.#channels.values()]) this.#closeLocal(channel);
    this.#input.pause();
    if (report) this.#onFailure?.(error);
  }

  #send(type: FrameType, id: number, payload?: Buffer): boolean {
    if (this.#failed) return true;
    return this.#output.write(encodeFrame(type, id, payload));
  }

  #makeChannel(id: number, target: string): MuxChannel & { closed: boolean; ended: boolean } {
    const channel = {
      id,
      target,
      closed: false,
      ended: false,
      write: (data: Buffer): boolean => {
        if (channel.closed) return true;
        let ok = true;
        for (let offset = 0; offset < data.length; offset += maxFramePayload) ok = this.#send(frameTypes.data, id, data.subarray(offset, offset + maxFramePayload)) && ok;
        return ok;
      },
      end: () => {
        if (channel.closed || channel.ended) return;
        channel.ended = true;
        this.#send(frameTypes.end, id);
      },
      close: () => {
        if (channel.closed) return;
        this.#send(frameTypes.close, id);
        this.#closeLocal(channel);
      },
      onData: (() => undefined) as (data: Buffer) => boolean | void,
      onEnd: () => undefined,
      onClose: () => undefined,
    };
    this.#channels.set(id, channel);
    return channel;
  }

  #closeLocal(channel: MuxChannel & { closed: boolean }): void {
    if (channel.closed) return;
    channel.closed = true;
    this.#channels.delete(channel.id);
    channel.onClose();
  }

  #receive(chunk: Buffer): void {
    if (this.#failed) return;
    let frames: Frame[];
    try {
      frames = this.#decoder.push(chunk);
    } catch (error) {
      this.#fail(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    for (const frame of frames) {
      if (this.#failed) return;
      const existing = this.#channels.get(frame.channel);
      switch (frame.type) {
        case frameTypes.open: {
          const theirs = this.#nextId % 2 === 0 ? frame.channel % 2 === 1 : frame.channel % 2 === 0;
          if (!theirs || existing !== undefined) {
            this.#fail(new Error(`the other side opened channel ${frame.channel}, which it may not`));
            return;
          }
          const channel = this.#makeChannel(frame.channel, frame.payload.toString('utf8'));
          if (this.#channels.size > maxChannels) channel.close();
          else this.#onOpen(channel);
          break;
        }
        case frameTypes.data:
          if (existing !== undefined && existing.onData(frame.payload) === false) this.#pauseUntil(existing);
          break;
        case frameTypes.end:
          existing?.onEnd();
          break;
        case frameTypes.close:
          if (existing !== undefined) this.#closeLocal(existing);
          break;
      }
    }
  }

  /** A local consumer is full: stop reading the carrier until it says it drained (resume()). */
  #pauseUntil(channel: MuxChannel): void {
    this.#pausedBy++;
    this.#input.pause();
    const resume = () => {
      this.#pausedBy = Math.max(0, this.#pausedBy - 1);
      if (this.#pausedBy === 0 && !this.#failed) this.#input.resume();
    };
    (channel as MuxChannel & { resumeCarrier?: () => void }).resumeCarrier = resume;
  }
}

/**
 * Joins a channel and a local stream (a socket to sandboxd, a client of the egress proxy): bytes both ways, half-closes
 * and closes passed on, backpressure honoured both ways.
 */
export function bridgeChannel(mux: StreamMux, channel: MuxChannel, local: Duplex): void {
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    channel.close();
    local.destroy();
  };
  channel.onData = (data) => {
    const ok = local.write(data);
    if (!ok) {
      local.once('drain', () => (channel as MuxChannel & { resumeCarrier?: () => void }).resumeCarrier?.());
      return false;
    }
    return true;
  };
  channel.onEnd = () => local.end();
  channel.onClose = () => {
    done = true;
    local.destroy();
  };
  local.on('data', (data: Buffer) => {
    if (!channel.write(data)) {
      local.pause();
      mux.onCarrierDrain(() => local.resume());
    }
  });
  local.on('end', () => channel.end());
  local.on('close', finish);
  local.on('error', finish);
}

/** Sends one request on a new channel and collects the whole answer (for small control requests). */
export function requestOverChannel(mux: StreamMux, target: string, body: Buffer, options: { timeoutMs: number; maxBytes?: number }): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const channel = mux.open(target);
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => {
      channel.close();
      reject(new Error(`no answer to ${target} within ${options.timeoutMs} ms`));
    }, options.timeoutMs);
    channel.onData = (data) => {
      size += data.length;
      if (size > (options.maxBytes ?? 1024 * 1024)) {
        clearTimeout(timer);
        channel.close();
        reject(new Error(`the answer to ${target} is too large`));
        return;
      }
      chunks.push(data);
    };
    channel.onEnd = () => {
      clearTimeout(timer);
      channel.close();
      resolve(Buffer.concat(chunks));
    };
    channel.onClose = () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    };
    channel.write(body);
    channel.end();
  });
}
