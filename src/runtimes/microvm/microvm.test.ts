// The microVM's pieces that need no VM: the LZ4 legacy decoder that unpacks Debian's vmlinuz (checked against the
// lz4 tool where it is installed), the newc cpio writer of the initramfs, and QEMU's argv (no network device, the
// rootfs read-only, the channel and console, QEMU's own sandbox), and the console tail a VM that does not start reports.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { findExecutable } from '../probe.ts';
import { ConsoleTail } from './console-tail.ts';
import { writeCpio } from './initramfs.ts';
import { decodeLz4Block, decodeLz4Legacy } from './kernel.ts';
import { qemuArgs } from './microvm-runtime.ts';

describe('LZ4', () => {
  it('decodes literals and overlapping matches', () => {
    // token 0x14: 1 literal ("a"), then a match of 4 + 4 = 8 bytes at offset 1 (copies the "a" over and over).
    const block = Buffer.from([0x14, 0x61, 0x01, 0x00, 0x10, 0x62]);
    const out = Buffer.alloc(64);
    const end = decodeLz4Block(block, out, 0);
    expect(out.subarray(0, end).toString('ascii')).toBe('aaaaaaaaab');
  });

  it.runIf(findExecutable('lz4') !== undefined)('decodes what lz4 -l (the kernel\'s legacy format) writes', () => {
    const text = Buffer.from('workcell '.repeat(5000) + 'the end\n');
    const compressed = execFileSync('lz4', ['-l', '-c'], { input: text });
    expect(decodeLz4Legacy(compressed).equals(text)).toBe(true);
  });
});

describe('writeCpio', () => {
  it('writes newc headers, 4-byte padding and the trailer', () => {
    const archive = writeCpio([{ name: 'init', mode: 0o100755, data: Buffer.from('#!/bin/sh\n') }, { name: 'dev/console', mode: 0o020600, rdev: [5, 1] }]);
    const text = archive.toString('latin1');
    expect(text.startsWith('070701')).toBe(true);
    expect(text).toContain('init\0');
    expect(text).toContain('#!/bin/sh\n');
    expect(text).toContain('TRAILER!!!\0');
    expect(archive.length % 4).toBe(0);
    // The console's header carries its device numbers (rdevmajor 5, rdevminor 1).
    const console = text.indexOf('dev/console') - 110;
    expect(text.slice(console + 6 + 8 * 9, console + 6 + 8 * 11)).toBe('0000000500000001');
  });
});

describe('qemuArgs', () => {
  it('has no network device, a read-only rootfs, the workcell.mux port, and QEMU\'s sandbox', () => {
    const args = qemuArgs({ runDir: '/run/workcell/sb-x', vmlinux: '/k', initramfs: '/i', rootfsImage: '/r.ext4', workspaceImage: '/w.ext4', bootArgs: ['quiet'], vcpus: 2, memoryMb: 768, accel: 'tcg' });
    const joined = args.join(' ');
    expect(joined).not.toMatch(/-netdev|-nic|virtio-net/);
    expect(args).toContain('-nodefaults');
    expect(joined).toContain('id=rootfs,file=/r.ext4,format=raw,if=none,readonly=on');
    expect(joined).toContain('socket,id=mux,path=/run/workcell/sb-x/mux.sock,server=on,wait=off');
    expect(joined).toContain('virtserialport,chardev=mux,name=workcell.mux');
    // The console is the ISA serial port (a built-in driver), so the guest's output is there before any module loads.
    expect(joined).toContain('isa-serial=on');
    expect(joined).toContain('-serial chardev:console');
    expect(joined).not.toContain('virtconsole');
    // Option ROMs boot -kernel under SeaBIOS (QEMU 10's microvm firmware on Debian 13): never turned off.
    expect(joined).not.toContain('x-option-roms=off');
    expect(joined).toContain('-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
    expect(args[args.indexOf('-append') + 1]).toBe('quiet tsc_early_khz=2000000 lpj=4000000');
    expect(qemuArgs({ runDir: '/r', vmlinux: '/k', initramfs: '/i', rootfsImage: '/r', workspaceImage: '/w', bootArgs: ['quiet'], vcpus: 1, memoryMb: 512, accel: 'kvm' })).toContain('host');
  });
});

describe('ConsoleTail', () => {
  it('keeps the last lines, without control sequences, and says where the rest is', () => {
    const tail = new ConsoleTail({ maxLines: 3, maxChars: 200 });
    expect(tail.describe()).toMatch(/printed nothing/);
    tail.write('[    0.1] Linux version 6.12\r\n');
    tail.write(Buffer.from('workcell-init: cannot load the module virtio_mmio\n\n\x1b[31mred\x1b[0m line\n'));
    tail.write('workcell-init: no rootfs disk (label workcell-root)');
    tail.write('; block devices: \n');
    expect(tail.lines()).toEqual(['workcell-init: cannot load the module virtio_mmio', 'red line', 'workcell-init: no rootfs disk (label workcell-root); block devices:']);
    expect(tail.describe()).toMatch(/^the last lines of its console \(all of it is in sandbox\.log in the job's logs\):\n {2}workcell-init: cannot load/);
  });

  it('bounds what it keeps and reports', () => {
    const tail = new ConsoleTail({ maxLines: 25, maxChars: 100 });
    for (let i = 0; i < 10_000; i++) tail.write(`line ${i} ${'x'.repeat(30)}\n`);
    const lines = tail.lines();
    expect(lines.at(-1)).toMatch(/^line 9999 /);
    expect(lines.join('\n').length).toBeLessThanOrEqual(100);
    tail.write(`${'y'.repeat(1000)}\n`);
    expect(tail.lines()).toEqual([`…${'y'.repeat(100)}`]);
  });
});
