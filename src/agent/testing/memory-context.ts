// Unit tests only: a real context store (agent/context) over an in-memory SQLite database, usable as the loop's
// EventSink, with the events readable back in the same shape EventLog.list returns.
import { EventLog, type EventSink, type JobEvent, type JobEventType } from '../../jobs/event-log.ts';
import { ContextStore } from '../context/context-store.ts';
import type { Embedder } from '../context/embeddings.ts';
import { estimateCounter, type TokenCounter } from '../context/tokens.ts';

export class MemoryContext implements EventSink {
  readonly log: EventLog;
  readonly store: ContextStore;

  constructor(options: { jobId?: string; counter?: TokenCounter; embedder?: Embedder; path?: string } = {}) {
    this.log = new EventLog(options.jobId ?? 'job_test', options.path ?? ':memory:');
    this.store = new ContextStore(this.log, { counter: options.counter ?? estimateCounter(), embedder: options.embedder });
  }

  append(type: JobEventType, step: number, data: Record<string, unknown>): JobEvent {
    return this.store.append(type, step, data);
  }

  get events(): JobEvent[] {
    return this.log.list(0, 10_000_000);
  }

  ofType(type: JobEventType): JobEvent[] {
    return this.events.filter((event) => event.type === type);
  }

  close(): void {
    this.log.close();
  }
}
