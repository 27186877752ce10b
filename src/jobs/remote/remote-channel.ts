// A sandbox held by a worker in another process, on this host or another: the API's requests to its sandboxd go
// through that worker's internal route (internal-server.ts), signed (internal-auth.ts). What comes back is
// sandboxd's own answer, byte for byte, so the API's routes treat it as they treat a sandbox of their own.
import { request as httpRequest, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { pipeline } from 'node:stream';
import { SandboxdError, type ForwardOptions, type SandboxdChannel, type UpgradeResult } from '../../runtimes/sandboxd-client.ts';
import { internalHeader, signInternal } from './internal-auth.ts';

/** Set by the worker on answers of its own (not sandboxd's): the job is not there, or the request was refused. */
export const refusalHeader = 'x-workcell-internal-refusal';

export function internalPath(jobId: string, sandboxdPath: string): string {
  return `/internal/v1/jobs/${jobId}/sandboxd${sandboxdPath}`;
}

export class RemoteSandboxdChannel implements SandboxdChannel {
  readonly #worker: URL;
  readonly #jobId: string;
  readonly #secret: Buffer;

  constructor(worker: URL, jobId: string, secret: Buffer) {
    this.#worker = worker;
    this.#jobId = jobId;
    this.#secret = secret;
  }

  forward(options: ForwardOptions): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = this.#request(options.method, options.path, options.headers, options.signal);
      req.on('response', (response) => {
        if (response.headers[refusalHeader] === undefined) return resolve(response);
        refusal(response).then(reject, reject);
      });
      req.on('error', (error) => reject(this.#unreachable(error)));
      if (options.body) pipeline(options.body, req, () => undefined);
      else req.end();
    });
  }

  upgrade(path: string, headers: OutgoingHttpHeaders): Promise<UpgradeResult> {
    return new Promise((resolve, reject) => {
      const req = this.#request('GET', path, { ...headers, connection: 'Upgrade' });
      req.on('upgrade', (response, socket, head) => resolve({ response, socket, head }));
      req.on('response', (response) => {
        if (response.headers[refusalHeader] === undefined) return resolve({ response });
        refusal(response).then(reject, reject);
      });
      req.on('error', (error) => reject(this.#unreachable(error)));
      req.end();
    });
  }

  #request(method: string, sandboxdPath: string, headers: OutgoingHttpHeaders, signal?: AbortSignal): ClientRequest {
    const path = internalPath(this.#jobId, sandboxdPath);
    const options: RequestOptions = {
      protocol: this.#worker.protocol,
      hostname: this.#worker.hostname.replace(/^\[|\]$/g, ''),
      port: this.#worker.port,
      method,
      path,
      headers: { ...headers, [internalHeader]: signInternal(this.#secret, method, path) },
      ...(signal === undefined ? {} : { signal }),
    };
    return this.#worker.protocol === 'https:' ? httpsRequest(options) : httpRequest(options);
  }

  #unreachable(error: Error): SandboxdError {
    return new SandboxdError('unreachable', `cannot reach the worker that runs job ${this.#jobId} (${this.#worker.origin}): ${error.message}`, { cause: error });
  }
}

/** The worker's own refusal, as the error it is. */
async function refusal(response: IncomingMessage): Promise<never> {
  let text = '';
  for await (const chunk of response as AsyncIterable<Buffer>) {
    if (text.length < 2000) text += chunk.toString('utf8');
  }
  throw new SandboxdError('unreachable', `the worker that runs the job refused: ${text.trim().slice(0, 500) || response.statusCode}`);
}
