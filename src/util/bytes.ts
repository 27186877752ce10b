// Sizes in words, for messages about the caps on host files (sandbox.log, audit.jsonl, the context store).

/** "64 MB", "1.5 MB", "512 KB". */
export function formatBytes(bytes: number): string {
  const megabytes = bytes / (1024 * 1024);
  if (megabytes >= 1) return `${Number.isInteger(megabytes) ? megabytes : megabytes.toFixed(1)} MB`;
  return `${Math.round(bytes / 1024)} KB`;
}
