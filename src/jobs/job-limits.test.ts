import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config.ts';
import { WorkcellError } from '../errors.ts';
import { hostFileCaps, resolveJobLimits, sandboxLimits } from './job-limits.ts';

const config = loadConfig({}, { dataDir: '/nonexistent', cpus: 2, memoryMb: 1024, pids: 256, diskMb: 2048, idleTimeS: 300, wallTimeS: 60, maxSteps: 10, sandboxLogMb: 16, auditLogMb: 32, contextMb: 512 });

describe('job limits', () => {
  it('fills what the client left out from the server defaults', () => {
    expect(resolveJobLimits(config)).toEqual({ wall_time_s: 60, max_steps: 10, cpus: 2, memory_mb: 1024, pids: 256, disk_mb: 2048, idle_time_s: 300, sandbox_log_mb: 16, audit_log_mb: 32, context_mb: 512 });
    expect(resolveJobLimits(config, { memory_mb: 128, wall_time_s: 7200, idle_time_s: 3000 })).toMatchObject({ memory_mb: 128, wall_time_s: 7200, idle_time_s: 3000, pids: 256 });
  });

  it('refuses resource limits above the server defaults, and time and steps above their maximums, naming the setting', () => {
    const fields = [
      ['wall_time_s', 86_401, 'WORKCELL_WALL_TIME_MAX_S'],
      ['max_steps', 2001, 'WORKCELL_STEPS_MAX'],
      ['idle_time_s', 3601, 'WORKCELL_IDLE_TIME_MAX_S'],
      ['cpus', 2.5, 'WORKCELL_CPUS'],
      ['memory_mb', 1025, 'WORKCELL_MEMORY_MB'],
      ['pids', 1000, 'WORKCELL_PIDS'],
      ['disk_mb', 4096, 'WORKCELL_DISK_MB'],
      ['sandbox_log_mb', 17, 'WORKCELL_SANDBOX_LOG_MB'],
      ['audit_log_mb', 64, 'WORKCELL_AUDIT_LOG_MB'],
      ['context_mb', 1024, 'WORKCELL_CONTEXT_MB'],
    ] as const;
    for (const [field, value, env] of fields) {
      const attempt = () => resolveJobLimits(config, { [field]: value });
      expect(attempt, field).toThrow(WorkcellError);
      expect(attempt, field).toThrow(new RegExp(`limits.${field} \\(${value}\\) is above what this server allows .*${env}`));
    }
  });

  it('refuses a server whose defaults are above its own maximums', () => {
    expect(() => loadConfig({ WORKCELL_WALL_TIME_S: '7200', WORKCELL_WALL_TIME_MAX_S: '3600' })).toThrow(/WORKCELL_WALL_TIME_S: 7200 is above WORKCELL_WALL_TIME_MAX_S \(3600\)/);
    expect(() => loadConfig({ WORKCELL_MAX_STEPS: '50', WORKCELL_STEPS_MAX: '10' })).toThrow(/WORKCELL_MAX_STEPS: 50 is above WORKCELL_STEPS_MAX/);
  });

  it('gives the caps on host files in bytes, the server defaults for rows from before them', () => {
    expect(hostFileCaps(config, { wall_time_s: 1, max_steps: 1 })).toEqual({ sandbox_log_mb: 16 << 20, audit_log_mb: 32 << 20, context_mb: 512 << 20 });
    expect(hostFileCaps(config, resolveJobLimits(config, { sandbox_log_mb: 1, context_mb: 8 }))).toEqual({ sandbox_log_mb: 1 << 20, audit_log_mb: 32 << 20, context_mb: 8 << 20 });
  });

  it('gives rows from before resource limits the server defaults', () => {
    expect(sandboxLimits(config, { wall_time_s: 1, max_steps: 1 })).toEqual({ cpus: 2, memoryMb: 1024, pids: 256, diskMb: 2048 });
    expect(sandboxLimits(config, { wall_time_s: 1, max_steps: 1, cpus: 0.5, memory_mb: 64, pids: 40, disk_mb: 16 })).toEqual({ cpus: 0.5, memoryMb: 64, pids: 40, diskMb: 16 });
  });
});
