// The guest kernel for microVMs: Debian's cloud kernel (linux-image-*-cloud-amd64; small, virtio drivers as modules),
// unpacked without installing it (scripts/setup.sh extracts the package into <image dir>/kernel: installing it would
// make it a boot candidate for the host). QEMU's microvm machine boots fastest from an uncompressed ELF vmlinux and
// Firecracker needs one, so the vmlinuz is decompressed once (Debian's is LZ4, Ubuntu's zstd or gzip; the LZ4 legacy
// frame is decoded here, the others with zlib or xz) and cached next to it by its size and mtime.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import * as zlib from 'node:zlib';
import type { Config } from '../../config.ts';
import { WorkcellError } from '../../errors.ts';

export interface GuestKernel {
  /** e.g. 6.1.0-56-cloud-amd64 */
  version: string;
  vmlinuz: string;
  /** lib/modules/<version> */
  modulesDir: string;
}

export const kernelFixHint = 'run scripts/setup.sh (it unpacks Debian\'s linux-image-cloud-amd64 into <image dir>/kernel), or point WORKCELL_MICROVM_KERNEL_DIR at an unpacked kernel package';

export function kernelDir(config: Pick<Config, 'imageDir' | 'microvmKernelDir'>): string {
  return config.microvmKernelDir ?? join(config.imageDir, 'kernel');
}

/** The newest kernel in the kernel directory (an unpacked package: boot/vmlinuz-V and lib/modules/V); throws how to get one. */
export function findGuestKernel(config: Pick<Config, 'imageDir' | 'microvmKernelDir'>): GuestKernel {
  const dir = kernelDir(config);
  const boot = join(dir, 'boot');
  const versions = existsSync(boot)
    ? readdirSync(boot)
        .filter((name) => name.startsWith('vmlinuz-'))
        .map((name) => name.slice('vmlinuz-'.length))
        .filter((version) => existsSync(join(dir, 'lib/modules', version)) || existsSync(join(dir, 'usr/lib/modules', version)))
        .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }))
    : [];
  const version = versions.at(-1);
  if (version === undefined) throw new WorkcellError('runtime_unavailable', `no guest kernel in ${dir}: ${kernelFixHint}`);
  const modulesDir = existsSync(join(dir, 'lib/modules', version)) ? join(dir, 'lib/modules', version) : join(dir, 'usr/lib/modules', version);
  return { version, vmlinuz: join(boot, `vmlinuz-${version}`), modulesDir };
}

const elfMagic = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const lz4LegacyMagic = Buffer.from([0x02, 0x21, 0x4c, 0x18]);

/** Decodes one LZ4 block (the raw block format) into `out` from `at`; returns where it ended. */
export function decodeLz4Block(src: Buffer, out: Buffer, at: number): number {
  let i = 0;
  let o = at;
  while (i < src.length) {
    const token = src[i++]!;
    let literals = token >> 4;
    if (literals === 15) {
      let byte: number;
      do {
        byte = src[i++]!;
        literals += byte;
      } while (byte === 255 && i < src.length);
    }
    if (o + literals > out.length) throw new Error('lz4: output overflow');
    src.copy(out, o, i, i + literals);
    i += literals;
    o += literals;
    if (i >= src.length) break;
    const offset = src[i]! | (src[i + 1]! << 8);
    i += 2;
    if (offset === 0 || offset > o - at) throw new Error('lz4: bad match offset');
    let length = token & 15;
    if (length === 15) {
      let byte: number;
      do {
        byte = src[i++]!;
        length += byte;
      } while (byte === 255 && i < src.length);
    }
    length += 4;
    if (o + length > out.length) throw new Error('lz4: output overflow');
    for (let k = 0; k < length; k++, o++) out[o] = out[o - offset]!;
  }
  return o;
}

/** The LZ4 legacy frame (what the kernel's LZ4 compression writes): independent blocks of at most 8 MB each. */
export function decodeLz4Legacy(data: Buffer): Buffer {
  if (!data.subarray(0, 4).equals(lz4LegacyMagic)) throw new Error('not an LZ4 legacy frame');
  const blockMax = 8 * 1024 * 1024;
  const parts: Buffer[] = [];
  let position = 4;
  while (position + 4 <= data.length) {
    const size = data.readUInt32LE(position);
    if (size === lz4LegacyMagic.readUInt32LE(0)) {
      position += 4;
      continue;
    }
    if (size === 0 || size > blockMax + blockMax / 255 + 16 || position + 4 + size > data.length) break;
    const out = Buffer.alloc(blockMax);
    const end = decodeLz4Block(data.subarray(position + 4, position + 4 + size), out, 0);
    parts.push(out.subarray(0, end));
    position += 4 + size;
  }
  return Buffer.concat(parts);
}

/** Finds the compressed kernel inside a bzImage and decompresses it to the ELF vmlinux. */
export function extractVmlinux(vmlinuz: Buffer): Buffer {
  const attempts: Array<[Buffer, (data: Buffer) => Buffer]> = [
    [lz4LegacyMagic, decodeLz4Legacy],
    [Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), (data) => zstdDecompress(data)],
    [Buffer.from([0x1f, 0x8b, 0x08]), (data) => gunzipSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH })],
    [Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), (data) => execFileSync('xz', ['-dc'], { input: data, maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'ignore'] })],
  ];
  for (const [magic, decode] of attempts) {
    let offset = vmlinuz.indexOf(magic);
    while (offset !== -1) {
      try {
        const elf = decode(vmlinuz.subarray(offset));
        if (elf.subarray(0, 4).equals(elfMagic)) return elf;
      } catch {
        // not the payload (the magic bytes occur by chance), or a truncated stream: try the next one
      }
      offset = vmlinuz.indexOf(magic, offset + 1);
    }
  }
  throw new Error('no compressed ELF kernel found in the vmlinuz (LZ4, zstd, gzip and xz tried)');
}

export function zstdDecompress(data: Buffer): Buffer {
  const decompress = (zlib as unknown as { zstdDecompressSync?: (input: Buffer) => Buffer }).zstdDecompressSync;
  if (decompress !== undefined) return decompress(data);
  return execFileSync('zstd', ['-dc'], { input: data, maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'ignore'] });
}

/** The uncompressed vmlinux for a kernel, made once and cached in `cacheDir`. */
export async function ensureVmlinux(kernel: GuestKernel, cacheDir: string): Promise<string> {
  const info = statSync(kernel.vmlinuz);
  const path = join(cacheDir, `vmlinux-${kernel.version}-${info.size}-${Math.round(info.mtimeMs)}`);
  if (existsSync(path)) return path;
  await mkdir(cacheDir, { recursive: true, mode: 0o755 });
  let elf: Buffer;
  try {
    elf = extractVmlinux(readFileSync(kernel.vmlinuz));
  } catch (error) {
    throw new WorkcellError('runtime_unavailable', `cannot extract vmlinux from ${kernel.vmlinuz}: ${(error as Error).message}`, { cause: error });
  }
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, elf, { mode: 0o644 });
  await rename(temporary, path);
  return path;
}
