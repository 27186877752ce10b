// Cuts a text into chunks for the retrieval index: about `targetChars` each, ending at a line break when one is
// near, never inside a UTF-16 surrogate pair. The chunks tile the text exactly (no overlap, no gap), so a handle's
// whole text is the concatenation of its chunks in order, and paging through it needs nothing else.

export interface TextChunk {
  start: number;
  end: number;
  text: string;
}

export const chunkTargetChars = 1200;

export function chunkText(text: string, targetChars = chunkTargetChars): TextChunk[] {
  const chunks: TextChunk[] = [];
  let start = 0;
  while (start < text.length) {
    let end = Math.min(text.length, start + targetChars);
    if (end < text.length) {
      // Prefer to end after a newline in the last third of the chunk, else after a space.
      const floor = start + Math.floor(targetChars * 0.66);
      const newline = text.lastIndexOf('\n', end - 1);
      if (newline >= floor) end = newline + 1;
      else {
        const space = text.lastIndexOf(' ', end - 1);
        if (space >= floor) end = space + 1;
      }
      if (isLowSurrogate(text.charCodeAt(end))) end--;
    }
    chunks.push({ start, end, text: text.slice(start, end) });
    start = end;
  }
  return chunks;
}

/** Moves `index` off the second half of a surrogate pair, so that slicing there keeps characters whole. */
export function safeIndex(text: string, index: number): number {
  return index > 0 && index < text.length && isLowSurrogate(text.charCodeAt(index)) ? index - 1 : index;
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}
