// A job's limits: what the client asked for, filled in from the server's defaults. The server's resource defaults
// (WORKCELL_CPUS, _MEMORY_MB, _PIDS, _DISK_MB) and its caps on host files (_SANDBOX_LOG_MB, _AUDIT_LOG_MB,
// _CONTEXT_MB) are also the most a job may ask for: a client can lower them, never raise them, so the operator's
// limits hold whatever a request says. Time and steps have maximums of their own (WORKCELL_WALL_TIME_MAX_S,
// _STEPS_MAX, _IDLE_TIME_MAX_S): a job may ask for more than the default, up to those.
import type { Config } from '../config.ts';
import { invalidRequest } from '../errors.ts';
import type { SandboxLimits } from '../runtimes/types.ts';
import type { JobLimits } from '../store/types.ts';

/** Caps on the files a sandbox can grow on the host: logs/sandbox.log, audit.jsonl, and context.db with its images. */
export const hostFileLimits = ['sandbox_log_mb', 'audit_log_mb', 'context_mb'] as const;
export type HostFileLimit = (typeof hostFileLimits)[number];

type CeilingField = 'wall_time_s' | 'max_steps' | 'idle_time_s' | 'cpus' | 'memory_mb' | 'pids' | 'disk_mb' | HostFileLimit;

const ceilings: Array<{ field: CeilingField; config: 'wallTimeMaxS' | 'stepsMax' | 'idleTimeMaxS' | 'cpus' | 'memoryMb' | 'pids' | 'diskMb' | 'sandboxLogMb' | 'auditLogMb' | 'contextMb'; env: string }> = [
  { field: 'wall_time_s', config: 'wallTimeMaxS', env: 'WORKCELL_WALL_TIME_MAX_S' },
  { field: 'max_steps', config: 'stepsMax', env: 'WORKCELL_STEPS_MAX' },
  { field: 'idle_time_s', config: 'idleTimeMaxS', env: 'WORKCELL_IDLE_TIME_MAX_S' },
  { field: 'cpus', config: 'cpus', env: 'WORKCELL_CPUS' },
  { field: 'memory_mb', config: 'memoryMb', env: 'WORKCELL_MEMORY_MB' },
  { field: 'pids', config: 'pids', env: 'WORKCELL_PIDS' },
  { field: 'disk_mb', config: 'diskMb', env: 'WORKCELL_DISK_MB' },
  { field: 'sandbox_log_mb', config: 'sandboxLogMb', env: 'WORKCELL_SANDBOX_LOG_MB' },
  { field: 'audit_log_mb', config: 'auditLogMb', env: 'WORKCELL_AUDIT_LOG_MB' },
  { field: 'context_mb', config: 'contextMb', env: 'WORKCELL_CONTEXT_MB' },
];

/** The limits a new job gets. Throws invalid_request when it asks for more than the server allows. */
export function resolveJobLimits(config: Config, requested: Partial<JobLimits> = {}): Required<JobLimits> {
  for (const { field, config: key, env } of ceilings) {
    const value = requested[field];
    if (value !== undefined && value > config[key]) {
      throw invalidRequest(`limits.${field} (${value}) is above what this server allows (${config[key]}, set by ${env}): ask for ${config[key]} or less, or leave it out`);
    }
  }
  return {
    wall_time_s: requested.wall_time_s ?? config.wallTimeS,
    max_steps: requested.max_steps ?? config.maxSteps,
    cpus: requested.cpus ?? config.cpus,
    memory_mb: requested.memory_mb ?? config.memoryMb,
    pids: requested.pids ?? config.pids,
    disk_mb: requested.disk_mb ?? config.diskMb,
    idle_time_s: requested.idle_time_s ?? config.idleTimeS,
    sandbox_log_mb: requested.sandbox_log_mb ?? config.sandboxLogMb,
    audit_log_mb: requested.audit_log_mb ?? config.auditLogMb,
    context_mb: requested.context_mb ?? config.contextMb,
  };
}

/** The host-file caps of a job, in bytes (rows from before the caps existed get the server defaults). */
export function hostFileCaps(config: Config, limits: JobLimits): Record<HostFileLimit, number> {
  const megabytes = (value: number) => value * 1024 * 1024;
  return {
    sandbox_log_mb: megabytes(limits.sandbox_log_mb ?? config.sandboxLogMb),
    audit_log_mb: megabytes(limits.audit_log_mb ?? config.auditLogMb),
    context_mb: megabytes(limits.context_mb ?? config.contextMb),
  };
}

/** The sandbox's resource limits for a job (rows from before resource limits existed get the server defaults). */
export function sandboxLimits(config: Config, limits: JobLimits): SandboxLimits {
  return {
    cpus: limits.cpus ?? config.cpus,
    memoryMb: limits.memory_mb ?? config.memoryMb,
    pids: limits.pids ?? config.pids,
    diskMb: limits.disk_mb ?? config.diskMb,
  };
}
