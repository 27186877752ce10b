// search_files: ripgrep over the workspace, MUST NEVER SEARCH OUTSIDE IT. The path goes through confine() like every
// file tool's; ripgrep gets the resolved real path, relative to the workspace's real root (its cwd), and follows no
// symlink below it (no -L), so a link cannot lead the search out. Skipped like list_files skips: .git,
// node_modules, __pycache__, .venv and what .gitignore/.ignore/.rgignore say (in a git repository or not), unless
// the path names them. Results are parsed from `rg --json`, capped (maxSearchMatches lines, each cut to
// maxLineChars, a time limit), and ripgrep is stopped (SIGTERM, then SIGKILL) as soon as the cap is reached.
// A pattern or glob ripgrep refuses is an invalid_request whose message is ripgrep's own explanation.
import { spawn } from 'node:child_process';
import { lstat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { z } from 'zod';
import { SandboxdToolError } from '../errors.ts';
import { maxSearchMatches, type searchFilesRequest, type searchFilesResponse } from '../protocol.ts';
import { confine } from './confine.ts';
import { alwaysSkipped } from './ignore-rules.ts';

export type SearchFilesRequest = z.output<typeof searchFilesRequest>;
export type SearchFilesResponse = z.output<typeof searchFilesResponse>;

/** A matching line longer than this is cut around its first match. */
export const maxLineChars = 300;
const searchTimeoutMs = 30_000;
/** ripgrep's output read at most (a few huge matching lines, e.g. minified files, cost no more than this). */
const maxOutputBytes = 64 * 1024 * 1024;
const killGraceMs = 500;

interface RgText {
  text?: string;
  bytes?: string;
}

interface RgMessage {
  type: string;
  data: {
    path?: RgText;
    lines?: RgText;
    line_number?: number | null;
    submatches?: Array<{ start: number; end: number }>;
    stats?: { searches?: number; searches_with_match?: number };
  };
}

function textOf(value: RgText | undefined): string {
  if (value === undefined) return '';
  if (value.text !== undefined) return value.text;
  // Not UTF-8: ripgrep sends base64; show what decodes, with replacement characters for the rest.
  return Buffer.from(value.bytes ?? '', 'base64').toString('utf8');
}

/** The matching line without its newline, cut to maxLineChars around the first match. */
function excerpt(line: string, firstMatchByte: number | undefined): string {
  const text = line.replace(/\r?\n$/, '');
  if (text.length <= maxLineChars) return text;
  const matchAt = firstMatchByte === undefined ? 0 : Buffer.from(text, 'utf8').subarray(0, firstMatchByte).toString('utf8').length;
  const start = Math.max(0, Math.min(matchAt - Math.floor(maxLineChars / 3), text.length - maxLineChars));
  const cut = text.slice(start, start + maxLineChars);
  return `${start > 0 ? '…' : ''}${cut}${start + maxLineChars < text.length ? '…' : ''} [line of ${text.length} characters, cut]`;
}

export async function searchFiles(root: string, request: SearchFilesRequest): Promise<SearchFilesResponse> {
  if (request.pattern.includes('\0') || request.glob?.includes('\0')) throw new SandboxdToolError('invalid_request', 'pattern and glob must not contain NUL bytes');
  const target = await confine(root, request.path, { followFinalSymlink: true });
  const realRelative = target.real === target.rootReal ? '.' : target.real.slice(target.rootReal.length + 1);
  try {
    await lstat(target.real);
  } catch {
    throw new SandboxdToolError('not_found', `${JSON.stringify(target.relative)} does not exist; use list_files to see what is in the workspace`);
  }
  const args = [
    '--json',
    '--no-config',
    '--hidden',
    '--no-require-git',
    '--no-follow',
    ...alwaysSkipped.map((name) => `--glob=!${name}`),
    ...(request.glob === undefined ? [] : [`--glob=${request.glob}`]),
    '--regexp',
    request.pattern,
    '--',
    realRelative,
  ];
  const rg = spawn('rg', args, { cwd: target.rootReal, stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' } });
  const spawned = new Promise<void>((resolve, reject) => {
    rg.once('spawn', resolve);
    rg.once('error', (error: NodeJS.ErrnoException) =>
      reject(new SandboxdToolError('internal', error.code === 'ENOENT' ? 'ripgrep (rg) is not installed in the sandbox; search with the shell tool (grep -rn PATTERN .)' : `cannot start ripgrep: ${error.message}`)),
    );
  });
  const exited = new Promise<number | null>((resolve) => rg.once('close', (code) => resolve(code)));
  let stderr = '';
  rg.stderr.on('data', (chunk: Buffer) => {
    if (stderr.length < 8192) stderr += chunk.toString('utf8');
  });
  await spawned;

  const matches: SearchFilesResponse['matches'] = [];
  let truncated = false;
  let filesWithMatches = 0;
  let filesSearched: number | undefined;
  let outputBytes = 0;
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    rg.kill('SIGTERM');
    setTimeout(() => rg.kill('SIGKILL'), killGraceMs).unref();
  };
  const timer = setTimeout(() => {
    truncated = true;
    stop();
  }, searchTimeoutMs);
  const lines = createInterface({ input: rg.stdout, crlfDelay: Number.POSITIVE_INFINITY });
  try {
    for await (const line of lines) {
      outputBytes += line.length + 1;
      if (stopped) continue; // drain what is already buffered
      if (outputBytes > maxOutputBytes) {
        truncated = true;
        stop();
        continue;
      }
      let message: RgMessage;
      try {
        message = JSON.parse(line) as RgMessage;
      } catch {
        continue;
      }
      if (message.type === 'begin') continue;
      if (message.type === 'end' && (message.data.stats?.searches_with_match ?? 0) > 0) filesWithMatches++;
      if (message.type === 'summary') filesSearched = message.data.stats?.searches;
      if (message.type !== 'match') continue;
      if (matches.length >= maxSearchMatches) {
        truncated = true;
        stop();
        continue;
      }
      const path = textOf(message.data.path).replace(/^\.\//, '');
      matches.push({ path, line: message.data.line_number ?? 0, text: excerpt(textOf(message.data.lines), message.data.submatches?.[0]?.start) });
    }
  } finally {
    clearTimeout(timer);
  }
  const code = await exited;
  // 0: matches, 1: none; 2: an error. With --json, ripgrep also exits 2 when some files could not be read (a
  // permission problem below the path) yet others were searched: that still gives results.
  if (!stopped && code === 2 && matches.length === 0 && filesSearched === undefined) {
    const message = stderr.trim().split('\n').slice(0, 12).join('\n');
    if (/regex parse error|error parsing glob|unrecognized|invalid|error:/.test(message)) {
      throw new SandboxdToolError('invalid_request', `ripgrep refused the search:\n${message}\npattern is a regular expression in ripgrep's (Rust) syntax: escape special characters such as ( [ { . * + ? | with a backslash to match them literally; glob is a file name pattern such as "*.py" or "src/**/*.ts"`);
    }
    throw new SandboxdToolError('internal', `ripgrep failed: ${message || `exit code ${code}`}`);
  }
  return { path: target.relative, matches, truncated, files_with_matches: filesWithMatches, ...(stopped || filesSearched === undefined ? {} : { files_searched: filesSearched }) };
}
