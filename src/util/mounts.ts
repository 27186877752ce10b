// Reading this process's mount table (/proc/self/mountinfo).
import { readFile, realpath } from 'node:fs/promises';

/** A path as mountinfo writes it: space, tab, newline and backslash as octal escapes. */
export function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/** Is `dir` a mount point (as this process's mount namespace sees it)? A bind mount from the same file system is one too. */
export async function isMountPoint(dir: string): Promise<boolean> {
  return (await mountType(dir)) !== undefined;
}

/** The file system type mounted at `dir` (the topmost mount there), or undefined when it is no mount point. */
export async function mountType(dir: string): Promise<string | undefined> {
  const real = await realpath(dir).catch(() => dir);
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  let type: string | undefined;
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    if (unescapeMount(fields[4] ?? '') !== real) continue;
    // After the optional fields, a "-" and then the file system type.
    type = fields[fields.indexOf('-') + 1];
  }
  return type;
}
