// Images that tools return (the gui tool's screenshots; plots from run_code): each is stored once as a file in the
// job's directory, and events carry only its path, size and dimensions, never the bytes. The prompt builder loads the
// most recent ones back to send to models that take images (model-info.ts `vision`); older ones become a text note.
// Paths are relative to the job's directory and confined to its image folder: a path read from an event can never
// name another file.
import { mkdir, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join, normalize, sep } from 'node:path';

export const imageMediaTypes = ['image/png', 'image/jpeg', 'image/gif'] as const;
export type ImageMediaType = (typeof imageMediaTypes)[number];

/** An image as a tool returned it. */
export interface ToolImage {
  mediaType: ImageMediaType;
  data: Buffer;
  width?: number | undefined;
  height?: number | undefined;
}

/** What a tool-result event records of an image (its `images` field). */
export interface ImageRef {
  /** Relative to the job's directory, e.g. logs/screenshots/step-3-call-1.png. */
  path: string;
  media_type: ImageMediaType;
  width?: number;
  height?: number;
  bytes: number;
}

export interface ImageStore {
  /** Stores an image under `name` (a call handle, e.g. step-3-call-1; with -2, -3 for a call's further images). */
  save(name: string, image: ToolImage): Promise<ImageRef>;
  /** The bytes of a stored image, or undefined when it is gone or the path is not one of this store's. */
  load(path: string): Buffer | undefined;
}

/** The folder, under the job's directory, that images go to. */
export const imageFolder = join('logs', 'screenshots');

const extensions: Record<ImageMediaType, string> = { 'image/png': 'png', 'image/jpeg': 'jpg', 'image/gif': 'gif' };

/** Images as files in <jobDir>/logs/screenshots/. */
export function jobImageStore(jobDir: string): ImageStore {
  const folder = join(jobDir, imageFolder);
  return {
    async save(name, image) {
      const file = `${name.replace(/[^\w.-]/g, '_')}.${extensions[image.mediaType]}`;
      await mkdir(folder, { recursive: true, mode: 0o700 });
      await writeFile(join(folder, file), image.data, { mode: 0o600 });
      return refOf(join(imageFolder, file), image);
    },
    load(path) {
      const relative = normalize(path);
      if (!relative.startsWith(`${imageFolder}${sep}`) || relative.includes(`..${sep}`) || relative.slice(imageFolder.length + 1).includes(sep)) return undefined;
      try {
        return readFileSync(join(jobDir, relative));
      } catch {
        return undefined;
      }
    },
  };
}

/** Images kept in memory (unit tests). */
export function memoryImageStore(): ImageStore & { readonly files: Map<string, Buffer> } {
  const files = new Map<string, Buffer>();
  return {
    files,
    async save(name, image) {
      const path = join(imageFolder, `${name}.${extensions[image.mediaType]}`);
      files.set(path, image.data);
      return refOf(path, image);
    },
    load: (path) => files.get(path),
  };
}

function refOf(path: string, image: ToolImage): ImageRef {
  return {
    path,
    media_type: image.mediaType,
    ...(image.width === undefined ? {} : { width: image.width }),
    ...(image.height === undefined ? {} : { height: image.height }),
    bytes: image.data.length,
  };
}

/**
 * Tokens an image costs in a prompt: Anthropic's (width × height) / 750, which for the desktop's 1280x800 is 1366 and
 * is near OpenAI's tile count for it (1105); images of unknown size count as 1600.
 */
export function imageTokens(width: number | undefined, height: number | undefined): number {
  if (width === undefined || height === undefined) return 1600;
  return Math.ceil((width * height) / 750);
}

/** The image references of a tool-result event's data (those that look right; anything else is ignored). */
export function imageRefsOf(data: Record<string, unknown>): ImageRef[] {
  const images = data.images;
  if (!Array.isArray(images)) return [];
  return images.filter(
    (image): image is ImageRef =>
      typeof image === 'object' && image !== null && typeof (image as ImageRef).path === 'string' && (imageMediaTypes as readonly string[]).includes((image as ImageRef).media_type),
  );
}
