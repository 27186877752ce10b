import { mkdir, mkdtemp, readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cgroupWrapper, createSandboxCgroup, findCgroupHost, keyedValue, reapCgroups, SandboxCgroup, type CgroupHost } from './cgroups.ts';

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'workcell-cgroups-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A mountinfo line: id parent major:minor root mount-point options - type source super-options. */
const mountLine = (root: string, mountPoint: string, type: string, superOptions: string) => `30 22 0:28 ${root} ${mountPoint} rw,relatime - ${type} ${type} ${superOptions}`;

describe('finding the cgroup hierarchy', () => {
  it('uses v1 when memory, cpu and pids each have a hierarchy, nesting under the server\'s own cgroup per controller', async () => {
    const mountinfo = [
      mountLine('/', '/sys/fs/cgroup', 'tmpfs', 'rw'),
      mountLine('/', '/sys/fs/cgroup/cpu,cpuacct', 'cgroup', 'rw,cpu,cpuacct'),
      mountLine('/', '/sys/fs/cgroup/memory', 'cgroup', 'rw,memory'),
      mountLine('/', '/sys/fs/cgroup/pids', 'cgroup', 'rw,pids'),
      mountLine('/', '/sys/fs/cgroup/unified', 'cgroup2', 'rw'),
    ].join('\n');
    const selfCgroup = ['4:memory:/process_api/abc', '2:cpu,cpuacct:/', '8:pids:/', '0::/'].join('\n');
    expect(await findCgroupHost({ sources: { mountinfo, selfCgroup } })).toEqual({
      version: 1,
      parents: {
        memory: '/sys/fs/cgroup/memory/process_api/abc/workcell',
        cpu: '/sys/fs/cgroup/cpu,cpuacct/workcell',
        cpuacct: '/sys/fs/cgroup/cpu,cpuacct/workcell',
        pids: '/sys/fs/cgroup/pids/workcell',
      },
    });
    const withParent = await findCgroupHost({ parent: '/sandboxes', sources: { mountinfo, selfCgroup } });
    expect(withParent).toMatchObject({ version: 1, parents: { memory: '/sys/fs/cgroup/memory/sandboxes', pids: '/sys/fs/cgroup/pids/sandboxes' } });
  });

  it('maps the own cgroup through a mount of a sub-tree (a container without a cgroup namespace)', async () => {
    const mountinfo = ['memory', 'cpu', 'pids'].map((controller) => mountLine('/docker/c0ffee', `/sys/fs/cgroup/${controller}`, 'cgroup', `rw,${controller}`)).join('\n');
    const selfCgroup = ['3:memory:/docker/c0ffee', '2:cpu:/docker/c0ffee/app', '1:pids:/docker/c0ffee'].join('\n');
    const host = await findCgroupHost({ sources: { mountinfo, selfCgroup } });
    expect(host).toMatchObject({ version: 1, parents: { memory: '/sys/fs/cgroup/memory/workcell', cpu: '/sys/fs/cgroup/cpu/app/workcell', pids: '/sys/fs/cgroup/pids/workcell' } });
  });

  it('uses v2 when the unified hierarchy has the controllers, else says what is missing', async () => {
    await writeFile(join(root, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids rdma misc\n');
    const mountinfo = mountLine('/', root, 'cgroup2', 'rw,nsdelegate');
    expect(await findCgroupHost({ sources: { mountinfo, selfCgroup: '0::/system.slice/workcell.service' } })).toEqual({ version: 2, mount: root, parent: join(root, 'workcell') });
    await writeFile(join(root, 'cgroup.controllers'), 'hugetlb\n');
    const missing = await findCgroupHost({ sources: { mountinfo, selfCgroup: '0::/' } });
    expect(missing).toEqual({ problem: expect.stringMatching(/lacks memory, pids, cpu/) });
    expect(await findCgroupHost({ sources: { mountinfo: '', selfCgroup: '' } })).toEqual({ problem: expect.stringMatching(/neither cgroup v1.*nor cgroup v2/) });
  });
});

describe('a sandbox cgroup', () => {
  it('on v1 sets memory (and memory+swap) to the limit, the CFS quota and pids.max', async () => {
    const parents = { memory: join(root, 'memory/workcell'), cpu: join(root, 'cpu/workcell'), pids: join(root, 'pids/workcell') };
    const host: CgroupHost = { version: 1, parents };
    const cgroup = await createSandboxCgroup(host, 'sb-abc123', { cpus: 1.5, memoryMb: 256, pids: 64 });
    expect(cgroup.name).toMatch(new RegExp(`^sb-abc123\\.\\d+\\.${process.pid}\\.\\d+$`));
    const read = (dir: string, file: string) => readFile(join(dir, cgroup.name, file), 'utf8');
    expect(await read(parents.memory, 'memory.limit_in_bytes')).toBe(String(256 * 1024 * 1024));
    expect(await read(parents.memory, 'memory.oom_control')).toBe('0');
    expect(await read(parents.cpu, 'cpu.cfs_quota_us')).toBe('150000');
    expect(await read(parents.cpu, 'cpu.cfs_period_us')).toBe('100000');
    expect(await read(parents.pids, 'pids.max')).toBe('64');
    expect(cgroup.procsFiles.sort()).toEqual([parents.cpu, parents.memory, parents.pids].map((dir) => join(dir, cgroup.name, 'cgroup.procs')).sort());
  });

  it('on v2 enables the controllers down to the parent and sets memory.max, swap 0, cpu.max, pids.max', async () => {
    await writeFile(join(root, 'cgroup.subtree_control'), 'memory\n');
    await mkdir(join(root, 'workcell'));
    await writeFile(join(root, 'workcell', 'cgroup.subtree_control'), '');
    const host: CgroupHost = { version: 2, mount: root, parent: join(root, 'workcell') };
    const cgroup = await createSandboxCgroup(host, 'sb-v2', { cpus: 0.5, memoryMb: 128, pids: 32 });
    // (A real cgroupfs rewrites the file to the enabled set; the fake keeps what was written: the missing ones.)
    expect(await readFile(join(root, 'cgroup.subtree_control'), 'utf8')).toBe('+pids +cpu');
    expect(await readFile(join(root, 'workcell', 'cgroup.subtree_control'), 'utf8')).toBe('+memory +pids +cpu');
    const dir = join(root, 'workcell', cgroup.name);
    expect(await readFile(join(dir, 'memory.max'), 'utf8')).toBe(String(128 * 1024 * 1024));
    expect(await readFile(join(dir, 'cpu.max'), 'utf8')).toBe('50000 100000');
    expect(await readFile(join(dir, 'pids.max'), 'utf8')).toBe('32');
  });

  it('reads the limit counters and usage of v1 and v2', async () => {
    const v1 = new SandboxCgroup({ version: 1, parents: { memory: join(root, 'm'), pids: join(root, 'p'), cpu: join(root, 'c'), cpuacct: join(root, 'a') } }, 'sb-1.1.1');
    for (const dir of Object.values(v1.dirs)) await mkdir(dir, { recursive: true });
    await writeFile(join(v1.dirs.memory!, 'memory.oom_control'), 'oom_kill_disable 0\nunder_oom 0\noom_kill 3\n');
    await writeFile(join(v1.dirs.memory!, 'memory.max_usage_in_bytes'), '1048576\n');
    await writeFile(join(v1.dirs.pids!, 'pids.events'), 'max 7\n');
    await writeFile(join(v1.dirs.pids!, 'pids.current'), '12\n');
    await writeFile(join(v1.dirs.cpuacct!, 'cpuacct.usage'), '2500000000\n');
    expect(await v1.counters()).toEqual({ oomKills: 3, pidsRefused: 7, processes: 12 });
    expect(await v1.usage()).toEqual({ cpuSeconds: 2.5, peakMemoryBytes: 1048576 });

    const v2 = new SandboxCgroup({ version: 2, mount: root, parent: join(root, 'w') }, 'sb-2.1.1');
    await mkdir(v2.dirs.memory!, { recursive: true });
    await writeFile(join(v2.dirs.memory!, 'memory.events'), 'low 0\nhigh 0\nmax 40\noom 2\noom_kill 2\noom_group_kill 0\n');
    await writeFile(join(v2.dirs.memory!, 'pids.events'), 'max 1\n');
    await writeFile(join(v2.dirs.memory!, 'cpu.stat'), 'usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n');
    await writeFile(join(v2.dirs.memory!, 'memory.peak'), '2097152\n');
    expect(await v2.counters()).toEqual({ oomKills: 2, pidsRefused: 1, processes: 0 });
    expect(await v2.usage()).toEqual({ cpuSeconds: 1.5, peakMemoryBytes: 2097152 });
    expect(keyedValue('max 40\noom_kill 2', 'max')).toBe(40);
    expect(keyedValue('', 'max')).toBeUndefined();
  });

  it('joins the cgroup through a shell that writes its own pid and then execs the command', () => {
    const cgroup = new SandboxCgroup({ version: 2, mount: root, parent: join(root, 'w') }, 'sb-x.1.1');
    const wrapper = cgroupWrapper(cgroup);
    expect(wrapper.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    expect(wrapper[2]).toContain('echo $$ > "$1"');
    expect(wrapper[2]).toContain('exec "$@"');
    expect(wrapper.slice(4)).toEqual([join(root, 'w', 'sb-x.1.1', 'cgroup.procs'), '--']);
  });
});

describe('reaping', () => {
  it("removes the cgroups of dead servers and leaves those of live ones, and of other pid namespaces' servers", async () => {
    const parent = join(root, 'workcell');
    const host: CgroupHost = { version: 2, mount: root, parent };
    const ownStart = (await readFile('/proc/self/stat', 'utf8')).split(') ')[1]!.split(' ')[19];
    const ns = /\[(\d+)\]/.exec(await readlink('/proc/self/ns/pid'))![1]!;
    const live = `sb-live.${ns}.${process.pid}.${ownStart}`;
    const deadPid = `sb-dead.${ns}.${process.pid}.1`; // our pid, another start time: a previous server with a reused pid
    const gone = `sb-gone.${ns}.999999999.5`;
    // A server in a container beside this one (its own pid namespace, the host's cgroups): its pid means nothing here.
    const otherNamespace = `sb-beside.${Number(ns) + 1}.999999999.5`;
    const foreign = 'not-a-sandbox';
    for (const name of [live, deadPid, gone, otherNamespace, foreign]) await mkdir(join(parent, name), { recursive: true });
    const reaped = await reapCgroups(host);
    expect(reaped.sort()).toEqual([deadPid, gone].sort());
    expect((await readdir(parent)).sort()).toEqual([foreign, live, otherNamespace].sort());
  });
});
