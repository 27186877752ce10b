// The named shell sessions of one sandbox: `shell {session: "server"}` runs in its own persistent bash, with its own
// cwd, environment and jobs, beside the default session "main". Sessions start on their first call and live until
// sandboxd stops; there are at most maxShellSessions at once, and a session whose bash has exited (`exit`) gives its
// place to a new name. Names are checked by the protocol (shellSessionName) before they get here.
import { SandboxdToolError } from '../errors.ts';
import { maxShellSessions } from '../protocol.ts';
import { BashSession, type BashSessionOptions, type ExecOptions, type ExecResult } from './bash-session.ts';

export class ShellSessions {
  readonly #options: Omit<BashSessionOptions, 'name'>;
  readonly #max: number;
  readonly #sessions = new Map<string, BashSession>();
  #closed = false;

  constructor(options: Omit<BashSessionOptions, 'name'>, max = maxShellSessions) {
    this.#options = options;
    this.#max = max;
  }

  /** Runs a command in the named session, starting the session if it is new. */
  exec(name: string, options: ExecOptions): Promise<ExecResult> {
    return this.#session(name).exec(options);
  }

  /** The session of that name, if it was started. */
  get(name: string): BashSession | undefined {
    return this.#sessions.get(name);
  }

  names(): string[] {
    return [...this.#sessions.keys()];
  }

  /** Kills every session and everything they started. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#sessions.values()].map((session) => session.close()));
  }

  #session(name: string): BashSession {
    if (this.#closed) throw new Error('the shell sessions are closed');
    const existing = this.#sessions.get(name);
    if (existing !== undefined) return existing;
    if (this.#sessions.size >= this.#max) {
      // A session whose bash has exited holds no state any more: its place goes to the new one.
      for (const [other, session] of this.#sessions) {
        if (session.idle) {
          this.#sessions.delete(other);
          void session.close();
          break;
        }
      }
    }
    if (this.#sessions.size >= this.#max) {
      throw new SandboxdToolError(
        'invalid_request',
        `session: there are already ${this.#max} shell sessions (${this.names().join(', ')}), the most a sandbox may have; run the command in one of them, or end one you no longer need by running \`exit\` in it`,
      );
    }
    const session = new BashSession({ ...this.#options, name });
    this.#sessions.set(name, session);
    return session;
  }
}
