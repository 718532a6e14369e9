/**
 * One informer, as client-go's reflector runs it: list (in pages, each parsed as a stream), then
 * watch from the list's resourceVersion; a watch that ends is renewed from the last
 * resourceVersion, a 410 Gone relists, any other failure backs off (jittered, capped) and retries.
 *
 * The reflector stores nothing but the keys it has handed on (to tell, after a relist, which
 * objects are gone): each object is converted to what podiam reads and stored once, by the
 * handler (the PodIndex). Its sync state says whether the handler's view can be trusted:
 * `inSyncSince` while list + watch are running, `outOfSyncSince` from the moment they stopped.
 */
import type http from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import type { Logger } from '../log.js';
import { KubeApiError } from './api.js';
import { readList } from './list-stream.js';
import { ACCEPT_JSON, ACCEPT_METADATA, ACCEPT_METADATA_LIST, openStream } from './stream.js';

export type InformerState = 'syncing' | 'watching' | 'reconnecting';

/** etcd stores at most 1.5 MiB an object; its JSON can be larger (escapes): this much is one object's text at most. */
export const MAX_OBJECT_BYTES = 16 * 1024 * 1024;

export interface ReflectorHandlers<T> {
  upsert(obj: T): void;
  remove(key: string): void;
}

export interface ReflectorOptions<T> {
  /** For logs, metrics and NotReady messages: "pods", "serviceaccounts in team-a", ... */
  readonly name: string;
  /** The metric label: pods, namespaces or serviceaccounts. */
  readonly resource: string;
  /** The collection: /api/v1/pods, /api/v1/namespaces/<ns>/serviceaccounts, ... */
  readonly path: string;
  readonly fieldSelector?: string;
  /** PartialObjectMetadata lists and watches: the objects' metadata only (namespaces, ServiceAccounts). */
  readonly metadataOnly: boolean;
  /** The object as podiam keeps it (only the fields it reads), or undefined to ignore it. */
  readonly convert: (raw: unknown) => { key: string; value: T } | undefined;
  readonly handlers: ReflectorHandlers<T>;
  readonly log: Logger;
  /** Watch silent this long (no event, no bookmark): aborted and renewed (--watch-deadline). */
  readonly silentMs: number;
  readonly watchTimeoutSeconds?: number;
  readonly pageSize?: number;
  readonly agent?: http.Agent;
  readonly now?: () => number;
  /** State changes and counters, for metrics. */
  readonly on?: {
    state?(state: InformerState): void;
    restart?(): void;
    silent?(): void;
  };
}

class Gone extends Error {}

export class Reflector<T> {
  state: InformerState = 'syncing';
  everSynced = false;
  /** When list + watch last stopped running (undefined while they run, and before the first sync). */
  outOfSyncSince: number | undefined;
  watchTimeouts = 0;
  private rv = '';
  private known = new Set<string>();
  private stopped = false;
  private controller: AbortController | undefined;
  private readonly waiters = new Set<() => void>();
  private wake: (() => void) | undefined;
  private readonly now: () => number;
  private running: Promise<void> | undefined;
  /** Failed attempts since list + watch last ran: the backoff's exponent. */
  private failures = 0;

  constructor(
    private readonly kc: KubeConfig,
    private readonly options: ReflectorOptions<T>,
  ) {
    this.now = options.now ?? Date.now;
  }

  get name(): string {
    return this.options.name;
  }

  start(): void {
    this.running ??= this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.controller?.abort();
    this.wake?.();
    await this.running;
    for (const w of this.waiters) w();
    this.waiters.clear();
  }

  /** Keys of everything handed on (for a scope dropping what it no longer needs). */
  keys(): ReadonlySet<string> {
    return this.known;
  }

  /** How long list + watch have not been running (0 while they run); Infinity before the first sync. */
  staleMs(): number {
    if (!this.everSynced) return Infinity;
    return this.outOfSyncSince === undefined ? 0 : this.now() - this.outOfSyncSince;
  }

  /** Resolves at the next sync (first list done, or watch running again), or after `ms`. */
  nextSync(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = Number.isFinite(ms) ? setTimeout(done, ms) : undefined;
      this.waiters.add(done);
    });
  }

  private setState(state: InformerState): void {
    if (state === 'watching') {
      this.failures = 0;
      this.outOfSyncSince = undefined;
      for (const w of [...this.waiters]) w();
    } else if (this.everSynced) this.outOfSyncSince ??= this.now();
    if (state === this.state) return;
    this.state = state;
    this.options.on?.state?.(state);
  }

  private async loop(): Promise<void> {
    const { log, name } = this.options;
    while (!this.stopped) {
      try {
        if (this.rv === '') await this.list();
        const opened = this.now();
        const events = await this.watch();
        // A watch the server ends at once, again and again, must not become a busy loop.
        if (events === 0 && this.now() - opened < 1000 && !this.stopped) await this.pause(1000);
      } catch (err) {
        if (this.stopped) break;
        this.setState(this.everSynced ? 'reconnecting' : 'syncing');
        if (err instanceof Gone || (err instanceof KubeApiError && err.statusCode === 410)) {
          this.rv = '';
          log.info('kubernetes watch expired, relisting', { resource: name });
          continue;
        }
        this.failures += 1;
        this.options.on?.restart?.();
        const delay = Math.min(30_000, 250 * 2 ** Math.min(this.failures - 1, 7)) * (0.5 + Math.random());
        log.warn('kubernetes list or watch failed, retrying', { resource: name, error: describe(err), retryInMs: Math.round(delay) });
        await this.pause(delay);
      }
    }
  }

  /** Sleeps `ms`, or until stop(). */
  private async pause(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.wake = undefined;
  }

  /** Every page, every item handed on as it is parsed; then what the list no longer has is removed. */
  private async list(): Promise<void> {
    const { path, fieldSelector, metadataOnly, convert, handlers } = this.options;
    const seen = new Set<string>();
    let page: string | undefined;
    let rv: string | undefined;
    do {
      const controller = (this.controller = new AbortController());
      const res = await openStream(this.kc, path, { fieldSelector, limit: this.options.pageSize ?? 500, continue: page }, metadataOnly ? ACCEPT_METADATA_LIST : ACCEPT_JSON, { signal: controller.signal, connectTimeoutMs: 30_000, agent: this.options.agent });
      // A page that stops flowing (connection up, nothing sent) is abandoned like a silent watch.
      let idle: NodeJS.Timeout | undefined;
      const touch = (): void => {
        clearTimeout(idle);
        idle = setTimeout(() => res.destroy(new Error(`list ${path}: nothing received for ${this.options.silentMs} ms`)), this.options.silentMs);
        idle.unref();
      };
      touch();
      res.on('data', touch);
      const meta = await readList(
        res,
        (raw) => {
          const o = convert(raw);
          if (o === undefined) return;
          seen.add(o.key);
          handlers.upsert(o.value);
        },
        MAX_OBJECT_BYTES,
      ).finally(() => clearTimeout(idle));
      // Every page comes from the first page's snapshot, at its resourceVersion.
      rv ??= meta.resourceVersion;
      page = meta.continue;
    } while (page !== undefined && !this.stopped);
    if (this.stopped) return;
    for (const key of this.known) if (!seen.has(key)) handlers.remove(key);
    this.known = seen;
    this.rv = rv ?? '';
    const first = !this.everSynced;
    this.everSynced = true;
    this.setState('watching');
    if (first) this.options.log.info('informer synced', { resource: this.options.name, objects: seen.size });
  }

  /** Until the watch ends (server timeout, connection closed, silent past the deadline): how many events it carried. Throws Gone on 410. */
  private async watch(): Promise<number> {
    const { path, fieldSelector, metadataOnly, silentMs, log, name } = this.options;
    const controller = (this.controller = new AbortController());
    let timer: NodeJS.Timeout | undefined;
    let silent = false;
    const touch = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        silent = true;
        controller.abort();
      }, silentMs);
      timer.unref();
    };
    touch();
    let events = 0;
    try {
      const res = await openStream(
        this.kc,
        path,
        { watch: true, resourceVersion: this.rv, allowWatchBookmarks: true, timeoutSeconds: this.options.watchTimeoutSeconds ?? 300, fieldSelector },
        metadataOnly ? ACCEPT_METADATA : ACCEPT_JSON,
        { signal: controller.signal, connectTimeoutMs: silentMs, agent: this.options.agent },
      );
      this.setState('watching');
      await readLines(res, MAX_OBJECT_BYTES, touch, (line) => {
        events += 1;
        this.event(line);
      });
    } catch (err) {
      if (!silent) throw err;
    } finally {
      clearTimeout(timer);
    }
    if (silent && !this.stopped) {
      this.watchTimeouts += 1;
      this.options.on?.silent?.();
      // Routine on a quiet cluster (no change, no bookmark, for the whole deadline): debug, not warn.
      log.debug('kubernetes watch silent past its deadline, watching again', { resource: name, silentMs });
    }
    // The watch ended: out of sync until the next one runs.
    if (!this.stopped) this.setState('reconnecting');
    return events;
  }

  private event(line: string): void {
    const { convert, handlers } = this.options;
    const ev = JSON.parse(line) as { type?: string; object?: { code?: number; message?: string; metadata?: { resourceVersion?: string } } };
    const obj = ev.object;
    if (ev.type === 'ERROR') {
      if (obj?.code === 410) throw new Gone(obj.message ?? 'Gone');
      throw new KubeApiError(obj?.code ?? 500, `watch ${this.options.path}: ${obj?.message ?? 'error event'}`);
    }
    const rv = obj?.metadata?.resourceVersion;
    if (ev.type === 'ADDED' || ev.type === 'MODIFIED') {
      const o = convert(obj);
      if (o !== undefined) {
        this.known.add(o.key);
        handlers.upsert(o.value);
      }
    } else if (ev.type === 'DELETED') {
      const o = convert(obj);
      if (o !== undefined && this.known.delete(o.key)) handlers.remove(o.key);
    }
    if (typeof rv === 'string' && rv !== '') this.rv = rv;
  }
}

/** Newline-delimited events, each line at most `maxLine` bytes; `onData` on every chunk (the watch is alive). */
function readLines(body: http.IncomingMessage, maxLine: number, onData: () => void, onLine: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let pieces: Buffer[] = [];
    let size = 0;
    let failed = false;
    const fail = (err: Error): void => {
      if (failed) return;
      failed = true;
      body.destroy();
      reject(err);
    };
    body.on('data', (chunk: Buffer) => {
      if (failed) return;
      onData();
      let start = 0;
      try {
        for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
          pieces.push(chunk.subarray(start, nl));
          const line = Buffer.concat(pieces).toString('utf8');
          pieces = [];
          size = 0;
          start = nl + 1;
          if (line.trim() !== '') onLine(line);
        }
      } catch (err) {
        return fail(err as Error);
      }
      if (start < chunk.length) {
        size += chunk.length - start;
        if (size > maxLine) return fail(new Error(`a watch event larger than ${maxLine} bytes`));
        pieces.push(Buffer.from(chunk.subarray(start)));
      }
    });
    body.on('error', (err) => fail(err));
    body.on('aborted', () => fail(new Error('the watch was cut off')));
    body.on('end', () => {
      if (!failed) resolve();
    });
  });
}

function describe(err: unknown): string {
  const e = err as { statusCode?: number; code?: string | number; message?: string };
  return [e.statusCode ?? e.code, e.message ?? String(err)].filter((x) => x !== undefined).join(' ');
}
