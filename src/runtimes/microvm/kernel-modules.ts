// The kernel modules the microVM's init loads, found in an unpacked kernel package whatever its version puts where:
// a driver is a module file under lib/modules/<version>/kernel (where modules.order says, or anywhere in that tree),
// plain or compressed (Debian 12 ships `.ko`, Debian 13 `.ko.xz`, others `.ko.zst` or `.ko.gz`; decompressed here,
// since busybox's insmod loads a plain ELF), or built into the kernel (modules.builtin: Debian 13 builds virtio and
// virtio_console in). Each module comes after
// the modules it depends on, read from its own .modinfo as depmod reads them (a package ships no modules.dep).
// It must never hard-code a path, an order or a file name per kernel version: the drivers are named, nothing else.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { WorkcellError } from '../../errors.ts';
import { zstdDecompress } from './kernel.ts';

const execFileAsync = promisify(execFile);

/** What the init needs of the guest kernel, as a module or built in: the virtio-mmio bus, its disks, its serial ports (the host channel), ext4 and overlayfs. */
export const requiredGuestDrivers = ['virtio_mmio', 'virtio_blk', 'virtio_console', 'ext4', 'overlay'] as const;
/** Loaded when the kernel has them: Firecracker's host channel (vsock). */
export const optionalGuestDrivers = ['vmw_vsock_virtio_transport'] as const;

const moduleFile = /^(.+)\.ko(\.xz|\.zst|\.gz)?$/;
const compressions = ['', '.xz', '.zst', '.gz'];

/** A module's name as the kernel knows it (`name=` in its .modinfo: dashes become underscores). */
function moduleName(fileName: string): string | undefined {
  const match = moduleFile.exec(basename(fileName));
  return match === null ? undefined : match[1]!.replaceAll('-', '_');
}

export interface ModuleIndex {
  /** Module name to its file: as modules.order lists it (`.ko`, the file may be compressed), or as found. */
  files: Map<string, string>;
  /** Names built into the kernel. */
  builtIn: Set<string>;
}

/** The module names of a list of paths (modules.order, modules.builtin), each with its path; empty when there is no list. */
function readList(path: string): Map<string, string> {
  const names = new Map<string, string>();
  if (!existsSync(path)) return names;
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const name = moduleName(line.trim());
    if (name !== undefined && !names.has(name)) names.set(name, line.trim());
  }
  return names;
}

/**
 * Every module and built-in module of an unpacked kernel's lib/modules/<version>: from modules.order (one small file,
 * so that asking whether the runtime is available stays cheap), else by walking the kernel/ tree.
 */
export function indexModules(modulesDir: string): ModuleIndex {
  const files = new Map<string, string>();
  for (const [name, path] of readList(join(modulesDir, 'modules.order'))) files.set(name, join(modulesDir, path));
  const tree = join(modulesDir, 'kernel');
  if (files.size === 0 && existsSync(tree)) {
    for (const entry of readdirSync(tree, { recursive: true, encoding: 'utf8' })) {
      const name = moduleName(entry);
      if (name !== undefined && !files.has(name)) files.set(name, join(tree, entry));
    }
  }
  return { files, builtIn: new Set(readList(join(modulesDir, 'modules.builtin')).keys()) };
}

/** The file a module is in: its listed path, or that path compressed. */
function moduleFilePath(listed: string): string | undefined {
  const base = listed.replace(/\.(xz|zst|gz)$/, '');
  return compressions.map((suffix) => `${base}${suffix}`).find((candidate) => existsSync(candidate));
}

/** The required drivers this kernel has neither as a module nor built in. */
export function missingGuestDrivers(index: ModuleIndex): string[] {
  return requiredGuestDrivers.filter((name) => !index.files.has(name) && !index.builtIn.has(name));
}

/** What the init needs and this kernel lacks, said with what to do; undefined when it has it all. Cheap: two small files. */
export function guestKernelProblem(modulesDir: string, version: string): string | undefined {
  const missing = missingGuestDrivers(indexModules(modulesDir));
  if (missing.length === 0) return undefined;
  return `the guest kernel ${version} has no ${missing.join(', ')} (neither a module under ${join(modulesDir, 'kernel')} nor built in): use a kernel package with virtio drivers, such as Debian's linux-image-cloud-amd64`;
}

/** A module file's ELF content, decompressed. */
export async function readModule(path: string): Promise<Buffer> {
  const data = await readFile(path);
  if (path.endsWith('.ko')) return data;
  if (path.endsWith('.ko.gz')) return gunzipSync(data);
  if (path.endsWith('.ko.zst')) return zstdDecompress(data);
  // xz is not in Node's zlib: xz-utils (scripts/setup.sh installs it).
  const { stdout } = await execFileAsync('xz', ['-dc', path], { encoding: 'buffer', maxBuffer: 256 * 1024 * 1024 });
  return stdout;
}

/** The key=value strings of an ELF64 module's .modinfo section. */
export function modinfo(elf: Buffer): Map<string, string[]> {
  const info = new Map<string, string[]>();
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) throw new Error('not a little-endian ELF64 module');
  const sectionTable = Number(elf.readBigUInt64LE(0x28));
  const entrySize = elf.readUInt16LE(0x3a);
  const count = elf.readUInt16LE(0x3c);
  const namesIndex = elf.readUInt16LE(0x3e);
  const section = (index: number) => {
    const at = sectionTable + index * entrySize;
    return { name: elf.readUInt32LE(at), offset: Number(elf.readBigUInt64LE(at + 0x18)), size: Number(elf.readBigUInt64LE(at + 0x20)) };
  };
  const names = section(namesIndex);
  for (let index = 0; index < count; index++) {
    const { name, offset, size } = section(index);
    const nameEnd = elf.indexOf(0, names.offset + name);
    if (elf.toString('latin1', names.offset + name, nameEnd) !== '.modinfo') continue;
    for (const entry of elf.toString('latin1', offset, offset + size).split('\0')) {
      const equals = entry.indexOf('=');
      if (equals <= 0) continue;
      const key = entry.slice(0, equals);
      info.set(key, [...(info.get(key) ?? []), entry.slice(equals + 1)]);
    }
  }
  return info;
}

/** What a module needs loaded before it: its `depends=`, and the `pre:` part of its `softdep=` (e.g. ext4's crc32c). */
function dependencies(info: Map<string, string[]>): { hard: string[]; soft: string[] } {
  const hard = (info.get('depends') ?? []).flatMap((value) => value.split(',')).filter((name) => name !== '');
  const soft = (info.get('softdep') ?? []).flatMap((value) => /pre:\s*(.*?)(\s+post:|$)/.exec(value)?.[1]?.split(/\s+/) ?? []).filter((name) => name !== '');
  return { hard, soft: soft.map((name) => name.replaceAll('-', '_')) };
}

export interface GuestModules {
  /** Modules to load, each after those it depends on. */
  load: Array<{ name: string; data: Buffer }>;
  /** Wanted drivers the kernel has built in. */
  builtIn: string[];
}

/**
 * The modules the init loads for this kernel, dependencies first. Throws what is missing when a required driver is
 * neither a module nor built in (a soft dependency that is absent is skipped, as modprobe skips it).
 */
export async function guestModules(modulesDir: string, version: string): Promise<GuestModules> {
  const problem = guestKernelProblem(modulesDir, version);
  if (problem !== undefined) throw new WorkcellError('runtime_unavailable', problem);
  const index = indexModules(modulesDir);
  const load: GuestModules['load'] = [];
  const builtIn: string[] = [];
  const visiting = new Set<string>();
  const done = new Set<string>();
  const visit = async (name: string, required: boolean): Promise<void> => {
    if (done.has(name) || visiting.has(name)) return;
    if (index.builtIn.has(name)) {
      builtIn.push(name);
      done.add(name);
      return;
    }
    const listed = index.files.get(name);
    const file = listed === undefined ? undefined : moduleFilePath(listed);
    if (file === undefined) {
      if (required) throw new WorkcellError('runtime_unavailable', `the guest kernel ${version} has no file for the module ${name} under ${modulesDir}, and the init needs it`);
      return;
    }
    visiting.add(name);
    const data = await readModule(file);
    const { hard, soft } = dependencies(modinfo(data));
    for (const dependency of hard) await visit(dependency, true);
    for (const dependency of soft) await visit(dependency, false);
    visiting.delete(name);
    done.add(name);
    load.push({ name, data });
  };
  for (const name of requiredGuestDrivers) await visit(name, true);
  for (const name of optionalGuestDrivers) await visit(name, false);
  return { load, builtIn };
}
