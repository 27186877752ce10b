// The HTTP load generator, run as its own process (`node bench/http-load.ts '<LoadOptions JSON>'`) so that it does
// not share the server's event loop: `connections` loops, each sending one request at a time over a keep-alive
// connection (fetch), for warmupMs (not recorded) and then durationMs. Prints a LoadReport as JSON on stdout.
// Only requests that complete inside the measured window count; they are the throughput and the latencies.

export interface LoadOptions {
  url: string;
  method: 'GET' | 'POST';
  body?: string;
  contentType?: string;
  connections: number;
  warmupMs: number;
  durationMs: number;
}

export interface LoadReport {
  latenciesMs: number[];
  errors: number;
  /** The first failure's description, to say why errors is not 0. */
  firstError?: string;
  windowMs: number;
}

async function generateLoad(options: LoadOptions): Promise<LoadReport> {
  const windowStart = performance.now() + options.warmupMs;
  const windowEnd = windowStart + options.durationMs;
  const headers = options.contentType === undefined ? undefined : { 'content-type': options.contentType };
  const report: LoadReport = { latenciesMs: [], errors: 0, windowMs: options.durationMs };
  const connection = async () => {
    while (performance.now() < windowEnd) {
      const started = performance.now();
      let failure: string | undefined;
      try {
        const response = await fetch(options.url, { method: options.method, body: options.body, headers });
        await response.arrayBuffer(); // a connection goes back to the pool only once its body is read
        if (!response.ok) failure = `${options.method} ${options.url} answered ${response.status}`;
      } catch (error) {
        failure = `${options.method} ${options.url} failed: ${error instanceof Error ? error.message : String(error)}`;
      }
      const finished = performance.now();
      if (finished < windowStart || finished > windowEnd) continue;
      if (failure === undefined) {
        report.latenciesMs.push(finished - started);
      } else {
        report.errors++;
        report.firstError ??= failure;
      }
    }
  };
  await Promise.all(Array.from({ length: options.connections }, connection));
  return report;
}

if (import.meta.main) {
  const options = JSON.parse(process.argv[2] ?? '') as LoadOptions;
  process.stdout.write(JSON.stringify(await generateLoad(options)));
}
