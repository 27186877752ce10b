// Test fixtures for uploads: multipart bodies, tar (tar-stream) and zip files built byte by byte, so that hostile
// archives (traversal, absolute names, links out, devices, set-id bits, lying sizes, NUL and backslashes in names) can
// be made exactly as an attacker would, which the libraries that write archives refuse to do.
import { crc32, deflateRawSync, gzipSync } from 'node:zlib';
import { pack, type Header } from 'tar-stream';

export interface FormPart {
  name: string;
  /** Present for a file part. */
  filename?: string;
  contentType?: string;
  data: string | Buffer;
}

/** A multipart/form-data body and its Content-Type, written by hand (filenames go out exactly as given). */
export function multipartBody(parts: FormPart[]): { body: Buffer; contentType: string } {
  const boundary = `----workcell-test-${Math.random().toString(16).slice(2)}`;
  const chunks: Buffer[] = [];
  for (const part of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"`;
    if (part.filename !== undefined) head += `; filename="${part.filename}"`;
    head += '\r\n';
    if (part.contentType !== undefined || part.filename !== undefined) head += `Content-Type: ${part.contentType ?? 'application/octet-stream'}\r\n`;
    chunks.push(Buffer.from(`${head}\r\n`, 'utf8'), Buffer.isBuffer(part.data) ? part.data : Buffer.from(part.data, 'utf8'), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

/** POSTs a multipart body to /schedule. */
export async function postMultipart(baseUrl: string, parts: FormPart[], headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const { body, contentType } = multipartBody(parts);
  const response = await fetch(`${baseUrl}/schedule`, { method: 'POST', headers: { 'content-type': contentType, ...headers }, body });
  return { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, unknown> };
}

export interface TarItem extends Partial<Header> {
  name: string;
  data?: string | Buffer;
}

/** A tar file (ustar, pax for long names) of these entries, in order. */
export async function buildTar(items: TarItem[]): Promise<Buffer> {
  const archive = pack();
  const chunks: Buffer[] = [];
  archive.on('data', (chunk) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    archive.on('end', resolve);
    archive.on('error', reject);
  });
  for (const { data, ...header } of items) {
    await new Promise<void>((resolve, reject) => {
      const body = data === undefined ? undefined : Buffer.isBuffer(data) ? data : Buffer.from(data);
      const done = (error?: Error | null) => (error ? reject(error) : resolve());
      if (body === undefined) archive.entry({ type: 'file', ...header }, done);
      else archive.entry({ type: 'file', ...header }, body, done);
    });
  }
  archive.finalize();
  await ended;
  return Buffer.concat(chunks);
}

export async function buildTarGz(items: TarItem[]): Promise<Buffer> {
  return gzipSync(await buildTar(items));
}

export interface ZipItem {
  /** Bytes as given (a string is UTF-8 and flagged so). */
  name: string | Buffer;
  data?: string | Buffer;
  /** The whole unix mode, type bits included (default a regular file 0644, or a directory for names ending in "/"). */
  mode?: number;
  /** 8: deflate (default), 0: stored. */
  method?: 0 | 8;
  /** The uncompressed size written in the headers, when it should lie. */
  declaredSize?: number;
}

/** A zip file written byte by byte (local headers, central directory, end record), made on unix. */
export function buildZip(items: ZipItem[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const item of items) {
    const name = Buffer.isBuffer(item.name) ? item.name : Buffer.from(item.name, 'utf8');
    const data = item.data === undefined ? Buffer.alloc(0) : Buffer.isBuffer(item.data) ? item.data : Buffer.from(item.data, 'utf8');
    const method = item.method ?? 8;
    const stored = method === 8 ? deflateRawSync(data) : data;
    const isDirectory = name.toString('latin1').endsWith('/');
    const mode = item.mode ?? (isDirectory ? 0o040755 : 0o100644);
    const flags = Buffer.isBuffer(item.name) ? 0 : 0x800;
    const size = item.declaredSize ?? data.length;
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(flags, 6);
    local.writeUInt16LE(method, 8);
    local.writeUInt16LE(0, 10);
    local.writeUInt16LE(0x21, 12); // 1980-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(stored.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4); // made by unix
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(flags, 8);
    central.writeUInt16LE(method, 10);
    central.writeUInt16LE(0, 12);
    central.writeUInt16LE(0x21, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(stored.length, 20);
    central.writeUInt32LE(size, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE((mode << 16) >>> 0, 38);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, stored);
    centrals.push(central, name);
    offset += local.length + name.length + stored.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(items.length, 8);
  end.writeUInt16LE(items.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}
