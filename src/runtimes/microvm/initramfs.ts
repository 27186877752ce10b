// The microVM's initramfs: a static busybox, the guest kernel's virtio modules (kernel-modules.ts: decompressed, in
// dependency order), sandboxd and the guest agent, and /init (guest-init.sh), written as a newc cpio archive here (no
// cpio tool needed). Cached by the hash of its content, so a changed sandboxd or kernel makes a new one and nothing
// else does. The rootfs disk (disks.ts) stays the same.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WorkcellError } from '../../errors.ts';
import { findExecutable } from '../probe.ts';
import type { GuestKernel } from './kernel.ts';
import { guestModules } from './kernel-modules.ts';

const initScript = fileURLToPath(new URL('./guest-init.sh', import.meta.url));

export interface CpioEntry {
  name: string;
  /** Full st_mode (type and permissions). */
  mode: number;
  data?: Buffer;
  /** Device numbers of a character device. */
  rdev?: [number, number];
}

/** A newc ("070701") cpio archive, as the kernel unpacks an initramfs. */
export function writeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const pad = (length: number) => Buffer.alloc((4 - (length % 4)) % 4);
  const hex = (value: number) => (value >>> 0).toString(16).padStart(8, '0');
  let inode = 1;
  for (const entry of [...entries, { name: 'TRAILER!!!', mode: 0 }]) {
    const data = 'data' in entry && entry.data !== undefined ? entry.data : Buffer.alloc(0);
    const rdev: [number, number] = 'rdev' in entry && entry.rdev !== undefined ? entry.rdev : [0, 0];
    const name = Buffer.from(`${entry.name}\0`, 'utf8');
    const header =
      '070701' +
      [inode++, entry.mode, 0, 0, (entry.mode & 0o170000) === 0o040000 ? 2 : 1, 0, data.length, 0, 0, rdev[0], rdev[1], name.length, 0].map(hex).join('');
    parts.push(Buffer.from(header, 'ascii'), name, pad(110 + name.length), data, pad(data.length));
  }
  return Buffer.concat(parts);
}

/** The static busybox the init runs (Debian: busybox-static). */
export function findStaticBusybox(): string {
  for (const candidate of ['/bin/busybox', '/usr/bin/busybox', findExecutable('busybox')]) {
    if (candidate === undefined || !existsSync(candidate)) continue;
    // A dynamically linked busybox has an ELF interpreter (PT_INTERP): it would not run in an initramfs with no libc.
    if (!readFileSync(candidate).includes(Buffer.from('/lib64/ld-linux'))) return candidate;
  }
  throw new WorkcellError('runtime_unavailable', 'no static busybox for the microVM init: apt-get install busybox-static (scripts/setup.sh does)');
}

/** Builds (or finds) the initramfs for this kernel, sandboxd and guest agent; returns its path. */
export async function ensureInitramfs(options: { kernel: GuestKernel; sandboxdBundle: string; guestAgentBundle: string; cacheDir: string }): Promise<string> {
  const busybox = findStaticBusybox();
  const files: Array<{ name: string; mode: number; data: Buffer }> = [
    { name: 'init', mode: 0o100755, data: await readFile(initScript) },
    { name: 'bin/busybox', mode: 0o100755, data: await readFile(busybox) },
    { name: 'workcell/sandboxd.mjs', mode: 0o100644, data: await readFile(options.sandboxdBundle) },
    { name: 'workcell/guest-agent.mjs', mode: 0o100644, data: await readFile(options.guestAgentBundle) },
  ];
  const modules = await guestModules(options.kernel.modulesDir, options.kernel.version);
  for (const module of modules.load) files.push({ name: `lib/modules/${module.name}.ko`, mode: 0o100644, data: module.data });
  files.push({ name: 'modules.order', mode: 0o100644, data: Buffer.from(modules.load.map((module) => `${module.name}\n`).join('')) });
  const hash = createHash('sha256');
  for (const file of files) hash.update(`${file.name}\0${file.data.length}\0`).update(file.data);
  const path = join(options.cacheDir, `initramfs-${hash.digest('hex').slice(0, 16)}.cpio`);
  if (existsSync(path)) return path;
  const dirs = ['bin', 'dev', 'proc', 'sys', 'lib', 'lib/modules', 'workcell', 'lower', 'rw', 'newroot'];
  const archive = writeCpio([
    ...dirs.map((name) => ({ name, mode: 0o040755 })),
    // The kernel opens /dev/console for init before any device file system is mounted.
    { name: 'dev/console', mode: 0o020600, rdev: [5, 1] as [number, number] },
    ...files,
  ]);
  await mkdir(options.cacheDir, { recursive: true, mode: 0o755 });
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, archive, { mode: 0o644 });
  await rename(temporary, path);
  return path;
}
