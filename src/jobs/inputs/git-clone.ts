// The clone of a git input (POST /schedule {"inputs": {"git": {url, ref?, depth?}}}): the host clones the repository
// into the job's workspace before the job's first sandbox starts, so that credentials for private remotes never enter
// a sandbox. How git runs:
//   - as the unprivileged sandbox user (as root: setpriv, as the sandboxes do), never as root, in a bubblewrap jail of
//     its own (git-jail.ts's: new namespaces of every kind, /usr read-only, an empty /tmp, workcell's seccomp filter,
//     no configuration but what workcell gives on the command line) with the workspace as its only writable directory;
//   - with NO network of its own: the jail's network namespace has only loopback. git's HTTP goes to http.proxy, a
//     small bridge in the jail (this server's node, listening on the jail's 127.0.0.1) that passes each connection to
//     an egress proxy (runtimes/network/egress-proxy.ts) on a unix socket bound into the jail. That proxy is the
//     sandboxes' own: the allow-list (WORKCELL_GIT_ALLOW, WORKCELL_NETWORK_ALLOW and the job's network.allow),
//     its own DNS, private addresses only when listed exactly, and every connection reported (the job's audit log);
//   - the credential (git-credentials.ts) reaches git only through its environment, as an http.<origin>.extraHeader
//     given by GIT_CONFIG_COUNT/KEY/VALUE: never in an argument list, never in the URL, so never in .git/config
//     (which is checked afterwards), the workspace, the logs or an error message (git's words are scrubbed of it);
//   - http and https only (GIT_ALLOW_PROTOCOL, protocol.allow): no file://, ext::, ssh, no submodules, no hooks, no
//     LFS filters; bounded by WORKCELL_GIT_TIMEOUT_S and the job's own stop.
// The caller gives a workspace that holds nothing but what an interrupted clone of the same input may have left: it is
// emptied first, and again when the clone fails. This module must never run git as root, with a network of its own,
// or with a credential anywhere but its environment.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants, existsSync } from 'node:fs';
import { chown, open, readdir, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../../config.ts';
import { errorMessage, WorkcellError, type ErrorCode } from '../../errors.ts';
import { combineAllowLists, formatDestination, matchingRules, parseDestination, type AllowRule } from '../../runtimes/network/allow-list.ts';
import type { ConnectionRecord } from '../../runtimes/network/egress-proxy.ts';
import { openEgressSocket, type EgressSocket } from '../../runtimes/network/sandbox-egress.ts';
import { bwrapCommand, findBwrapHost, findExecutable, type BwrapHost } from '../../runtimes/probe.ts';
import { ensureRunDir } from '../../runtimes/run-dir.ts';
import { hostSeccompProgram } from '../../runtimes/seccomp.ts';
import { gitEnvironment, gitOptions, systemMounts } from '../changes/git-jail.ts';
import { jobOpensPrivate } from '../job-network.ts';
import type { GitInput, Job } from '../../store/types.ts';
import type { GitOrigin } from '../workspace-baseline.ts';
import { basicAuthorization, findGitCredential, readGitCredentials, type FoundCredential } from './git-credentials.ts';

/** Why a clone failed, as `details.reason` of its error. */
export type GitCloneFailure = 'host_not_allowed' | 'unreachable' | 'auth_failed' | 'not_found' | 'ref_not_found' | 'timeout' | 'disk_full' | 'unavailable' | 'failed';

export interface GitCloneOptions {
  input: GitInput;
  /** The job's workspace (on its disk already, so that the clone counts against disk_mb). */
  workspace: string;
  /** The API key that scheduled the job (null: none), whose own credentials come first. */
  owner: string | null;
  config: Pick<Config, 'sandboxUser' | 'runDir' | 'gitCredentials' | 'gitTimeoutS'>;
  /** The destinations the clone may reach (gitCloneAllowRules). */
  allow: readonly AllowRule[];
  /** Every connection the clone's proxy saw, when it ends (the job's audit log). */
  onConnection?: ((record: ConnectionRecord) => void) | undefined;
  logger?: Logger | undefined;
  signal?: AbortSignal | undefined;
}

export interface ClonedRepository extends GitOrigin {
  /** Which entry of WORKCELL_GIT_CREDENTIALS was used (never the token), when one was. */
  credential: string | undefined;
}

/** Inside the jail: the workspace, the node that bridges to the proxy, and the proxy's socket directory. */
const jailWorkspace = '/workspace';
const jailNode = '/run/workcell-git/node';
const jailProxyDir = '/run/workcell-git/net';
const fullCommitId = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
/** What is kept of git's stdout and stderr. */
const maxOutputChars = 16_384;

/**
 * The bridge, run by node inside the jail: listens on the jail's own 127.0.0.1, passes each connection to the egress
 * proxy's unix socket, and runs git with http.proxy pointing at itself. Its exit status is git's.
 */
const bridgeScript = `
const net = require('node:net');
const { spawn } = require('node:child_process');
const [socketPath, git, ...args] = process.argv.slice(1);
const server = net.createServer({ allowHalfOpen: true }, (client) => {
  const upstream = net.connect({ path: socketPath, allowHalfOpen: true });
  const close = () => { client.destroy(); upstream.destroy(); };
  client.on('error', close);
  upstream.on('error', close);
  client.pipe(upstream);
  upstream.pipe(client);
});
server.listen(0, '127.0.0.1', () => {
  const child = spawn(git, ['-c', 'http.proxy=http://127.0.0.1:' + server.address().port, ...args], { stdio: 'inherit' });
  child.on('error', (error) => { process.stderr.write('workcell: cannot start git: ' + error.message + '\\n'); process.exit(127); });
  child.on('exit', (code) => process.exit(code === null ? 128 : code));
});
`;

/** What the clone's proxy lets through: the server's WORKCELL_GIT_ALLOW and WORKCELL_NETWORK_ALLOW, then the job's own. */
export function gitCloneAllowRules(config: Pick<Config, 'gitAllow' | 'networkAllow' | 'networkJobPrivate'>, job: Pick<Job, 'network' | 'owner'>): AllowRule[] {
  return combineAllowLists([...config.gitAllow, ...config.networkAllow], job.network.allow, jobOpensPrivate(config, job.owner));
}

function cloneError(reason: GitCloneFailure, url: string, why: string): WorkcellError {
  const codes: Record<GitCloneFailure, ErrorCode> = {
    host_not_allowed: 'forbidden',
    unreachable: 'sandbox_failed',
    auth_failed: 'unauthorized',
    not_found: 'not_found',
    ref_not_found: 'not_found',
    timeout: 'sandbox_failed',
    disk_full: 'payload_too_large',
    unavailable: 'runtime_unavailable',
    failed: 'sandbox_failed',
  };
  return new WorkcellError(codes[reason], `inputs.git: cloning ${url} failed: ${why}`, { details: { reason } });
}

/** Clones `input` into the workspace and checks out the ref; resolves with what was checked out. */
export async function cloneGitInput(options: GitCloneOptions): Promise<ClonedRepository> {
  const { input, config } = options;
  const url = new URL(input.url);
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.username !== '' || url.password !== '') {
    // The schema refuses these at schedule time; a row from elsewhere gets the same answer here.
    throw cloneError('failed', input.url, 'the URL must be http(s) without a user or password');
  }
  const destination = parseDestination(url.hostname.replace(/^\[|\]$/g, ''), url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port));
  if (destination === undefined || matchingRules(options.allow, destination).length === 0) {
    const target = destination === undefined ? url.host : formatDestination(destination);
    throw cloneError(
      'host_not_allowed',
      input.url,
      `${target} is not a host the clone may reach: the server's WORKCELL_GIT_ALLOW (or WORKCELL_NETWORK_ALLOW), or the job's network.allow, must list it ` +
        '(a bare host allows ports 80 and 443; a private or loopback address only when listed exactly, with its port, by the server)',
    );
  }
  if (findExecutable('git') === undefined || !existsSync('/usr/bin/git')) throw cloneError('unavailable', input.url, 'git is not installed on the server (apt-get install git)');
  const host = await findBwrapHost(config);
  // Fail closed: without the jail, git would have the server's network.
  if ('missing' in host) throw cloneError('unavailable', input.url, `git runs only in a bubblewrap jail without a network of its own, and ${host.missing}`);

  const credentials = await readGitCredentials(config.gitCredentials, options.logger);
  const credential = credentials === undefined ? undefined : findGitCredential(credentials, url, options.owner);
  const secrets = credential === undefined ? [] : [credential.credential.token, basicAuthorization(credential.credential), Buffer.from(`${credential.credential.username}:${credential.credential.token}`).toString('base64')];
  const scrub = (text: string) => secrets.reduce((clean, secret) => clean.split(secret).join('[credential]'), text);
  if (credential !== undefined && url.protocol === 'http:') options.logger?.warn({ url: input.url, credential: credential.entry }, 'sending git credentials over plain http: anyone on the way can read them (use https)');

  const timeout = AbortSignal.timeout(config.gitTimeoutS * 1000);
  const deadline = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout]);
  // The last refusal or failure the proxy reported says more than git's "returned error: 403" or "proxy CONNECT".
  let proxyProblem: ConnectionRecord | undefined;
  const onConnection = (record: ConnectionRecord) => {
    if (!record.allowed || record.error !== undefined) proxyProblem = record;
    options.onConnection?.(record);
  };

  const handles: FileHandle[] = [];
  let egress: EgressSocket | undefined;
  await emptyDirectory(options.workspace);
  try {
    const user = host.sandboxUser;
    // git writes the workspace as the sandbox user, who gets it anyway when the sandbox starts (chown -R by the runtime).
    if (user !== undefined) await chown(options.workspace, user.uid, user.gid);
    const workspace = await open(options.workspace, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    handles.push(workspace);
    const node = await open(process.execPath, constants.O_RDONLY);
    handles.push(node);
    await ensureRunDir(config.runDir);
    egress = await openEgressSocket({
      dir: join(config.runDir, `git-${randomBytes(6).toString('hex')}`),
      owner: user === undefined ? undefined : { uid: user.uid, gid: user.gid },
      policy: { allow: options.allow, onConnection, currentStep: () => 0 },
      logger: options.logger,
    });
    const proxyDir = await open(egress.dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    handles.push(proxyDir);

    const environment: Record<string, string> = {
      ...gitEnvironment,
      GIT_ALLOW_PROTOCOL: 'http:https',
      GIT_AUTHOR_NAME: 'workcell',
      GIT_AUTHOR_EMAIL: 'workcell@localhost',
      GIT_COMMITTER_NAME: 'workcell',
      GIT_COMMITTER_EMAIL: 'workcell@localhost',
    };
    // Only for the commands that talk to the remote, and only for its origin (git matches http.<url>.* by URL).
    const networkEnvironment: Record<string, string> =
      credential === undefined
        ? environment
        : { ...environment, GIT_CONFIG_COUNT: '1', GIT_CONFIG_KEY_0: `http.${url.origin}/.extraHeader`, GIT_CONFIG_VALUE_0: `Authorization: ${basicAuthorization(credential.credential)}` };
    const git = async (args: string[], network: boolean): Promise<string> => {
      const result = await runJailedGit({ host, args, network, environment: network ? networkEnvironment : environment, fds: { workspace: workspace.fd, node: node.fd, proxyDir: proxyDir.fd }, signal: deadline });
      if (result.code === 0) return result.stdout;
      if (timeout.aborted) throw cloneError('timeout', input.url, `it took longer than ${config.gitTimeoutS} s (WORKCELL_GIT_TIMEOUT_S)`);
      if (deadline.aborted) throw deadline.reason instanceof Error ? deadline.reason : new Error('the clone was stopped');
      throw failure({ input, url, stderr: scrub(result.stderr), credential, proxyProblem, args });
    };

    const depth = input.depth === undefined ? [] : [`--depth=${input.depth}`];
    const ref = input.ref;
    if (ref !== undefined && fullCommitId.test(ref)) {
      await git(['init', '--quiet', '--template=', jailWorkspace], false);
      await git(['remote', 'add', 'origin', input.url], false);
      await git(['fetch', '--quiet', '--no-tags', ...depth, 'origin', ref], true);
      await git(['checkout', '--quiet', '--detach', ref], false);
    } else {
      await git(['clone', '--quiet', ...(ref === undefined ? [] : [`--branch=${ref}`]), ...depth, '--', input.url, jailWorkspace], true);
    }
    const commit = (await git(['rev-parse', '--verify', '--end-of-options', 'HEAD^{commit}'], false)).trim();
    if (!fullCommitId.test(commit)) throw cloneError('failed', input.url, `git rev-parse answered ${JSON.stringify(commit.slice(0, 100))}, not a commit id`);
    await checkGitConfig(options.workspace, input.url, secrets);
    return { url: input.url, ...(ref === undefined ? {} : { ref }), commit, credential: credential?.entry };
  } catch (error) {
    await emptyDirectory(options.workspace).catch((cleanup: unknown) => options.logger?.error({ err: cleanup }, 'emptying the workspace after a failed clone failed'));
    if (error instanceof WorkcellError) throw error;
    if (options.signal?.aborted) throw error;
    throw cloneError('failed', input.url, scrub(errorMessage(error)));
  } finally {
    // The proxy reports its last connections before it closes.
    await egress?.close().catch((error: unknown) => options.logger?.warn({ err: error }, "closing the clone's egress proxy failed"));
    await Promise.all(handles.map((handle) => handle.close()));
  }
}

/** Removes everything in `dir` (never `dir` itself: it may be a mount point), following no link. */
async function emptyDirectory(dir: string): Promise<void> {
  for (const entry of await readdir(dir)) await rm(join(dir, entry), { recursive: true, force: true });
}

/** .git/config must name the remote by its plain URL and hold no credential (belt and braces: git was never given one to write). */
async function checkGitConfig(workspace: string, url: string, secrets: readonly string[]): Promise<void> {
  const handle = await open(join(workspace, '.git', 'config'), constants.O_RDONLY | constants.O_NOFOLLOW);
  let text: string;
  try {
    text = await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
  if (secrets.some((secret) => text.includes(secret))) throw cloneError('failed', url, '.git/config holds the credential: refused (this is a bug in workcell)');
  if (!text.includes(`url = ${url}`)) throw cloneError('failed', url, ".git/config does not name the remote by the input's URL");
}

/** Says what went wrong in the words of the person who must fix it, from git's stderr and what the proxy saw. */
function failure(context: { input: GitInput; url: URL; stderr: string; credential: FoundCredential | undefined; proxyProblem: ConnectionRecord | undefined; args: string[] }): WorkcellError {
  const { input, stderr, credential, proxyProblem } = context;
  const said = lastLines(stderr);
  if (proxyProblem !== undefined && !proxyProblem.allowed) {
    return cloneError('host_not_allowed', input.url, `the egress proxy refused ${formatDestination(proxyProblem)}: ${proxyProblem.reason ?? 'not allowed'}`);
  }
  if (proxyProblem?.error !== undefined) return cloneError('unreachable', input.url, proxyProblem.error);
  if (/No space left on device|Disk quota exceeded/i.test(stderr)) {
    return cloneError('disk_full', input.url, "the repository does not fit the job's disk: ask for a larger limits.disk_mb (up to the server's WORKCELL_DISK_MB), or a smaller depth");
  }
  if (/could not read (Username|Password)|Authentication failed|returned error: 401|HTTP 401/i.test(stderr)) {
    return cloneError(
      'auth_failed',
      input.url,
      credential === undefined
        ? `authentication failed: the repository asks for credentials, and the server's WORKCELL_GIT_CREDENTIALS has none for ${context.url.host} (ask its operator to add them, under "hosts" or your API key's id under "keys")`
        : `authentication failed: the repository refused the credentials of WORKCELL_GIT_CREDENTIALS ${credential.entry} (ask the server's operator to check that token)`,
    );
  }
  if (/returned error: 403|HTTP 403/i.test(stderr)) {
    return cloneError('auth_failed', input.url, `access denied (HTTP 403)${credential === undefined ? ': the repository may need credentials (WORKCELL_GIT_CREDENTIALS)' : ` with the credentials of WORKCELL_GIT_CREDENTIALS ${credential.entry}`}`);
  }
  if (/repository '.*' not found|returned error: 404|HTTP 404/i.test(stderr)) {
    return cloneError('not_found', input.url, 'repository not found (HTTP 404): check the URL; a private repository may answer 404 to clients without access, so check its credentials too');
  }
  if (input.ref !== undefined && /Remote branch .* not found|couldn't find remote ref|not our ref|unadvertised object|did not match any|reference is not a tree|unknown revision|not a valid object|bad object/i.test(stderr)) {
    const hint = fullCommitId.test(input.ref) ? 'no commit with that id can be fetched from it' : 'it has no branch or tag of that name (a commit must be given by its full id)';
    return cloneError('ref_not_found', input.url, `ref ${JSON.stringify(input.ref)} not found: ${hint}`);
  }
  if (context.args[0] === 'rev-parse') return cloneError('not_found', input.url, 'the repository has no commits to check out');
  if (/Could not resolve (host|proxy)|Failed to connect|Connection refused|Received HTTP code 5\d\d from proxy/i.test(stderr)) return cloneError('unreachable', input.url, said);
  return cloneError('failed', input.url, `git ${context.args[0] ?? ''} failed: ${said}`);
}

function lastLines(text: string): string {
  const lines = text.trim().split('\n').filter((line) => line.trim() !== '');
  return lines.slice(-5).join('; ').slice(-1000) || 'no message';
}

interface JailedGit {
  host: BwrapHost;
  args: string[];
  /** Through the egress proxy (the bridge runs git); otherwise git alone, with no way out at all. */
  network: boolean;
  environment: Record<string, string>;
  fds: { workspace: number; node: number; proxyDir: number };
  signal: AbortSignal;
}

/** Runs git in the jail; resolves with its exit code and output (a non-zero exit is a result, not an exception). */
async function runJailedGit(run: JailedGit): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [command, ...prefix] = bwrapCommand(run.host) as [string, ...string[]];
  const seccomp = hostSeccompProgram();
  // stdio 0-2, then 3 the workspace, and for network commands 4 the node binary and 5 the proxy's directory; the filter last.
  const fds = run.network ? [run.fds.workspace, run.fds.node, run.fds.proxyDir] : [run.fds.workspace];
  const seccompFd = 3 + fds.length;
  // The CA certificates for https (Debian's, and Red Hat's), and nothing else of /etc.
  const certificates = ['/etc/ssl/certs', '/etc/pki/tls/certs', '/etc/pki/ca-trust/extracted'].filter((dir) => existsSync(dir)).flatMap((dir) => ['--ro-bind', dir, dir]);
  const git = ['/usr/bin/git', ...gitOptions, '-c', 'protocol.allow=never', '-c', 'protocol.http.allow=always', '-c', 'protocol.https.allow=always', '-c', 'submodule.recurse=false'];
  const args = [
    ...prefix,
    '--unshare-all', '--die-with-parent', '--new-session', '--cap-drop', 'ALL',
    ...systemMounts(), ...certificates, '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp',
    '--bind-fd', '3', jailWorkspace,
    ...(run.network ? ['--ro-bind-fd', '4', jailNode, '--ro-bind-fd', '5', jailProxyDir] : []),
    '--chdir', jailWorkspace,
    ...(seccomp === undefined ? [] : ['--seccomp', String(seccompFd)]),
    '--',
    ...(run.network ? [jailNode, '-e', bridgeScript, '--', `${jailProxyDir}/proxy.sock`, ...git] : git),
    ...run.args,
  ];
  // The environment goes to bwrap as its own (not --setenv, which would put it in an argument list), and on to git.
  const child = spawn(command, args, { env: run.environment, stdio: ['ignore', 'pipe', 'pipe', ...fds, ...(seccomp === undefined ? [] : ['pipe' as const])], detached: true });
  const kill = () => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  if (run.signal.aborted) kill();
  run.signal.addEventListener('abort', kill, { once: true });
  if (seccomp !== undefined) {
    const pipe = child.stdio[seccompFd] as Writable;
    pipe.on('error', () => undefined);
    pipe.end(seccomp);
  }
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    if (stdout.length < maxOutputChars) stdout += chunk;
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    if (stderr.length < maxOutputChars) stderr += chunk;
  });
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (exitCode) => resolve(exitCode));
    });
    return { code, stdout, stderr };
  } finally {
    run.signal.removeEventListener('abort', kill);
    kill();
  }
}
