// How a run_code result reads for the model (and in the job's record): a status line, what happened to the kernel,
// then the outputs in the order the kernel produced them, each under a short label; images become a label line in
// the text and ToolImages for the loop to store and for models with vision to see. Pure formatting: no I/O.
import type { RouteResponse } from '../../sandboxd/protocol.ts';
import type { ImageMediaType, ToolImage } from '../context/images.ts';

export type RunCodeResult = RouteResponse<'runCode'>;

const pngSignature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Width and height from a PNG's IHDR or a GIF's screen descriptor; undefined for anything else. */
export function imageSize(mediaType: ImageMediaType, data: Buffer): { width: number; height: number } | undefined {
  if (mediaType === 'image/png' && data.length >= 24 && data.subarray(0, 8).equals(pngSignature) && data.toString('latin1', 12, 16) === 'IHDR') {
    return { width: data.readUInt32BE(16), height: data.readUInt32BE(20) };
  }
  if (mediaType === 'image/gif' && data.length >= 10 && data.toString('latin1', 0, 3) === 'GIF') return { width: data.readUInt16LE(6), height: data.readUInt16LE(8) };
  return undefined;
}

function kilobytes(bytes: number): string {
  return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KB`;
}

function seconds(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

export function formatRunCode(result: RunCodeResult): { output: string; images: ToolImage[] } {
  const images: ToolImage[] = [];
  const head = [`status: ${result.status} (${result.language}${result.execution_count === null ? '' : `, execution ${result.execution_count}`}, ran ${seconds(result.duration_ms)})`];
  if (result.kernel_started) head.push(`A new ${result.language} kernel was started for this call (${seconds(result.startup_ms)}).`);
  head.push(...result.notes);
  const body: string[] = [];
  for (const output of result.outputs) {
    switch (output.type) {
      case 'stream':
        body.push(`[${output.name}]\n${output.text.replace(/\n$/, '')}`);
        break;
      case 'result':
        body.push(`[result]\n${output.text}`);
        break;
      case 'display':
        body.push(`[display]\n${output.text}`);
        break;
      case 'image': {
        const data = Buffer.from(output.data_base64, 'base64');
        const size = imageSize(output.mime_type, data);
        images.push({ mediaType: output.mime_type, data, ...(size === undefined ? {} : size) });
        const dimensions = size === undefined ? '' : ` ${size.width}x${size.height}`;
        body.push(`[image ${images.length}: ${output.mime_type}${dimensions}, ${kilobytes(data.length)}]${output.text === undefined ? '' : ` ${output.text}`}`);
        break;
      }
      case 'error':
        body.push(`[error] ${output.name}${output.message === '' ? '' : `: ${output.message}`}${output.traceback === '' ? '' : `\n${output.traceback}`}`);
        break;
    }
  }
  if (body.length === 0) body.push(result.status === 'ok' ? '(no output)' : '(no output before it ended)');
  if (result.omitted_outputs > 0) body.push(`[${result.omitted_outputs} more outputs (displays or images) were left out]`);
  return { output: [...head, ...body].join('\n'), images };
}
