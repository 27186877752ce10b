// The `workcell` command: `serve` runs the orchestrator; `run`, `status`, `logs`, `jobs`, `download`, `cancel`, `send`,
// `files`, `diff`, `audit`, `open` and `terminal` talk to a running server (WORKCELL_URL, default
// http://127.0.0.1:8080) through the typed client (src/client); `doctor`, `image build` and `keys` work on this host.
// Errors print one line on stderr and exit non-zero (3: no such job); data goes to stdout, and `--json` makes it one
// JSON document (JSON lines for streams). Whatever came from the server (much of it written by the model or the
// sandbox) is printed through terminalSafe/terminalJson, never raw to a terminal (output.ts); only `terminal` is raw,
// by request.
import { Command, InvalidArgumentError, Option } from 'commander';
import { createWriteStream, openAsBlob } from 'node:fs';
import { rename, stat } from 'node:fs/promises';
import { basename, isAbsolute, relative, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createClient, WorkcellApiError, WorkcellClientError, type JobState, type ScheduleOptions, type ScheduleUploads, type WorkcellClient } from '../client/index.ts';
import { version } from '../version.ts';
import { printJson, printJsonLine, writeContent } from './output.ts';
import { renderEvent } from './render.ts';
import { terminalSafe } from './terminal-safe.ts';

const program = new Command('workcell')
  .description('Runs coding agents in isolated sandboxes')
  .version(version)
  .showHelpAfterError()
  .configureOutput({ outputError: (text, write) => write(text) });

const urlOption = () => new Option('--url <url>', 'workcell server').env('WORKCELL_URL').default('http://127.0.0.1:8080');
const jsonOption = (what = 'print JSON') => new Option('--json', what);
/** The API key comes from the environment only: a key on the command line would show in `ps` and shell history. */
const apiKey = () => (process.env.WORKCELL_API_KEY === '' ? undefined : process.env.WORKCELL_API_KEY);
const client = (options: { url: string }) => createClient({ baseUrl: options.url, ...(apiKey() === undefined ? {} : { apiKey: apiKey() }) });
const positiveInt = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
};
const nonNegativeInt = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number, 0 or more');
  return n;
};
const positiveNumber = (value: string) => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number, e.g. 0.5 or 2');
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
const repeatable = (value: string, previous: string[] = []) => [...previous, value];
const jobStates = ['pending', 'running', 'complete', 'error', 'cancelled'] as const;

program
  .command('serve')
  .description('run the API and an in-process worker; with --no-worker, the API alone (workers run `workcell worker`)')
  .option('--port <port>', 'port (WORKCELL_PORT, default 8080)', port)
  .option('--host <host>', 'address to listen on (WORKCELL_HOST, default 127.0.0.1)')
  .option('--data-dir <dir>', 'where workcell.db and jobs/ live (WORKCELL_DATA_DIR)')
  .option('--concurrency <n>', 'jobs run at once (WORKCELL_CONCURRENCY, default: cores)', positiveInt)
  .option('--no-worker', 'run no jobs here: an API replica for workers elsewhere (needs WORKCELL_DATABASE_URL)')
  .action(async (options: { port?: number; host?: string; dataDir?: string; concurrency?: number; worker: boolean }) => {
    const { serve } = await import('./serve.ts');
    await serve({ port: options.port, host: options.host, dataDir: options.dataDir, concurrency: options.concurrency }, options.worker ? 'all' : 'api');
  });

program
  .command('worker')
  .description('claim and run jobs, with no public API: beside `workcell serve --no-worker` replicas on one Postgres (WORKCELL_DATABASE_URL)')
  .option('--data-dir <dir>', 'where jobs/ live, shared with the API replicas (WORKCELL_DATA_DIR)')
  .option('--concurrency <n>', 'jobs run at once (WORKCELL_CONCURRENCY, default: cores)', positiveInt)
  .option('--internal-host <host>', 'address of the internal route API replicas reach this worker on (WORKCELL_INTERNAL_HOST, default 127.0.0.1)')
  .option('--internal-port <port>', "the internal route's port (WORKCELL_INTERNAL_PORT, default: any free one)", port)
  .action(async (options: { dataDir?: string; concurrency?: number; internalHost?: string; internalPort?: number }) => {
    const { serve } = await import('./serve.ts');
    await serve({ dataDir: options.dataDir, concurrency: options.concurrency, internalHost: options.internalHost, internalPort: options.internalPort }, 'worker');
  });

interface RunOptions {
  url: string;
  model?: string;
  runtime?: string;
  wallTime?: number;
  maxSteps?: number;
  cpus?: number;
  memory?: number;
  allow?: string[];
  file?: string[];
  archive?: string;
  repo?: string;
  detach?: boolean;
  output?: string;
  extract?: string;
  download: boolean;
  json?: boolean;
}

program
  .command('run')
  .description('schedule a task, follow it live, and download the zipped workspace')
  .argument('<task>', 'what the agent should do')
  .addOption(urlOption())
  .option('--model <provider:model>', "model for this job (default: the server's WORKCELL_MODEL)")
  .option('--runtime <name>', 'sandbox runtime: auto, bwrap, docker, gvisor or microvm')
  .option('--wall-time <seconds>', 'wall-clock limit', positiveInt)
  .option('--max-steps <n>', 'step limit', positiveInt)
  .option('--cpus <n>', "CPUs for the sandbox (may be fractional; at most the server's WORKCELL_CPUS)", positiveNumber)
  .option('--memory <MB>', "memory for the sandbox, MB (at most the server's WORKCELL_MEMORY_MB)", positiveInt)
  .option('--allow <destination>', 'a destination the sandbox may reach: host, host:port, *.domain, an IP (repeatable)', repeatable)
  .option('--file <path>', 'a file under the current directory, uploaded to the same path in /workspace (repeatable)', repeatable)
  .option('--archive <file>', 'a tar, tar.gz or zip unpacked into /workspace')
  .option('--repo <url[#ref]>', 'a git repository (https) the server clones into /workspace, at a branch, tag or commit after #')
  .option('--detach', 'print the job id and exit instead of following it')
  .option('-o, --output <file>', 'where to save the zip (default: <job id>.zip)')
  .option('--extract <dir>', 'unpack the zip into this folder')
  .option('--no-download', 'do not download the workspace')
  .addOption(jsonOption('print the events as JSON lines (with --detach: {"job_id"})'))
  .action(async (task: string, options: RunOptions) => {
    const api = client(options);
    const uploads = await uploadsFrom(options.file ?? [], options.archive);
    const limits = {
      ...(options.wallTime ? { wall_time_s: options.wallTime } : {}),
      ...(options.maxSteps ? { max_steps: options.maxSteps } : {}),
      ...(options.cpus ? { cpus: options.cpus } : {}),
      ...(options.memory ? { memory_mb: options.memory } : {}),
    };
    const body: ScheduleOptions = {
      task,
      ...(options.model ? { model: options.model } : {}),
      // The server checks the name and says which it takes.
      ...(options.runtime ? { runtime: options.runtime as NonNullable<ScheduleOptions['runtime']> } : {}),
      ...(Object.keys(limits).length ? { limits } : {}),
      ...(options.allow ? { network: { allow: options.allow } } : {}),
      ...(options.repo ? { inputs: { git: gitInput(options.repo) } } : {}),
    };
    const { job_id } = await api.schedule(body, uploads);
    if (options.detach) {
      if (options.json) printJson({ job_id });
      else console.log(terminalSafe(job_id));
      return;
    }
    process.stderr.write(`${terminalSafe(job_id)}\n`);
    await follow(api, job_id, { follow: true, json: options.json ?? false });
    const job = await api.get(job_id);
    if (options.download && job.artifacts_url) await download(api, job_id, { output: options.output, extractTo: options.extract });
    if (job.status !== 'complete') process.exitCode = 1;
  });

program
  .command('status')
  .description("show a job's status")
  .argument('<job-id>', 'job id', jobIdArgument)
  .addOption(urlOption())
  .addOption(jsonOption('print the full job as JSON'))
  .action(async (jobId: string, options: { url: string; json?: boolean }) => {
    const job = await client(options).get(jobId);
    if (options.json) printJson(job);
    else console.log(`${terminalSafe(job.job_id)} ${terminalSafe(job.status)}${job.error ? `: ${terminalSafe(job.error)}` : ''}${job.summary ? `\n${terminalSafe(job.summary, { multiline: true })}` : ''}`);
  });

program
  .command('jobs')
  .description('list jobs, newest first')
  .addOption(urlOption())
  .addOption(new Option('--status <status>', 'only jobs with this status').choices(jobStates))
  .option('--limit <n>', 'how many (at most 200)', positiveInt, 20)
  .addOption(jsonOption('print the page as JSON ({jobs, next_cursor})'))
  .action(async (options: { url: string; status?: JobState; limit: number; json?: boolean }) => {
    const page = await client(options).list({ limit: options.limit, ...(options.status ? { status: options.status } : {}) });
    if (options.json) return printJson(page);
    for (const job of page.jobs) console.log(`${terminalSafe(job.job_id)}  ${terminalSafe(job.status.padEnd(9))}  ${terminalSafe(job.created_at)}  ${terminalSafe(job.task.replace(/\s+/g, ' ').slice(0, 60))}`);
  });

program
  .command('logs')
  .description("print a job's events")
  .argument('<job-id>', 'job id', jobIdArgument)
  .addOption(urlOption())
  .option('-f, --follow', 'keep following until the job ends')
  .addOption(jsonOption('one JSON event per line'))
  .action(async (jobId: string, options: { url: string; follow?: boolean; json?: boolean }) => {
    await follow(client(options), jobId, { follow: options.follow ?? false, json: options.json ?? false });
  });

program
  .command('download')
  .description("download a job's zipped workspace")
  .argument('<job-id>', 'job id', jobIdArgument)
  .addOption(urlOption())
  .option('-o, --output <file>', 'where to save it (default: <job id>.zip)')
  .option('--extract <dir>', 'unpack it into this folder (entries that would escape it are refused)')
  .addOption(jsonOption('print {job_id, output, bytes, extracted_to, files} as JSON'))
  .action(async (jobId: string, options: { url: string; output?: string; extract?: string; json?: boolean }) => {
    const saved = await download(client(options), jobId, { output: options.output, extractTo: options.extract, quiet: options.json });
    if (options.json) printJson({ job_id: jobId, ...saved });
  });

program
  .command('cancel')
  .description('cancel a job')
  .argument('<job-id>', 'job id', jobIdArgument)
  .addOption(urlOption())
  .addOption(jsonOption())
  .action(async (jobId: string, options: { url: string; json?: boolean }) => {
    const result = await client(options).cancel(jobId);
    if (options.json) printJson(result);
    else console.log(`${terminalSafe(result.job_id)} ${result.status === 'running' ? 'cancelling' : terminalSafe(result.status)}`);
  });

program
  .command('send')
  .description('send the agent a follow-up instruction; to a finished job it continues the job (a new run, same workspace)')
  .argument('<job-id>', 'job id', jobIdArgument)
  .argument('<text>', 'the instruction (- reads it from stdin)')
  .addOption(urlOption())
  .addOption(jsonOption('print {job_id, event_id, run, reopened} as JSON'))
  .action(async (jobId: string, text: string, options: { url: string; json?: boolean }) => {
    const message = text === '-' ? await readStdin() : text;
    if (message.trim() === '') throw new Error('the message is empty: say what the agent should do');
    const sent = await client(options).send(jobId, message);
    if (options.json) return printJson(sent);
    console.log(`${terminalSafe(sent.job_id)}: message ${sent.event_id} for run ${sent.run}${sent.reopened ? ' (the job continues: follow it with `workcell logs -f`)' : ''}`);
  });

program
  .command('files')
  .description("list a directory of a job's workspace or print a file; --put uploads a local file to the path, --rm deletes it")
  .argument('<job-id>', 'job id', jobIdArgument)
  .argument('[path]', 'the path in /workspace (default: its root)', '')
  .addOption(urlOption())
  .addOption(new Option('--put <local-file>', 'upload this local file to the path (created or replaced)').conflicts('rm'))
  .option('--rm', 'delete the file, link or empty directory at the path')
  .option('--if-match <etag>', 'with --put or --rm: only if the file is still this version (its ETag)')
  .addOption(jsonOption('print JSON: the listing, the file ({path, etag, content_type, size, text or base64}), or the result'))
  .action(async (jobId: string, path: string, options: { url: string; put?: string; rm?: boolean; ifMatch?: string; json?: boolean }) => {
    const api = client(options);
    if (options.ifMatch !== undefined && options.put === undefined && !options.rm) throw new Error('--if-match goes with --put or --rm');
    if (options.put !== undefined) return putFile(api, jobId, path, options.put, options);
    if (options.rm) {
      if (path === '') throw new Error('--rm needs the path of what to delete');
      const deleted = await api.files.remove(jobId, path, options.ifMatch === undefined ? {} : { ifMatch: options.ifMatch });
      if (options.json) return printJson(deleted);
      return console.log(`deleted ${terminalSafe(deleted.path)} (${deleted.type})`);
    }
    const entry = await api.files.get(jobId, path);
    if (entry.type === 'directory') {
      if (options.json) return printJson(entry.listing);
      for (const item of entry.listing.entries) {
        const size = item.type === 'directory' ? '-' : String(item.size);
        const name = `${terminalSafe(item.name)}${item.type === 'directory' ? '/' : ''}${item.target === undefined ? '' : ` -> ${terminalSafe(item.target)}`}`;
        console.log(`${item.type.padEnd(9)} ${size.padStart(10)}  ${terminalSafe(item.mtime)}  ${name}`);
      }
      if (entry.listing.truncated) process.stderr.write('(the listing is truncated: the directory has more entries)\n');
      return;
    }
    if (options.json) {
      const content = entry.text === undefined ? { base64: Buffer.from(entry.bytes).toString('base64') } : { text: entry.text };
      return printJson({ path, etag: entry.etag, content_type: entry.contentType, size: entry.bytes.length, ...content });
    }
    await writeContent(entry.bytes, entry.text, path);
  });

program
  .command('diff')
  .description('what a job changed since its start: the files added, changed and deleted, or the unified diff')
  .argument('<job-id>', 'job id', jobIdArgument)
  .addOption(urlOption())
  .addOption(new Option('--patch', 'print the unified diff (`git apply` applies it)').conflicts('json'))
  .addOption(jsonOption('print the changes as JSON'))
  .action(async (jobId: string, options: { url: string; patch?: boolean; json?: boolean }) => {
    const api = client(options);
    if (options.patch) {
      const patch = await api.patch(jobId);
      return writeContent(new TextEncoder().encode(patch), patch, 'the patch');
    }
    const diff = await api.diff(jobId);
    if (options.json) return printJson(diff);
    const marks = { added: 'A', changed: 'M', deleted: 'D' } as const;
    for (const file of diff.files) {
      const sizes = file.change === 'changed' ? `${file.previous_size} -> ${file.size} bytes` : file.change === 'added' ? `${file.size} bytes` : '';
      console.log(`${marks[file.change]}  ${terminalSafe(file.path)}${file.type === 'symlink' ? ' (link)' : ''}${sizes === '' ? '' : `  (${sizes})`}`);
    }
    for (const skipped of diff.skipped) console.log(`?  ${terminalSafe(skipped.path)}  (${terminalSafe(skipped.reason)})`);
    const { added, changed, deleted } = diff.summary;
    console.log(`${added} added, ${changed} changed, ${deleted} deleted (job ${terminalSafe(diff.status)}${diff.truncated ? '; the workspace was too large to compare all of it' : ''})`);
  });

program
  .command('audit')
  .description("a job's audit log: every file operation and network connection")
  .argument('<job-id>', 'job id', jobIdArgument)
  .addOption(urlOption())
  .option('--after <n>', 'skip the first n entries', nonNegativeInt)
  .addOption(jsonOption('one JSON entry per line'))
  .action(async (jobId: string, options: { url: string; after?: number; json?: boolean }) => {
    const entries = await client(options).audit(jobId, options.after === undefined ? {} : { after: options.after });
    for (const entry of entries) {
      if (options.json) printJsonLine(entry);
      else console.log(auditLine(entry));
    }
  });

program
  .command('open')
  .description("print a one-time link to a running job's desktop, Jupyter or terminal (opens once, within two minutes; the desktop and Jupyter are on the job's own origin)")
  .argument('<job-id>', 'job id', jobIdArgument)
  .argument('<service>', 'desktop, jupyter or terminal (a websocket URL)', (value: string) => {
    if (!['desktop', 'jupyter', 'terminal'].includes(value)) throw new InvalidArgumentError('one of desktop, jupyter, terminal');
    return value as 'desktop' | 'jupyter' | 'terminal';
  })
  .addOption(urlOption())
  .addOption(jsonOption('print {url, expires_at} as JSON'))
  .action(async (jobId: string, service: 'desktop' | 'jupyter' | 'terminal', options: { url: string; json?: boolean }) => {
    const link = await client(options).link(jobId, service);
    if (options.json) printJson(link);
    else console.log(terminalSafe(link.url));
  });

program
  .command('terminal')
  .description("a terminal in a running job's sandbox: a new bash in /workspace (exit or Ctrl-D leaves), or --session to watch one of the agent's shells")
  .argument('<job-id>', 'job id', jobIdArgument)
  .addOption(urlOption())
  .option('--session <name>', "watch the agent's shell session with this name (read-only; e.g. main)", (value: string) => {
    if (!/^[A-Za-z0-9_-]{1,32}$/.test(value)) throw new InvalidArgumentError('a session name: 1-32 letters, digits, _ or -');
    return value;
  })
  .action(async (jobId: string, options: { url: string; session?: string }) => {
    const { runTerminal } = await import('./terminal.ts');
    process.exitCode = await runTerminal({ url: options.url, apiKey: apiKey(), jobId, ...(options.session === undefined ? {} : { session: options.session }) });
  });

program
  .command('doctor')
  .description('what isolation this host supports')
  .addOption(jsonOption('print the probe as JSON'))
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
  .addOption(jsonOption('print {path} as JSON'))
  .action(async (options: { force?: boolean; json?: boolean }) => {
    const [{ loadConfig }, { buildRootfs }] = await Promise.all([import('../config.ts'), import('../runtimes/image.ts')]);
    const path = await buildRootfs(loadConfig(), { log: (line: string) => process.stderr.write(`${line}\n`), force: options.force ?? false });
    if (options.json) printJson({ path });
    else console.log(path);
  });

const keys = program.command('keys').description("API keys (local administration: works on the server's store, WORKCELL_DATABASE_URL or else the data dir, not through the API)");
const openKeyStore = async (dataDir?: string) => {
  const [{ loadConfig }, { openStore }] = await Promise.all([import('../config.ts'), import('../store/index.ts')]);
  return openStore(loadConfig(process.env, dataDir === undefined ? {} : { dataDir }));
};
keys
  .command('create')
  .description('create a key; its token is printed once, on stdout')
  .requiredOption('--name <name>', 'who or what the key is for')
  .option('--data-dir <dir>', "the server's data dir (WORKCELL_DATA_DIR)")
  .addOption(jsonOption('print {id, token} as JSON'))
  .action(async (options: { name: string; dataDir?: string; json?: boolean }) => {
    if (!/^[\w .@-]{1,100}$/.test(options.name)) throw new InvalidArgumentError('--name: 1-100 letters, digits, spaces and . _ @ -');
    const store = await openKeyStore(options.dataDir);
    try {
      const { id, token } = await store.keys.create(options.name);
      process.stderr.write(`created ${id}; clients send it as WORKCELL_API_KEY (it is not shown again)\n`);
      if (options.json) printJson({ id, token });
      else console.log(token);
    } finally {
      await store.close();
    }
  });
keys
  .command('list')
  .description('list keys (never their secrets)')
  .option('--data-dir <dir>', "the server's data dir (WORKCELL_DATA_DIR)")
  .addOption(jsonOption('print the keys as JSON'))
  .action(async (options: { dataDir?: string; json?: boolean }) => {
    const store = await openKeyStore(options.dataDir);
    try {
      const list = await store.keys.list();
      if (options.json) return printJson(list.map((key) => ({ id: key.id, name: key.name, created_at: key.created_at, revoked_at: key.revoked_at ?? null })));
      for (const key of list) console.log(`${key.id}  ${key.revoked_at ? 'revoked' : 'active '}  ${key.created_at}  ${terminalSafe(key.name)}`);
    } finally {
      await store.close();
    }
  });
keys
  .command('revoke')
  .description('revoke a key: it stops working at once')
  .argument('<key-id>', 'key id (key_...)')
  .option('--data-dir <dir>', "the server's data dir (WORKCELL_DATA_DIR)")
  .addOption(jsonOption('print {id, revoked} as JSON'))
  .action(async (id: string, options: { dataDir?: string; json?: boolean }) => {
    const store = await openKeyStore(options.dataDir);
    try {
      if (!(await store.keys.revoke(id))) throw new Error(`no active key ${JSON.stringify(id)}`);
      if (options.json) printJson({ id, revoked: true });
      else console.log(`${id} revoked`);
    } finally {
      await store.close();
    }
  });

program
  .command('openapi')
  .description('print the OpenAPI document')
  .action(async () => {
    const { openApiDocument } = await import('../app.ts');
    console.log(JSON.stringify(await openApiDocument(), null, 2));
  });

async function follow(api: WorkcellClient, jobId: string, options: { follow: boolean; json: boolean }): Promise<void> {
  for await (const event of api.events(jobId, { follow: options.follow })) {
    if (options.json) printJsonLine(event);
    else {
      const line = renderEvent(event);
      if (line !== undefined) console.log(line);
    }
  }
}

async function download(api: WorkcellClient, jobId: string, options: { output?: string | undefined; extractTo?: string | undefined; quiet?: boolean | undefined }) {
  const output = options.output ?? `${jobId}.zip`;
  const body = await api.artifactsStream(jobId);
  const partial = `${output}.part`;
  await pipeline(Readable.fromWeb(body), createWriteStream(partial));
  await rename(partial, output);
  const { size } = await stat(output);
  if (!options.quiet) process.stderr.write(`saved ${output}\n`);
  if (options.extractTo === undefined) return { output, bytes: size };
  const { extractZip } = await import('./extract.ts');
  const { files } = await extractZip(output, options.extractTo);
  if (!options.quiet) process.stderr.write(`extracted ${files} files into ${options.extractTo}\n`);
  return { output, bytes: size, extracted_to: options.extractTo, files };
}

/** `--file` and `--archive` as the client's uploads: each file at its path under the current directory. */
async function uploadsFrom(files: string[], archive: string | undefined): Promise<ScheduleUploads> {
  const uploads: ScheduleUploads = {};
  if (files.length > 0) {
    uploads.files = await Promise.all(
      files.map(async (file) => {
        const path = relative(process.cwd(), resolve(file));
        if (path === '' || path.startsWith(`..${sep}`) || path === '..' || isAbsolute(path)) {
          throw new Error(`--file ${file}: give a file under the current directory (its path here is its path in /workspace); for other files, cd to their project or pack them with --archive`);
        }
        await requireFile(file, '--file');
        return { path: path.split(sep).join('/'), content: await openAsBlob(file) };
      }),
    );
  }
  if (archive !== undefined) {
    await requireFile(archive, '--archive');
    uploads.archive = { content: await openAsBlob(archive), name: basename(archive) };
  }
  return uploads;
}

async function requireFile(file: string, option: string): Promise<void> {
  const info = await stat(file).catch((error: NodeJS.ErrnoException) => {
    throw new Error(`${option} ${file}: ${error.code === 'ENOENT' ? 'no such file' : `cannot read it (${error.code ?? error.message})`}`);
  });
  if (!info.isFile()) throw new Error(`${option} ${file}: not a regular file${info.isDirectory() ? ' (a directory: give its files one by one, or pack it with --archive)' : ''}`);
}

/** `--repo <url>[#ref]` as inputs.git; the server checks the URL and the ref and says what is wrong. */
function gitInput(repo: string): { url: string; ref?: string } {
  const hash = repo.indexOf('#');
  const url = hash === -1 ? repo : repo.slice(0, hash);
  const ref = hash === -1 ? undefined : repo.slice(hash + 1);
  if (url === '') throw new Error(`--repo ${repo}: give the repository's URL, e.g. https://git.example.com/team/app.git#main`);
  if (ref === '') throw new Error(`--repo ${repo}: nothing after #: give a branch, tag or commit, or leave out the #`);
  return { url, ...(ref === undefined ? {} : { ref }) };
}

async function putFile(api: WorkcellClient, jobId: string, path: string, local: string, options: { ifMatch?: string; json?: boolean }): Promise<void> {
  if (path === '') throw new Error('--put needs the path to write in /workspace, e.g. workcell files <job-id> src/app.py --put app.py');
  await requireFile(local, '--put');
  const written = await api.files.write(jobId, path, await openAsBlob(local), options.ifMatch === undefined ? {} : { ifMatch: options.ifMatch });
  if (options.json) return printJson(written);
  console.log(`${written.created ? 'created' : 'replaced'} ${terminalSafe(written.path)} (${written.size} bytes, etag ${terminalSafe(written.etag)})`);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** An audit entry on one line, every value escaped. */
function auditLine(entry: Record<string, unknown>): string {
  const text = (value: unknown) => terminalSafe(typeof value === 'string' ? value : value === undefined || value === null ? '' : JSON.stringify(value));
  const head = `${text(entry.time).slice(11, 19)} step ${text(entry.step)}`;
  if (entry.type === 'file') {
    const outcome = entry.ok === true ? 'ok' : `failed: ${text(entry.error)}`;
    return `${head} file ${text(entry.op)} ${text(entry.path)} ${outcome}${entry.by === undefined ? '' : ` (by ${text(entry.by)})`}`;
  }
  if (entry.type === 'network') {
    const outcome = entry.allowed === true ? `allowed${entry.error === undefined ? '' : `, failed: ${text(entry.error)}`}` : `refused: ${text(entry.reason)}`;
    return `${head} network ${text(entry.method)} ${text(entry.host)}:${text(entry.port)} ${outcome} (${text(entry.bytes_out ?? 0)} bytes out, ${text(entry.bytes_in ?? 0)} in, ${text(entry.duration_ms)} ms)`;
  }
  return `${head} ${text(entry.type)} ${text(entry)}`;
}

try {
  await program.parseAsync();
} catch (error) {
  let message = error instanceof Error ? error.message : String(error);
  if (error instanceof WorkcellClientError && error.code === 'unreachable') message += ' (set WORKCELL_URL or --url)';
  process.stderr.write(`workcell: ${terminalSafe(message)}\n`);
  process.exitCode = error instanceof WorkcellApiError && error.status === 404 ? 3 : 1;
}
