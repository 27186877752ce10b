// Connections that outlive their request's authentication: event streams, terminals, desktop and Jupyter
// websockets. Each is registered with the key it was opened by; when that key is revoked (by `workcell keys
// revoke`, which may run in another process, so the store is polled), its connections are closed within a second.

export class LiveConnections {
  readonly #isLive: (owner: string) => Promise<boolean>;
  #checking = false;
  readonly #intervalMs: number;
  readonly #byOwner = new Map<string, Set<() => void>>();
  #timer: NodeJS.Timeout | undefined;

  constructor(isLive: (owner: string) => Promise<boolean>, intervalMs = 1000) {
    this.#isLive = isLive;
    this.#intervalMs = intervalMs;
  }

  /** Registers a connection opened with `owner`'s key (none in local mode: nothing to revoke); returns its removal. */
  add(owner: string | undefined, close: () => void): () => void {
    if (owner === undefined) return () => {};
    let set = this.#byOwner.get(owner);
    if (set === undefined) this.#byOwner.set(owner, (set = new Set()));
    set.add(close);
    this.#timer ??= setInterval(() => void this.check(), this.#intervalMs).unref();
    return () => {
      set.delete(close);
      if (set.size === 0 && this.#byOwner.get(owner) === set) this.#byOwner.delete(owner);
      if (this.#byOwner.size === 0) this.#stopTimer();
    };
  }

  /** Closes every connection whose key is no longer live (a key the store cannot answer for is checked next round). */
  async check(): Promise<void> {
    if (this.#checking) return;
    this.#checking = true;
    try {
      for (const [owner, set] of [...this.#byOwner]) {
        if (await this.#isLive(owner).catch(() => true)) continue;
        if (this.#byOwner.get(owner) === set) this.#byOwner.delete(owner);
        for (const close of set) close();
      }
    } finally {
      this.#checking = false;
    }
    if (this.#byOwner.size === 0) this.#stopTimer();
  }

  get size(): number {
    let count = 0;
    for (const set of this.#byOwner.values()) count += set.size;
    return count;
  }

  close(): void {
    this.#stopTimer();
    this.#byOwner.clear();
  }

  #stopTimer(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
