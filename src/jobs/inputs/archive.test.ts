// A zip entry whose data holds more than it declares: refused as unreadable, with the process intact, also when
// the data fails before the upload tree starts reading it (it makes the file first, while zlib is already
// inflating): that error must reach the tree's read, not go unheard and end the server.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterEach, expect, it } from 'vitest';
import { buildZip } from '../../../test/helpers/archives.ts';
import { unpackArchive } from './archive.ts';
import { UploadTree } from './upload-tree.ts';

const limits = { maxBytes: 8 << 20, maxEntries: 10, maxFileBytes: 4 << 20 };
let dir: string | undefined;
afterEach(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

/** A tree that starts reading an entry only once the entry's stream has already failed. */
class LateReader extends UploadTree {
  override async file(...args: Parameters<UploadTree['file']>): Promise<void> {
    const stream = args[2] as Readable;
    while (stream.errored === null && !stream.readableEnded) await new Promise((resolve) => setImmediate(resolve));
    return super.file(...args);
  }
}

it('refuses an entry that lies about its size, whenever its data fails', async () => {
  dir = mkdtempSync(join(tmpdir(), 'workcell-archive-'));
  const root = join(dir, 'workspace');
  const zip = buildZip([{ name: 'liar', data: Buffer.alloc(1 << 20), declaredSize: 10 }]);
  for (const [index, tree] of [new UploadTree(root, limits), new LateReader(root, limits)].entries()) {
    rmSync(root, { recursive: true, force: true });
    mkdirSync(root);
    await expect(unpackArchive((async function* () { yield zip; })(), tree, limits, join(dir, `spool-${index}.zip`))).rejects.toThrow(/"liar" cannot be read \(too many bytes in the stream/);
  }
});
