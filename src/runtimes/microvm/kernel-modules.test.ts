// The guest kernel's modules found as each kernel package lays them out: plain and compressed files (Debian 12's .ko,
// Debian 13's .ko.xz, .ko.zst, .ko.gz), drivers built in, dependencies read from each module's .modinfo and loaded
// first, and a kernel that lacks a driver refused with what it lacks. The modules here are small ELF64 files with a
// real .modinfo section; the real kernels boot in test/integration/runtimes/.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import * as zlib from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { guestModules, indexModules, missingGuestDrivers, modinfo, readModule } from './kernel-modules.ts';

/** A minimal ELF64 little-endian relocatable with a section-name table and a .modinfo section. */
function elfModule(entries: string[]): Buffer {
  const names = Buffer.from('\0.shstrtab\0.modinfo\0', 'latin1');
  const info = Buffer.from(entries.map((entry) => `${entry}\0`).join(''), 'latin1');
  const header = Buffer.alloc(64);
  const namesOffset = 64;
  const infoOffset = namesOffset + names.length;
  const sectionTable = infoOffset + info.length;
  header.writeUInt32BE(0x7f454c46, 0);
  header[4] = 2; // ELFCLASS64
  header[5] = 1; // little-endian
  header[6] = 1;
  header.writeUInt16LE(1, 0x10); // ET_REL
  header.writeUInt16LE(62, 0x12); // x86-64
  header.writeBigUInt64LE(BigInt(sectionTable), 0x28);
  header.writeUInt16LE(64, 0x34);
  header.writeUInt16LE(64, 0x3a);
  header.writeUInt16LE(3, 0x3c);
  header.writeUInt16LE(1, 0x3e);
  const section = (name: number, type: number, offset: number, size: number) => {
    const entry = Buffer.alloc(64);
    entry.writeUInt32LE(name, 0);
    entry.writeUInt32LE(type, 4);
    entry.writeBigUInt64LE(BigInt(offset), 0x18);
    entry.writeBigUInt64LE(BigInt(size), 0x20);
    return entry;
  };
  return Buffer.concat([header, names, info, section(0, 0, 0, 0), section(1, 3, namesOffset, names.length), section(11, 1, infoOffset, info.length)]);
}

const zstdCompress = (zlib as unknown as { zstdCompressSync?: (input: Buffer) => Buffer }).zstdCompressSync;

let dir: string | undefined;
afterEach(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function kernelTree(files: Record<string, Buffer | string>): string {
  dir = mkdtempSync(join(tmpdir(), 'workcell-modules-'));
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  return dir;
}

const module = (name: string, depends = '', extra: string[] = []) => elfModule([`name=${name}`, `depends=${depends}`, 'vermagic=6.1.0 SMP mod_unload', ...extra]);

describe('modinfo', () => {
  it('reads the key=value strings of the .modinfo section', () => {
    const info = modinfo(module('virtio_blk', 'virtio,virtio_ring', ['alias=virtio:d00000002v*', 'alias=other']));
    expect(info.get('name')).toEqual(['virtio_blk']);
    expect(info.get('depends')).toEqual(['virtio,virtio_ring']);
    expect(info.get('alias')).toEqual(['virtio:d00000002v*', 'other']);
  });

  it('refuses what is not an ELF64 module', () => {
    expect(() => modinfo(Buffer.from('not an elf file at all, but long enough to have a header of sixty-four bytes'))).toThrow(/ELF64/);
  });
});

describe('guestModules', () => {
  it('Debian 12 layout: plain .ko files, each after what it depends on', async () => {
    const root = kernelTree({
      'kernel/drivers/virtio/virtio_ring.ko': module('virtio_ring'),
      'kernel/drivers/virtio/virtio.ko': module('virtio', 'virtio_ring'),
      'kernel/drivers/virtio/virtio_mmio.ko': module('virtio_mmio', 'virtio,virtio_ring'),
      'kernel/drivers/block/virtio_blk.ko': module('virtio_blk', 'virtio,virtio_ring'),
      'kernel/drivers/char/virtio_console.ko': module('virtio_console', 'virtio,virtio_ring'),
      'kernel/fs/overlayfs/overlay.ko': module('overlay'),
      'kernel/net/vmw_vsock/vsock.ko': module('vsock'),
      'kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko': module('vmw_vsock_virtio_transport_common', 'vsock'),
      'kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko': module('vmw_vsock_virtio_transport', 'vmw_vsock_virtio_transport_common,vsock'),
      'modules.builtin': 'kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\n',
      'modules.order': 'kernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_mmio.ko\nkernel/drivers/block/virtio_blk.ko\nkernel/drivers/char/virtio_console.ko\nkernel/fs/overlayfs/overlay.ko\nkernel/net/vmw_vsock/vsock.ko\nkernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko\nkernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko\n',
    });
    const result = await guestModules(root, '6.1.0-test');
    expect(result.load.map((entry) => entry.name)).toEqual([
      'virtio_ring', 'virtio', 'virtio_mmio', 'virtio_blk', 'virtio_console', 'overlay',
      'vsock', 'vmw_vsock_virtio_transport_common', 'vmw_vsock_virtio_transport',
    ]);
    expect(result.builtIn).toEqual(['ext4']);
    expect(modinfo(result.load[0]!.data).get('name')).toEqual(['virtio_ring']);
  });

  it('Debian 13 layout: .ko.xz files (modules.order says .ko), virtio and virtio_console built in; the modules come out decompressed', async () => {
    const xz = (data: Buffer) => execFileSync('xz', ['-c', '--check=crc32'], { input: data });
    const root = kernelTree({
      'kernel/drivers/virtio/virtio_mmio.ko.xz': xz(module('virtio_mmio')),
      'kernel/drivers/block/virtio_blk.ko.xz': xz(module('virtio_blk')),
      'kernel/fs/overlayfs/overlay.ko.xz': xz(module('overlay')),
      'modules.builtin': 'kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/char/virtio_console.ko\nkernel/fs/ext4/ext4.ko\n',
      'modules.order': 'kernel/drivers/virtio/virtio_mmio.ko\nkernel/drivers/block/virtio_blk.ko\nkernel/fs/overlayfs/overlay.ko\n',
    });
    const result = await guestModules(root, '6.12.0-test');
    expect(result.load.map((entry) => entry.name)).toEqual(['virtio_mmio', 'virtio_blk', 'overlay']);
    expect(result.builtIn.sort()).toEqual(['ext4', 'virtio_console']);
    for (const entry of result.load) expect(modinfo(entry.data).get('name')).toEqual([entry.name]);
  });

  it('without modules.order, finds .ko.gz and .ko.zst files in the tree, with dashes in file names, and loads a modular ext4 after its dependencies and soft dependencies', async () => {
    const files: Record<string, Buffer | string> = {
      'kernel/drivers/virtio/virtio-mmio.ko.gz': gzipSync(module('virtio_mmio')),
      'kernel/drivers/block/virtio_blk.ko.gz': gzipSync(module('virtio_blk')),
      'kernel/drivers/char/virtio_console.ko.gz': gzipSync(module('virtio_console')),
      'kernel/fs/overlayfs/overlay.ko.gz': gzipSync(module('overlay')),
      'kernel/fs/jbd2/jbd2.ko.gz': gzipSync(module('jbd2')),
      'kernel/fs/mbcache.ko.gz': gzipSync(module('mbcache')),
      'kernel/crypto/crc32c_generic.ko.gz': gzipSync(module('crc32c_generic')),
      'kernel/fs/ext4/ext4.ko.gz': gzipSync(module('ext4', 'mbcache,jbd2', ['softdep=pre: crc32c_generic missing_soft'])),
    };
    if (zstdCompress !== undefined) {
      delete files['kernel/fs/overlayfs/overlay.ko.gz'];
      files['kernel/fs/overlayfs/overlay.ko.zst'] = zstdCompress(module('overlay'));
    }
    const result = await guestModules(kernelTree(files), '6.x-test');
    expect(result.load.map((entry) => entry.name)).toEqual(['virtio_mmio', 'virtio_blk', 'virtio_console', 'mbcache', 'jbd2', 'crc32c_generic', 'ext4', 'overlay']);
    expect(result.builtIn).toEqual([]);
  });

  it('refuses a kernel without a driver the init needs, naming it', async () => {
    const root = kernelTree({
      'kernel/drivers/virtio/virtio_mmio.ko': module('virtio_mmio'),
      'kernel/fs/overlayfs/overlay.ko': module('overlay'),
      'modules.builtin': 'kernel/fs/ext4/ext4.ko\n',
    });
    expect(missingGuestDrivers(indexModules(root))).toEqual(['virtio_blk', 'virtio_console']);
    await expect(guestModules(root, '9.9-test')).rejects.toThrow(/the guest kernel 9\.9-test has no virtio_blk, virtio_console/);
  });

  it('refuses a module whose hard dependency is nowhere', async () => {
    const root = kernelTree({
      'kernel/drivers/virtio/virtio_mmio.ko': module('virtio_mmio', 'virtio_gone'),
      'kernel/drivers/block/virtio_blk.ko': module('virtio_blk'),
      'kernel/drivers/char/virtio_console.ko': module('virtio_console'),
      'kernel/fs/overlayfs/overlay.ko': module('overlay'),
      'modules.builtin': 'kernel/fs/ext4/ext4.ko\n',
    });
    await expect(guestModules(root, '9.9-test')).rejects.toThrow(/no file for the module virtio_gone/);
  });

  it('refuses a module that modules.order lists and no file holds', async () => {
    const root = kernelTree({
      'kernel/drivers/virtio/virtio_mmio.ko': module('virtio_mmio'),
      'kernel/drivers/char/virtio_console.ko': module('virtio_console'),
      'kernel/fs/overlayfs/overlay.ko': module('overlay'),
      'modules.builtin': 'kernel/fs/ext4/ext4.ko\n',
      'modules.order': 'kernel/drivers/virtio/virtio_mmio.ko\nkernel/drivers/block/virtio_blk.ko\nkernel/drivers/char/virtio_console.ko\nkernel/fs/overlayfs/overlay.ko\n',
    });
    expect(missingGuestDrivers(indexModules(root))).toEqual([]);
    await expect(guestModules(root, '9.9-test')).rejects.toThrow(/no file for the module virtio_blk/);
  });

  it('readModule leaves a plain .ko as it is', async () => {
    const root = kernelTree({ 'kernel/a.ko': module('a') });
    expect((await readModule(join(root, 'kernel/a.ko'))).equals(module('a'))).toBe(true);
  });
});
