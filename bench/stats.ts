// Summary statistics for benchmark samples: the one place that defines what n, median and p95 mean in bench/.
export interface Summary {
  n: number;
  median: number;
  p95: number;
  p99: number;
  min: number;
  max: number;
}

/** Median (mean of the middle two when n is even), p95 and p99 by nearest rank (p95: the smallest sample >= 95 % of them). */
export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) throw new Error('summarize: no samples (the measurement recorded nothing)');
  const sorted = [...samples].sort((a, b) => a - b);
  const n = sorted.length;
  const at = (index: number) => sorted[index] as number;
  const middle = Math.floor(n / 2);
  return {
    n,
    median: n % 2 === 1 ? at(middle) : (at(middle - 1) + at(middle)) / 2,
    p95: at(Math.ceil(0.95 * n) - 1),
    p99: at(Math.ceil(0.99 * n) - 1),
    min: at(0),
    max: at(n - 1),
  };
}

/** One row of the results: a latency summary in milliseconds, plus a rate for the HTTP load rows. */
export interface Result {
  /** The numbered measurement this row belongs to, e.g. "1. sandbox create → sandboxd ready". */
  group: string;
  name: string;
  /** A row measured in the same run to compare the measured thing against (same machine, same moment). */
  baseline: boolean;
  latencyMs: Summary;
  /** What latencyMs's numbers are when they are not milliseconds (the density rows: MiB per sandbox). */
  unit?: 'MiB';
  requestsPerSecond?: number;
  /** Requests that failed or answered non-2xx (HTTP load rows); they are not in latencyMs. */
  errors?: number;
}
