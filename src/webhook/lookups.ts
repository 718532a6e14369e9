/**
 * Namespace and ServiceAccount reads for admission, each with a deadline, shared by concurrent
 * admissions (a Deployment scaled to 100 replicas asks for the same ServiceAccount 100 times at
 * once) and reused for a short TTL. Failures are never cached: the next pod asks again.
 */
import type { ObjectReader } from '../kube/object-reader.js';
import type { ObjectFacts } from './mutate.js';

export interface Lookups {
  namespace(name: string): Promise<ObjectFacts | undefined>;
  serviceAccount(namespace: string, name: string): Promise<ObjectFacts | undefined>;
}

export interface LookupOptions {
  readonly timeoutMs: number;
  readonly ttlMs: number;
  readonly now?: () => number;
  readonly maxEntries?: number;
}

/** A read that did not answer within --lookup-timeout. */
export class LookupTimeout extends Error {
  constructor(what: string, ms: number) {
    super(`${what}: no answer within ${ms} ms`);
  }
}

export function cachedLookups(reader: ObjectReader, options: LookupOptions): Lookups {
  const now = options.now ?? Date.now;
  const maxEntries = options.maxEntries ?? 10_000;
  const cache = new Map<string, { at: number; value: ObjectFacts | undefined }>();
  const inFlight = new Map<string, Promise<ObjectFacts | undefined>>();

  const read = (key: string, fetch: (signal: AbortSignal) => Promise<ObjectFacts | undefined>): Promise<ObjectFacts | undefined> => {
    const hit = cache.get(key);
    if (hit !== undefined && now() - hit.at < options.ttlMs) return Promise.resolve(hit.value);
    const pending = inFlight.get(key);
    if (pending !== undefined) return pending;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new LookupTimeout(key, options.timeoutMs)), options.timeoutMs);
    const p = fetch(controller.signal)
      .then(
        (value) => {
          if (options.ttlMs > 0) {
            cache.delete(key);
            cache.set(key, { at: now(), value });
            // Oldest first in a Map: drop it when full.
            if (cache.size > maxEntries) cache.delete(cache.keys().next().value!);
          }
          return value;
        },
        (err: unknown) => {
          throw controller.signal.aborted ? controller.signal.reason : err;
        },
      )
      .finally(() => {
        clearTimeout(timer);
        inFlight.delete(key);
      });
    inFlight.set(key, p);
    return p;
  };

  return {
    namespace: (name) => read(`namespace ${name}`, (signal) => reader.namespace(name, signal)),
    serviceAccount: (namespace, name) => read(`serviceaccount ${namespace}/${name}`, (signal) => reader.serviceAccount(namespace, name, signal)),
  };
}
