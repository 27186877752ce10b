// Unit tests only: an EventSink that keeps events in an array, with the same shape EventLog.append returns.
import type { EventSink, JobEvent, JobEventType } from '../../jobs/event-log.ts';

export class MemoryEvents implements EventSink {
  readonly events: JobEvent[] = [];
  readonly jobId: string;

  constructor(jobId = 'job_test') {
    this.jobId = jobId;
  }

  append(type: JobEventType, step: number, data: Record<string, unknown>): JobEvent {
    // A JSON round trip, as EventLog stores it: data that does not survive it would be lost in the real log.
    const event: JobEvent = { seq: this.events.length + 1, job_id: this.jobId, type, step, time: new Date().toISOString(), data: JSON.parse(JSON.stringify(data)) as Record<string, unknown> };
    this.events.push(event);
    return event;
  }

  ofType(type: JobEventType): JobEvent[] {
    return this.events.filter((event) => event.type === type);
  }
}
