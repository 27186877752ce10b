// The `workcell` command: `serve` runs the orchestrator; `run`, `status`, `logs`, `download`, `cancel`, `jobs`
// talk to a running server (WORKCELL_URL, default http://127.0.0.1:8080); `doctor` and `image build` work on
// this host. Errors print one line on stderr and exit non-zero; data goes to stdout. Whatever came from the server
// (much of it written by the model or the sandbox) is printed through terminalSafe/terminalJson, never raw.
import { Command, InvalidArgumentError, Option } from 'commander';
import { createWriteStream } from 'node:fs';
import { rename } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { version } from '../version.ts';
import { ClientError, WorkcellClient } from './client.ts';
import { renderEvent } from './render.ts';
import { terminalJson, terminalSafe } from './terminal-safe.ts';

const program = new Command('workcell')
  .description('Runs coding agents in isolated sandboxes')
  .version(version)
  .showHelpAfterError()
  .configureOutput({ outputError: (text, write) => write(text) });

const urlOption = () => new Option('--url <url>', 'workcell server').env('WORKCELL_URL').default('http://127.0.0.1:8080');
/** The API key comes from the environment only: a key on the command line would show in `ps` and shell history. */
const client = (options: { url: string }) => new WorkcellClient(options.url, process.env.WORKCELL_API_KEY);
const positiveInt = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
};
const port = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('expected a port number (0-65535)');
  return n;
};
const jobIdArgument = (value: string) => {
  if (!/^job_[0-9a-z]{26}$/.test(value)) throw new InvalidArgumentError('expected a job id like job_01h...');
  return value;
};

interface JobDetail {
  job_id: string;
  status: string;
  error?: string;
  summary?: string | null;
  artifacts_url?: string;
  download_url?: string;
}

program
  .command('serve')
  .description('run the orchestrator and an in-process worker')
  .option('--port <port>', 'port (WORKCELL_PORT, default 8080)', port)
  .option('--host <host>', 'address to listen on (WORKCELL_HOST, default 127.0.0.1)')
  .option('--data-dir <dir>', 'where workcell.db and jobs/ live (WORKCELL_DATA_DIR)')
  .option('--concurrency <n>', 'jobs run at once (WORKCELL_CONCURRENCY, default: cores)', positiveInt)
  .action(async (options: { port?: number; host?: string; dataDir?: string; concurrency?: number }) => {
    const { serve } = await import('./serve.ts');
    await serve({ port: options.port, host: options.host, dataDir: options.dataDir, concurrency: options.concurrency });
  });

program
  .command('run')
  .description('schedule a task, follow it live, and download the zipped workspace')
  .argument('<task>', 'what the agent should do')
  .addOption(urlOption())
  .option('--model <provider:model>', 'model for this job (default: the server\'s WORKCELL_MODEL)')
  .option('--runtime <name>', 'sandbox runtime: auto or bwrap')
  .option('--wall-time <seconds>', 'wall-clock limit', positiveInt)
  .option('--max-steps <n>', 'step limit', positiveInt)
  .option('-o, --output <file>', 'where to save the zip (default: <job id>.zip)')
  .option('--extract <dir>', 'unpack the zip into this folder')
  .option('--no-download', 'do not download the workspace')
  .action(async (task: string, options: { url: string; model?: string; runtime?: string; wallTime?: number; maxSteps?: number; output?: string; extract?: string; download: boolean }) => {
    const api = client(options);
    const limits = { ...(options.wallTime ? { wall_time_s: options.wallTime } : {}), ...(options.maxSteps ? { max_steps: options.maxSteps } : {}) };
    const { job_id } = await api.json<{ job_id: string }>('POST', '/schedule', {
      task,
      ...(options.model ? { model: options.model } : {}),
      ...(options.runtime ? { runtime: options.runtime } : {}),
      ...(Object.keys(limits).length ? { limits } : {}),
    });
    process.stderr.write(`${terminalSafe(job_id)}\n`);
    await follow(api, job_id);
    const job = await api.json<JobDetail>('GET', `/jobs/${job_id}`);
    if (options.download && job.artifacts_url) await download(api, job_id, options.output, options.extract);
    if (job.status !== 'complete') process.exitCode = 1;
  });

program
  .command('status')
  .description('show a job\'s status')
  .argument('<job-id>', 'job id', jobIdArgument)
  .addOption(urlOption())
  .option('--json', 'print the full job as JSON')
  .action(async (jobId: string, options: { url: string; json?: boolean }) => {
    const job = await client(options).json<JobDetail>('GET', `/jobs/${jobId}`);
    if (options.json) console.log(terminalJson(job, 2));
    else console.log(`${terminalSafe(job.job_id)} ${terminalSafe(job.status)}${job.error ? `: ${terminalSafe(job.error)}` : ''}${job.summary ? `\n${terminalSafe(job.summary, { multiline: true })}` : ''}`);
  });

program
  .command('jobs')
  .description('list jobs, newest first')
  .addOption(urlOption())
  .option('--status <status>', 'only jobs with this status')
  .option('--limit <n>', 'how many', positiveInt, 20)
  .action(async (options: { url: string; status?: string; limit: number }) => {
    const query = new URLSearchParams({ limit: String(options.limit), ...(options.status ? { status: options.status } : {}) });
    const { jobs } = await client(options).json<{ jobs: Array<JobDetail & { created_at: string; task: string }> }>('GET', `/jobs?${query.toString()}`);
    for (const job of jobs) console.log(`${terminalSafe(job.job_id)}  ${terminalSafe(job.status.padEnd(9))}  ${terminalSafe(job.created_at)}  ${terminalSafe(job.task.replace(/\s+/g, ' ').slice(0, 60))}`);
  });

program
  .command('logs')
  .description('print a job\'s events')
  .argument('<job-id>', 'job id', jobIdArgument)
  .addOption(urlOption())
  .option('-f, --follow', 'keep following until the job ends')
  .option('--json', 'one JSON event per line')
  .action(async (jobId: string, options: { url: string; follow?: boolean; json?: boolean }) => {
    await follow(client(options), jobId, { follow: options.follow ?? false, json: options.json ?? false });
  });

program
  .command('download')
  .description('download a job\'s zipped workspace')
  .argument('<job-id>', 'job id', jobIdArgument)
  .addOption(urlOption())
  .option('-o, --output <file>', 'where to save it (default: <job id>.zip)')
  .option('--extract <dir>', 'unpack it into this folder (entries that would escape it are refused)')
  .action(async (jobId: string, options: { url: string; output?: string; extract?: string }) => {
    await download(client(options), jobId, options.output, options.extract);
  });

program
  .command('cancel')
  .description('cancel a job')
  .argument('<job-id>', 'job id', jobIdArgument)
  .addOption(urlOption())
  .action(async (jobId: string, options: { url: string }) => {
    const result = await client(options).json<{ job_id: string; status: string }>('POST', `/jobs/${jobId}/cancel`);
    console.log(`${terminalSafe(result.job_id)} ${result.status === 'running' ? 'cancelling' : terminalSafe(result.status)}`);
  });

program
  .command('open')
  .description("print a one-time link to a running job's desktop, Jupyter or terminal (opens once, within two minutes; the desktop and Jupyter are on the job's own origin)")
  .argument('<job-id>', 'job id', jobIdArgument)
  .argument('<service>', 'desktop, jupyter or terminal (a websocket URL)', (value: string) => {
    if (!['desktop', 'jupyter', 'terminal'].includes(value)) throw new InvalidArgumentError('one of desktop, jupyter, terminal');
    return value;
  })
  .addOption(urlOption())
  .action(async (jobId: string, service: string, options: { url: string }) => {
    const link = await client(options).json<{ url: string }>('POST', `/jobs/${jobId}/links`, { service });
    console.log(terminalSafe(link.url));
  });

program
  .command('doctor')
  .description('what isolation this host supports')
  .option('--json', 'print the probe as JSON')
  .action(async (options: { json?: boolean }) => {
    const { doctor } = await import('./doctor.ts');
    process.exitCode = await doctor(options.json ?? false);
  });

program
  .command('image')
  .description('the sandbox image')
  .command('build')
  .description('build the sandbox rootfs (debootstrap; cached by a hash of image/)')
  .option('--force', 'rebuild even if the current recipe is built')
  .action(async (options: { force?: boolean }) => {
    const [{ loadConfig }, { buildRootfs }] = await Promise.all([import('../config.ts'), import('../runtimes/image.ts')]);
    const path = await buildRootfs(loadConfig(), { log: (line: string) => process.stderr.write(`${line}\n`), force: options.force ?? false });
    console.log(path);
  });

const keys = program.command('keys').description('API keys (local administration: works on the data dir, not through the API)');
const keyStore = async (dataDir?: string) => {
  const [{ loadConfig }, { JobStore }] = await Promise.all([import('../config.ts'), import('../jobs/job-store.ts')]);
  return new JobStore(loadConfig(process.env, dataDir === undefined ? {} : { dataDir }).dataDir);
};
keys
  .command('create')
  .description('create a key; its token is printed once, on stdout')
  .requiredOption('--name <name>', 'who or what the key is for')
  .option('--data-dir <dir>', 'the server\'s data dir (WORKCELL_DATA_DIR)')
  .action(async (options: { name: string; dataDir?: string }) => {
    if (!/^[\w .@-]{1,100}$/.test(options.name)) throw new InvalidArgumentError('--name: 1-100 letters, digits, spaces and . _ @ -');
    const store = await keyStore(options.dataDir);
    try {
      const { id, token } = store.createApiKey(options.name);
      process.stderr.write(`created ${id}; clients send it as WORKCELL_API_KEY (it is not shown again)\n`);
      console.log(token);
    } finally {
      store.close();
    }
  });
keys
  .command('list')
  .description('list keys (never their secrets)')
  .option('--data-dir <dir>', 'the server\'s data dir (WORKCELL_DATA_DIR)')
  .action(async (options: { dataDir?: string }) => {
    const store = await keyStore(options.dataDir);
    try {
      for (const key of store.listApiKeys()) console.log(`${key.id}  ${key.revoked_at ? 'revoked' : 'active '}  ${key.created_at}  ${terminalSafe(key.name)}`);
    } finally {
      store.close();
    }
  });
keys
  .command('revoke')
  .description('revoke a key: it stops working at once')
  .argument('<key-id>', 'key id (key_...)')
  .option('--data-dir <dir>', 'the server\'s data dir (WORKCELL_DATA_DIR)')
  .action(async (id: string, options: { dataDir?: string }) => {
    const store = await keyStore(options.dataDir);
    try {
      if (!store.revokeApiKey(id)) throw new Error(`no active key ${JSON.stringify(id)}`);
      console.log(`${id} revoked`);
    } finally {
      store.close();
    }
  });

program
  .command('openapi')
  .description('print the OpenAPI document')
  .action(async () => {
    const { openApiDocument } = await import('./serve.ts');
    console.log(JSON.stringify(await openApiDocument(), null, 2));
  });

async function follow(api: WorkcellClient, jobId: string, options = { follow: true, json: false }): Promise<void> {
  for await (const event of api.events(jobId, { follow: options.follow })) {
    const line = options.json ? terminalJson(event.data) : renderEvent(event.data);
    if (line !== undefined) console.log(line);
  }
}

async function download(api: WorkcellClient, jobId: string, output = `${jobId}.zip`, extractTo?: string): Promise<void> {
  const response = await api.download(`/jobs/${jobId}/artifacts.zip`);
  const partial = `${output}.part`;
  await pipeline(Readable.fromWeb(response.body as WebReadableStream), createWriteStream(partial));
  await rename(partial, output);
  process.stderr.write(`saved ${output}\n`);
  if (extractTo) {
    const { extractZip } = await import('./extract.ts');
    const { files } = await extractZip(output, extractTo);
    process.stderr.write(`extracted ${files} files into ${extractTo}\n`);
  }
}

try {
  await program.parseAsync();
} catch (error) {
  const message = error instanceof ClientError || error instanceof Error ? error.message : String(error);
  process.stderr.write(`workcell: ${terminalSafe(message)}\n`);
  process.exitCode = error instanceof ClientError && error.status === 404 ? 3 : 1;
}
