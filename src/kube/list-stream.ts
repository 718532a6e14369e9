/**
 * A Kubernetes list response read as a stream: each element of `items` is parsed (and handed
 * on) the moment its closing brace arrives, and only the list's own `metadata` is kept. A page
 * of 500 pods of 1.5 MiB each (etcd's limit) costs one object's worth of memory, not 750 MB,
 * and no size cap on the whole response can be made to fail a list.
 *
 * A byte scanner, not a general JSON parser: it only tracks strings and nesting, and leaves
 * each item's text to JSON.parse. Structural characters are ASCII, so UTF-8 needs no decoding.
 */
import type { Readable } from 'node:stream';

export interface ListMeta {
  readonly resourceVersion?: string;
  readonly continue?: string;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const COLON = 0x3a;
const COMMA = 0x2c;

export class ListTooLarge extends Error {}

/**
 * Reads a list body, calling `onItem` with each parsed item in order; resolves with the list's
 * metadata once the body has ended. Rejects if one item's text exceeds `maxItemBytes`, if the
 * body is not a JSON object, or if `onItem` throws.
 */
export function readList(body: Readable, onItem: (item: unknown) => void, maxItemBytes: number): Promise<ListMeta> {
  return new Promise((resolve, reject) => {
    let depth = 0;
    let inString = false;
    let escaped = false;
    let expectKey = false;
    let key: number[] | undefined;
    let lastKey = '';
    let inItems = false;
    let sawTop = false;
    // The value being captured: an item (base depth 2) or the list's metadata (base depth 1).
    let capture: { base: number; pieces: Buffer[]; size: number; start: number; what: 'item' | 'metadata' } | undefined;
    let meta: ListMeta = {};
    let failed = false;

    const fail = (err: Error): void => {
      if (failed) return;
      failed = true;
      body.destroy();
      reject(err);
    };

    const finishCapture = (buf: Buffer, end: number): void => {
      const c = capture!;
      capture = undefined;
      c.pieces.push(buf.subarray(c.start, end));
      const text = c.pieces.length === 1 ? c.pieces[0]!.toString('utf8') : Buffer.concat(c.pieces).toString('utf8');
      const value: unknown = JSON.parse(text);
      if (c.what === 'item') onItem(value);
      else {
        const m = (value ?? {}) as { resourceVersion?: unknown; continue?: unknown };
        meta = {
          ...(typeof m.resourceVersion === 'string' ? { resourceVersion: m.resourceVersion } : {}),
          ...(typeof m.continue === 'string' && m.continue !== '' ? { continue: m.continue } : {}),
        };
      }
    };

    const scan = (buf: Buffer): void => {
      if (capture !== undefined) capture.start = 0;
      for (let i = 0; i < buf.length; i++) {
        const c = buf[i]!;
        if (inString) {
          if (escaped) escaped = false;
          else if (c === BACKSLASH) escaped = true;
          else if (c === QUOTE) {
            inString = false;
            if (key !== undefined) {
              lastKey = Buffer.from(key).toString('utf8');
              key = undefined;
            }
          } else if (key !== undefined && key.length < 64) key.push(c);
          continue;
        }
        switch (c) {
          case QUOTE:
            inString = true;
            if (depth === 1 && expectKey) key = [];
            break;
          case COLON:
            if (depth === 1) expectKey = false;
            break;
          case COMMA:
            if (depth === 1) expectKey = true;
            break;
          case OPEN_OBJECT:
          case OPEN_ARRAY:
            if (depth === 0) {
              if (c !== OPEN_OBJECT || sawTop) throw new Error('the list is not a JSON object');
              sawTop = true;
              expectKey = true;
            } else if (depth === 1 && lastKey === 'items' && c === OPEN_ARRAY) inItems = true;
            else if (depth === 1 && lastKey === 'metadata' && capture === undefined) capture = { base: 1, pieces: [], size: 0, start: i, what: 'metadata' };
            else if (depth === 2 && inItems && capture === undefined) capture = { base: 2, pieces: [], size: 0, start: i, what: 'item' };
            depth += 1;
            break;
          case CLOSE_OBJECT:
          case CLOSE_ARRAY:
            depth -= 1;
            if (depth < 0) throw new Error('the list is not valid JSON');
            if (capture !== undefined && depth === capture.base) finishCapture(buf, i + 1);
            if (depth === 1 && inItems && c === CLOSE_ARRAY) inItems = false;
            break;
          default:
        }
      }
      if (capture !== undefined) {
        const piece = buf.subarray(capture.start);
        capture.size += piece.length;
        if (capture.size > maxItemBytes) throw new ListTooLarge(`one object of the list is larger than ${maxItemBytes} bytes`);
        // A copy: the socket's buffer may be reused once this handler returns.
        capture.pieces.push(Buffer.from(piece));
      }
    };

    body.on('data', (chunk: Buffer) => {
      if (failed) return;
      try {
        scan(chunk);
      } catch (err) {
        fail(err as Error);
      }
    });
    body.on('error', (err) => fail(err));
    body.on('aborted', () => fail(new Error('the list response was cut off')));
    body.on('end', () => {
      if (failed) return;
      if (!sawTop || depth !== 0 || inString) return fail(new Error('the list response ended early or is not JSON'));
      resolve(meta);
    });
  });
}
