import { Readable } from 'node:stream';
import { readList } from '../../src/kube/list-stream.js';

/** The body cut into chunks of `size` bytes, so every structural character lands on a boundary somewhere. */
function chunked(text: string, size: number): Readable {
  const buf = Buffer.from(text, 'utf8');
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) parts.push(buf.subarray(i, i + size));
  return Readable.from(parts);
}

const list = {
  kind: 'PodList',
  apiVersion: 'v1',
  metadata: { resourceVersion: '42', continue: 'tok{"]', remainingItemCount: 3 },
  items: [
    { metadata: { name: 'a', annotations: { 'x/y': 'has "quotes" and } ] { [ and \\ backslashes', items: '[]' } }, spec: { containers: [{ env: [{ name: 'E', value: 'é漢字🙂' }] }] } },
    { metadata: { name: 'b' }, status: { podIPs: [{ ip: '10.0.0.1' }] } },
    { metadata: { name: 'c' }, nested: [[[{}]], { items: [1, 2] }] },
  ],
};

describe('readList', () => {
  test.each([1, 2, 3, 7, 64, 1 << 20])('items and metadata, whatever the chunk size (%i bytes)', async (size) => {
    const items: unknown[] = [];
    const meta = await readList(chunked(JSON.stringify(list), size), (i) => items.push(i), 1 << 20);
    expect(items).toEqual(list.items);
    expect(meta).toEqual({ resourceVersion: '42', continue: 'tok{"]' });
  });

  test('metadata after the items, whitespace, no continue', async () => {
    const text = `{ "items" : [ {"metadata":{"name":"a"}} , {"metadata":{"name":"b"}} ] ,\n "metadata" : {"resourceVersion":"7","continue":""} }`;
    const items: unknown[] = [];
    expect(await readList(chunked(text, 5), (i) => items.push(i), 1000)).toEqual({ resourceVersion: '7' });
    expect(items).toHaveLength(2);
  });

  test('one item over the limit fails the list; the ones before it were handed on', async () => {
    const big = { items: [{ metadata: { name: 'small' } }, { metadata: { name: 'big' }, x: 'x'.repeat(5000) }] };
    const items: unknown[] = [];
    await expect(readList(chunked(JSON.stringify(big), 100), (i) => items.push(i), 2000)).rejects.toThrow(/larger than 2000 bytes/);
    expect(items).toEqual([{ metadata: { name: 'small' } }]);
  });

  test('a body that is not a JSON object, or ends early, fails', async () => {
    await expect(readList(chunked('[1,2]', 3), () => undefined, 100)).rejects.toThrow(/not a JSON object/);
    await expect(readList(chunked('{"items":[{"a":1}', 3), () => undefined, 100)).rejects.toThrow(/ended early/);
    await expect(readList(chunked('', 3), () => undefined, 100)).rejects.toThrow(/ended early/);
  });

  test('a handler that throws fails the list', async () => {
    await expect(readList(chunked(JSON.stringify(list), 10), () => {
      throw new Error('boom');
    }, 1 << 20)).rejects.toThrow('boom');
  });
});
