// The pool's bookkeeping against a scripted runtime (the real sandboxes: test/integration/bwrap/warm-pool.test.ts).
import { describe, expect, it, vi } from 'vitest';
import type { Sandbox, SandboxLimits, SandboxSpec, WarmSandbox } from '../types.ts';
import { WarmPool, type WarmPoolOptions } from './warm-pool.ts';

const limits: SandboxLimits = { cpus: 1, memoryMb: 512, pids: 64, diskMb: 100 };
const spec = (overrides: Partial<SandboxSpec> = {}): SandboxSpec => ({ jobId: 'job_1', workspaceDir: '/w', logDir: '/l', limits, ...overrides });

/** A runtime whose warm sandboxes are records: which were destroyed, which attached; `failAttach` makes handovers fail. */
function scriptedRuntime(options: { failPrepare?: number; failAttach?: boolean; prepareGate?: Promise<void> } = {}) {
  let failures = options.failPrepare ?? 0;
  let count = 0;
  const made: Array<WarmSandbox & { destroyed: boolean; die(): void }> = [];
  const runtime = {
    name: 'scripted',
    probe: async () => ({ available: true, detail: '' }),
    unavailableReason: () => undefined,
    create: vi.fn(async (s: SandboxSpec): Promise<Sandbox> => ({ id: 'cold', jobId: s.jobId, runtime: 'scripted', isolation: 'cold' }) as unknown as Sandbox),
    prepare: vi.fn(async () => {
      await options.prepareGate;
      if (failures > 0) {
        failures--;
        throw new Error('cannot start');
      }
      let die = () => {};
      const exited = new Promise<void>((resolve) => (die = resolve));
      const warm = {
        id: `warm-${++count}`,
        profile: { limits },
        exited,
        destroyed: false,
        die,
        destroy: async () => void (warm.destroyed = true),
        attach: async (s: SandboxSpec) => {
          if (options.failAttach) throw new Error('handover failed');
          return { id: warm.id, jobId: s.jobId, runtime: 'scripted', isolation: 'warm', pooled: true } as unknown as Sandbox;
        },
      };
      made.push(warm);
      return warm;
    }),
  };
  return { runtime: runtime as unknown as WarmPoolOptions['runtime'], made, create: runtime.create, prepare: runtime.prepare };
}

const until = (condition: () => boolean) => vi.waitFor(() => expect(condition()).toBe(true), { timeout: 10_000, interval: 5 });

describe('WarmPool', () => {
  it('fills to its size only once started, and hands each warm sandbox to one job', async () => {
    const { runtime, prepare } = scriptedRuntime();
    const pool = new WarmPool({ runtime, size: 2, profile: { limits } });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(prepare).not.toHaveBeenCalled();
    pool.start();
    await until(() => pool.stats.ready === 2);
    const first = await pool.create(spec());
    const second = await pool.create(spec({ jobId: 'job_2' }));
    expect([first.id, second.id, first.pooled]).toEqual(['warm-1', 'warm-2', true]);
    await until(() => pool.stats.ready === 2);
    expect(pool.readyIds).toEqual(['warm-3', 'warm-4']);
    await pool.close();
  });

  it('starts a cold sandbox for a job with other limits or a network, or when none is ready', async () => {
    const { runtime, create } = scriptedRuntime();
    const pool = new WarmPool({ runtime, size: 1, profile: { limits } });
    expect((await pool.create(spec())).id).toBe('cold'); // not started: nothing ready
    pool.start();
    await until(() => pool.stats.ready === 1);
    expect((await pool.create(spec({ limits: { ...limits, diskMb: 101 } }))).id).toBe('cold');
    expect((await pool.create(spec({ network: { allow: [{ pattern: 'example.com', host: { kind: 'name', name: 'example.com' }, port: undefined }] } }))).id).toBe('cold');
    expect(create).toHaveBeenCalledTimes(3);
    expect(pool.stats).toMatchObject({ ready: 1, hits: 0, misses: 3 });
    await pool.close();
  });

  it('destroys a warm sandbox whose handover failed and starts the job a cold one', async () => {
    const { runtime, made } = scriptedRuntime({ failAttach: true });
    const pool = new WarmPool({ runtime, size: 1, profile: { limits } });
    pool.start();
    await until(() => pool.stats.ready === 1);
    expect((await pool.create(spec())).id).toBe('cold');
    expect(made[0]!.destroyed).toBe(true);
    await pool.close();
  });

  it('retries a failed start with growing waits, and replaces one that dies while it waits', async () => {
    const { runtime, prepare, made } = scriptedRuntime({ failPrepare: 2 });
    const pool = new WarmPool({ runtime, size: 1, profile: { limits }, retryBaseMs: 10 });
    pool.start();
    await until(() => pool.stats.ready === 1);
    expect(prepare).toHaveBeenCalledTimes(3);
    made[0]!.die();
    await until(() => pool.readyIds[0] === 'warm-2');
    expect(made[0]!.destroyed).toBe(true);
    await pool.close();
  });

  it('on close destroys what waits and what was still starting, and starts nothing more', async () => {
    let open = () => {};
    const gate = new Promise<void>((resolve) => (open = resolve));
    const { runtime, made, prepare } = scriptedRuntime({ prepareGate: gate });
    const pool = new WarmPool({ runtime, size: 2, profile: { limits } });
    pool.start();
    const closed = pool.close();
    open();
    await closed;
    expect(made.every((warm) => warm.destroyed)).toBe(true);
    expect(prepare).toHaveBeenCalledTimes(1);
    expect(pool.stats.ready).toBe(0);
  });
});
