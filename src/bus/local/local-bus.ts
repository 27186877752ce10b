// The event bus of a single process: an EventEmitter keyed by job id.
import { EventEmitter } from 'node:events';
import type { EventBus, EventNotice } from '../types.ts';

export class LocalEventBus implements EventBus {
  readonly #emitter = new EventEmitter().setMaxListeners(0);

  publish(notice: EventNotice): void {
    this.#emitter.emit(notice.job_id, notice);
  }

  subscribe(jobId: string, listener: (notice: EventNotice) => void): () => void {
    this.#emitter.on(jobId, listener);
    return () => this.#emitter.off(jobId, listener);
  }

  async close(): Promise<void> {
    this.#emitter.removeAllListeners();
  }
}
