/** cachedLookups: single flight, TTL reuse, deadline, failures not cached. */
import type { ObjectMetaFacts, ObjectReader } from '../../src/kube/object-reader.js';
import { cachedLookups, LookupTimeout } from '../../src/webhook/lookups.js';

function reader(behaviour: (call: number, signal: AbortSignal) => Promise<ObjectMetaFacts | undefined>) {
  let calls = 0;
  const r: ObjectReader = {
    namespace: (_name, signal) => behaviour(++calls, signal),
    serviceAccount: (_ns, _name, signal) => behaviour(++calls, signal),
  };
  return { r, calls: () => calls };
}
const facts = (v: string): ObjectMetaFacts => ({ labels: { v }, annotations: {} });

test('concurrent reads of one object share one GET; the answer is reused within the TTL, read again after it', async () => {
  let now = 1_000;
  const { r, calls } = reader(async (n) => facts(String(n)));
  const lookups = cachedLookups(r, { timeoutMs: 1000, ttlMs: 10_000, now: () => now });
  const all = await Promise.all(Array.from({ length: 50 }, () => lookups.serviceAccount('a', 'app')));
  expect(calls()).toBe(1);
  expect(new Set(all.map((f) => f!.labels.v))).toEqual(new Set(['1']));
  now += 9_999;
  expect((await lookups.serviceAccount('a', 'app'))!.labels.v).toBe('1');
  now += 1;
  expect((await lookups.serviceAccount('a', 'app'))!.labels.v).toBe('2');
  // A different object is its own key.
  expect((await lookups.namespace('a'))!.labels.v).toBe('3');
});

test('not found is an answer (cached); a failure is not cached', async () => {
  const { r, calls } = reader(async (n) => {
    if (n === 1) throw new Error('HTTP 500');
    return undefined;
  });
  const lookups = cachedLookups(r, { timeoutMs: 1000, ttlMs: 10_000 });
  await expect(lookups.namespace('x')).rejects.toThrow('HTTP 500');
  await expect(lookups.namespace('x')).resolves.toBeUndefined();
  await expect(lookups.namespace('x')).resolves.toBeUndefined();
  expect(calls()).toBe(2);
});

test('a read that does not answer is aborted at the deadline with LookupTimeout', async () => {
  let aborted = false;
  const { r } = reader(
    (_n, signal) =>
      new Promise((_resolve, reject) => {
        signal.addEventListener('abort', () => {
          aborted = true;
          reject(new Error('aborted'));
        });
      }),
  );
  const lookups = cachedLookups(r, { timeoutMs: 100, ttlMs: 10_000 });
  const started = Date.now();
  const err = await lookups.namespace('slow').catch((e: unknown) => e);
  expect(err).toBeInstanceOf(LookupTimeout);
  expect((err as Error).message).toMatch(/namespace slow: no answer within 100 ms/);
  expect(aborted).toBe(true);
  expect(Date.now() - started).toBeLessThan(1000);
});

test('ttl 0 never caches; the cache is bounded', async () => {
  const { r, calls } = reader(async (n) => facts(String(n)));
  const uncached = cachedLookups(r, { timeoutMs: 1000, ttlMs: 0 });
  await uncached.namespace('a');
  await uncached.namespace('a');
  expect(calls()).toBe(2);
  const bounded = cachedLookups(r, { timeoutMs: 1000, ttlMs: 60_000, maxEntries: 2 });
  await bounded.namespace('a');
  await bounded.namespace('b');
  await bounded.namespace('c'); // evicts a
  const before = calls();
  await bounded.namespace('c');
  await bounded.namespace('a');
  expect(calls() - before).toBe(1);
});
