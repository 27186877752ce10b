// Step timings for slow integration tests (image builds, imports): each step's duration, printed once at the end, so
// a run that got slower says where.

export interface Timings {
  /** Runs the step and records how long it took, whether it succeeded or not. */
  timed: <T>(what: string, step: () => Promise<T>) => Promise<T>;
  /** "what 1.2 s, ..." */
  summary: () => string;
}

export function createTimings(): Timings {
  const entries: string[] = [];
  return {
    timed: async (what, step) => {
      const started = performance.now();
      try {
        return await step();
      } finally {
        entries.push(`${what} ${((performance.now() - started) / 1000).toFixed(1)} s`);
      }
    },
    summary: () => entries.join(', '),
  };
}
