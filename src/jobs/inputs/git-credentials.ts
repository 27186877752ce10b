// Credentials for private git remotes (inputs.git): the server operator's JSON file WORKCELL_GIT_CREDENTIALS,
//   {"hosts": {"<host[:port]>": {"username", "token"}}, "keys": {"<API key id>": {"<host[:port]>": {...}}}}
// read afresh at each clone (so the operator can rotate a token without a restart). The job owner's API key's own
// entry for the host wins over the host's: one team's token is never used for another key's jobs when it has its own.
// A bare host matches that host on its scheme's default port (80 or 443), as in the network allow-lists; `host:port`
// matches that port only. The token is given to git only as an HTTP header in git's environment (git-clone.ts): this
// module must never put a token in an error message or a log line, and never hands one out for another host.
import { readFile, stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { z } from 'zod';
import { errorMessage, WorkcellError } from '../../errors.ts';

const credential = z.strictObject({
  username: z
    .string()
    .min(1)
    .max(256)
    .regex(/^[^:\p{Cc}]+$/u, 'no ":" and no control characters'),
  token: z
    .string()
    .min(1)
    .max(8192)
    .regex(/^[^\p{Cc}]+$/u, 'no control characters'),
});
const hostCredentials = z.record(z.string().min(1).max(300), credential);
const credentialsFile = z.strictObject({
  hosts: hostCredentials.optional(),
  keys: z.record(z.string().min(1).max(200), hostCredentials).optional(),
});

export type GitCredential = z.infer<typeof credential>;
export type GitCredentialsFile = z.infer<typeof credentialsFile>;

/** Which entry of the file a credential came from (for messages: never the token). */
export interface FoundCredential {
  credential: GitCredential;
  /** e.g. `keys["key_123"]["git.example.com"]` or `hosts["git.example.com:8443"]`. */
  entry: string;
}

/** The entries of a file that can hold credentials for `url`, most specific first: `host:port`, then the bare host. */
function hostKeys(url: URL): string[] {
  const host = url.hostname.toLowerCase();
  const defaultPort = url.protocol === 'https:' ? '443' : '80';
  const port = url.port === '' ? defaultPort : url.port;
  return port === defaultPort ? [`${host}:${port}`, host] : [`${host}:${port}`];
}

/** Looks up the credential for `url`: the owner's API key's entry for its host first, then the host's. */
export function findGitCredential(file: GitCredentialsFile, url: URL, owner: string | null): FoundCredential | undefined {
  const candidates = hostKeys(url);
  const lookup = (table: Record<string, GitCredential> | undefined, describe: (key: string) => string): FoundCredential | undefined => {
    if (table === undefined) return undefined;
    // Keys are matched without regard to case (host names are not case-sensitive).
    const byLowerCase = new Map(Object.entries(table).map(([key, value]) => [key.toLowerCase(), { key, value }]));
    for (const candidate of candidates) {
      const found = byLowerCase.get(candidate);
      if (found !== undefined) return { credential: found.value, entry: describe(found.key) };
    }
    return undefined;
  };
  if (owner !== null) {
    const own = lookup(file.keys?.[owner], (key) => `keys[${JSON.stringify(owner)}][${JSON.stringify(key)}]`);
    if (own !== undefined) return own;
  }
  return lookup(file.hosts, (key) => `hosts[${JSON.stringify(key)}]`);
}

/** Parses the file's text; the error names the file and what is wrong, never a value. */
export function parseGitCredentials(text: string, path: string): GitCredentialsFile {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new WorkcellError('runtime_unavailable', `WORKCELL_GIT_CREDENTIALS (${path}) is not valid JSON: the server's operator must fix it`);
  }
  const parsed = credentialsFile.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.slice(0, 5).map((issue) => `${issue.path.map(String).join('.') || '(top level)'}: ${issue.message}`);
    throw new WorkcellError(
      'runtime_unavailable',
      `WORKCELL_GIT_CREDENTIALS (${path}) is not {"hosts": {"<host[:port]>": {"username", "token"}}, "keys": {"<API key id>": {...}}}: ${problems.join('; ')}. The server's operator must fix it`,
    );
  }
  return parsed.data;
}

/** Reads WORKCELL_GIT_CREDENTIALS (undefined when it is not set); warns when others than its owner may read it. */
export async function readGitCredentials(path: string | undefined, logger?: Pick<Logger, 'warn'>): Promise<GitCredentialsFile | undefined> {
  if (path === undefined) return undefined;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new WorkcellError('runtime_unavailable', `WORKCELL_GIT_CREDENTIALS (${path}) cannot be read (${(error as NodeJS.ErrnoException).code ?? errorMessage(error)}): the server's operator must fix it`);
  }
  const info = await stat(path).catch(() => undefined);
  if (info !== undefined && (info.mode & 0o077) !== 0) logger?.warn({ path }, 'WORKCELL_GIT_CREDENTIALS can be read by others than its owner: chmod 600 it');
  return parseGitCredentials(text, path);
}

/** The HTTP Basic authorization header value git sends. */
export function basicAuthorization(credential: GitCredential): string {
  return `Basic ${Buffer.from(`${credential.username}:${credential.token}`, 'utf8').toString('base64')}`;
}
