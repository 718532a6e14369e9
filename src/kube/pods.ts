/**
 * The informers podiam runs (with kube/events.ts, the only modules that talk to Kubernetes):
 * pods (of one node, or all), and the metadata of namespaces and ServiceAccounts, feeding the
 * PodIndex; their sync state and what may be answered from it.
 *
 * Reusable beyond the node agent: `node` scopes the pods; `metadataScope` says whether
 * namespaces and ServiceAccounts are watched cluster-wide ('all', as a cluster-wide service
 * would) or only those of the namespaces the watched pods are in ('used', the agent: each
 * namespace's two metadata-only watches start with its first pod and end a minute after its
 * last). Namespaces and ServiceAccounts are always asked for as PartialObjectMetadata: their
 * spec (a ServiceAccount's imagePullSecrets, say) is never downloaded.
 *
 * Staleness is bounded: an informer out of sync (list + watch not running) for
 * `watchDeadlineMs` fails closed — the answers that depend on it are NotReady (503), and
 * /readyz says so — rather than answering from an index the API server may have moved past.
 */
import type { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import { NotReady } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { NamespaceInfo, PodInfo, ServiceAccountInfo } from '../roles.js';
import type { AnnotationKeys } from './convert.js';
import { toNamespaceInfo, toPodInfo, toServiceAccountInfo } from './convert.js';
import type { PodIndex } from './pod-index.js';
import type { InformerState } from './reflector.js';
import { Reflector } from './reflector.js';

export type { InformerState } from './reflector.js';

type Resource = 'pods' | 'namespaces' | 'serviceaccounts';

export interface KubeWatcherOptions {
  /** Pods of this node only (spec.nodeName); undefined: every pod of the cluster. */
  readonly node: string | undefined;
  /**
   * 'used': namespaces and ServiceAccounts of the watched pods' namespaces only; 'all': cluster-wide;
   * 'none': pods only (an agent in broker mode: the broker decides roles, and watches the rest).
   */
  readonly metadataScope: 'used' | 'all' | 'none';
  readonly annotationKeys: AnnotationKeys;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** --watch-deadline: a watch silent this long is renewed; an informer out of sync this long fails closed. */
  readonly watchDeadlineMs: number;
  readonly watchTimeoutSeconds?: number;
  /** How long a namespace's watches outlive its last pod (a rollout's new pods reuse them). */
  readonly lingerMs?: number;
  readonly now?: () => number;
}

/** One namespace's metadata, watched while pods of this node are in it. */
interface Scope {
  readonly namespace: Reflector<NamespaceInfo>;
  readonly serviceAccounts: Reflector<ServiceAccountInfo>;
  readonly createdMs: number;
  /** Opened for the pods of the first pods list (start-up): /readyz waits for its first list. */
  readonly initial: boolean;
  pods: number;
  dropTimer: NodeJS.Timeout | undefined;
}

export interface OutOfSync {
  readonly informer: string;
  readonly resource: Resource;
  /** Seconds since list + watch stopped running (or since the informer started, if it never synced). */
  readonly seconds: number;
}

const nsOf = (key: string): string => key.slice(0, key.indexOf('/'));
const nameOf = (key: string): string => key.slice(key.indexOf('/') + 1);

export class KubeWatcher {
  private readonly pods: Reflector<PodInfo>;
  private readonly namespaces: Reflector<NamespaceInfo> | undefined;
  private readonly serviceAccounts: Reflector<ServiceAccountInfo> | undefined;
  private readonly scopes = new Map<string, Scope>();
  private readonly timeouts: Record<Resource, number> = { pods: 0, namespaces: 0, serviceaccounts: 0 };
  private readonly now: () => number;
  private startedMs = 0;
  private stopped = false;

  constructor(
    private readonly kc: KubeConfig,
    private readonly index: PodIndex,
    private readonly options: KubeWatcherOptions,
  ) {
    this.now = options.now ?? Date.now;
    const keys = options.annotationKeys;
    const fieldSelector = options.node === undefined ? undefined : `spec.nodeName=${options.node}`;
    this.pods = this.reflector<PodInfo>('pods', 'pods', '/api/v1/pods', fieldSelector, false, (raw) => {
      const pod = toPodInfo(raw, keys.pod);
      return { key: `${pod.namespace}/${pod.name}`, value: pod };
    }, {
      upsert: (pod) => this.upsertPod(pod),
      remove: (key) => this.removePod(nsOf(key), nameOf(key)),
    });
    if (options.metadataScope === 'all') {
      this.namespaces = this.namespaceReflector('namespaces', undefined);
      this.serviceAccounts = this.serviceAccountReflector('serviceaccounts', '/api/v1/serviceaccounts');
    }
  }

  start(): void {
    this.startedMs = this.now();
    this.pods.start();
    this.namespaces?.start();
    this.serviceAccounts?.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const all: Array<Promise<void>> = [this.pods.stop()];
    if (this.namespaces) all.push(this.namespaces.stop());
    if (this.serviceAccounts) all.push(this.serviceAccounts.stop());
    for (const s of this.scopes.values()) {
      clearTimeout(s.dropTimer);
      all.push(s.namespace.stop(), s.serviceAccounts.stop());
    }
    await Promise.all(all);
  }

  /**
   * What a credential answer depends on is in sync, or out of sync for less than the deadline:
   * the pod informer and, for a pod, the informers of its namespace and ServiceAccount.
   */
  synced(pod?: PodInfo): boolean {
    return this.blocking(pod) === undefined;
  }

  /**
   * Start-up holds, not refuses: waits up to `ms` for what synced(pod) needs, then resolves, or
   * throws NotReady naming the informer that is not in sync (and since when, if it was).
   */
  async ready(ms: number, pod?: PodInfo): Promise<void> {
    const deadline = this.now() + ms;
    for (;;) {
      const blocking = this.blocking(pod);
      if (blocking === undefined) return;
      const left = deadline - this.now();
      if (left <= 0 || blocking.reflector === undefined || this.stopped) throw this.notReady(blocking.name, blocking.reflector);
      await blocking.reflector.nextSync(left);
    }
  }

  /** For /readyz: everything listed, and no informer out of sync past the deadline. */
  healthy(): boolean {
    if (this.blocking() !== undefined) return false;
    for (const s of this.scopes.values()) if (!this.fresh(s.namespace, s) || !this.fresh(s.serviceAccounts, s)) return false;
    return true;
  }

  /** Informers not in sync right now, and for how long (for /readyz and the metrics). */
  outOfSync(): OutOfSync[] {
    const out: OutOfSync[] = [];
    const add = (r: Reflector<unknown>, resource: Resource, sinceMs: number): void => {
      if (r.everSynced && r.outOfSyncSince === undefined) return;
      out.push({ informer: r.name, resource, seconds: Math.round((this.now() - (r.outOfSyncSince ?? sinceMs)) / 1000) });
    };
    add(this.pods, 'pods', this.startedMs);
    if (this.namespaces) add(this.namespaces, 'namespaces', this.startedMs);
    if (this.serviceAccounts) add(this.serviceAccounts, 'serviceaccounts', this.startedMs);
    for (const s of this.scopes.values()) {
      add(s.namespace, 'namespaces', s.createdMs);
      add(s.serviceAccounts, 'serviceaccounts', s.createdMs);
    }
    return out;
  }

  states(): Record<Resource, InformerState> {
    const worst = (rs: Array<Reflector<unknown>>): InformerState =>
      rs.some((r) => r.state === 'reconnecting') ? 'reconnecting' : rs.some((r) => r.state === 'syncing') ? 'syncing' : 'watching';
    const scoped = [...this.scopes.values()];
    return {
      pods: this.pods.state,
      namespaces: worst(this.namespaces ? [this.namespaces] : scoped.map((s) => s.namespace)),
      serviceaccounts: worst(this.serviceAccounts ? [this.serviceAccounts] : scoped.map((s) => s.serviceAccounts)),
    };
  }

  /** Watches found silent past the deadline and replaced, per resource (also a metric). */
  watchTimeouts(): Record<Resource, number> {
    return { ...this.timeouts };
  }

  /** Namespaces whose metadata is watched (metadataScope 'used'). */
  watchedNamespaces(): string[] {
    return [...this.scopes.keys()];
  }

  // ---------------------------------------------------------------- internals

  private fresh(r: Reflector<unknown>, scope: Scope): boolean {
    if (r.everSynced) return r.staleMs() < this.options.watchDeadlineMs;
    // Never synced. The namespaces of the node's pods at start-up are part of the first sync:
    // not ready until they have listed (as /readyz's "syncing" says). A namespace opened later
    // (a pod in a new namespace) does not block /readyz until it has had the deadline to list.
    return !scope.initial && this.now() - scope.createdMs < this.options.watchDeadlineMs;
  }

  /** The first informer an answer (for this pod) would wait on: never synced, or out of sync past the deadline. */
  private blocking(pod?: PodInfo): { name: string; reflector: Reflector<unknown> | undefined } | undefined {
    const deadline = this.options.watchDeadlineMs;
    const bad = (r: Reflector<unknown>): boolean => !r.everSynced || r.staleMs() >= deadline;
    if (bad(this.pods)) return { name: this.pods.name, reflector: this.pods };
    if (this.namespaces && bad(this.namespaces)) return { name: this.namespaces.name, reflector: this.namespaces };
    if (this.serviceAccounts && bad(this.serviceAccounts)) return { name: this.serviceAccounts.name, reflector: this.serviceAccounts };
    if (pod === undefined || this.options.metadataScope !== 'used') return undefined;
    const scope = this.scopes.get(pod.namespace);
    if (scope === undefined) return { name: `namespaces/${pod.namespace}`, reflector: undefined };
    if (bad(scope.namespace)) return { name: scope.namespace.name, reflector: scope.namespace };
    if (bad(scope.serviceAccounts)) return { name: scope.serviceAccounts.name, reflector: scope.serviceAccounts };
    return undefined;
  }

  /** "the pods informer", "the serviceaccounts informer (namespace team-a)". */
  private notReady(name: string, r: Reflector<unknown> | undefined): NotReady {
    const slash = name.indexOf('/');
    const what = slash < 0 ? `the ${name} informer` : `the ${name.slice(0, slash)} informer (namespace ${name.slice(slash + 1)})`;
    if (r === undefined || !r.everSynced) return new NotReady(what);
    const seconds = Math.round(r.staleMs() / 1000);
    return new NotReady(what, `${what} has not been in sync with the API server for ${seconds}s (--watch-deadline ${Math.round(this.options.watchDeadlineMs / 1000)}s): podiam does not answer from an older view, try again`);
  }

  private reflector<T>(
    name: string,
    resource: Resource,
    path: string,
    fieldSelector: string | undefined,
    metadataOnly: boolean,
    convert: (raw: unknown) => { key: string; value: T } | undefined,
    handlers: { upsert(o: T): void; remove(key: string): void },
  ): Reflector<T> {
    const { log, metrics } = this.options;
    const guard = <A>(what: string, fn: (a: A) => void) => (a: A): void => {
      try {
        fn(a);
      } catch (err) {
        log.error('informer handler failed', { resource: name, what, error: (err as Error).message });
      }
    };
    return new Reflector<T>(this.kc, {
      name,
      resource,
      path,
      fieldSelector,
      metadataOnly,
      convert,
      handlers: { upsert: guard('upsert', handlers.upsert), remove: guard('remove', handlers.remove) },
      log,
      silentMs: this.options.watchDeadlineMs,
      watchTimeoutSeconds: this.options.watchTimeoutSeconds,
      now: this.now,
      on: {
        state: () => metrics.informerSynced.set({ resource }, this.states()[resource] === 'watching' ? 1 : 0),
        restart: () => metrics.informerRestarts.inc({ resource }),
        silent: () => {
          this.timeouts[resource] += 1;
          metrics.informerWatchTimeouts.inc({ resource });
        },
      },
    });
  }

  private namespaceReflector(name: string, only: string | undefined): Reflector<NamespaceInfo> {
    const keys = this.options.annotationKeys.namespace;
    return this.reflector<NamespaceInfo>(name, 'namespaces', '/api/v1/namespaces', only === undefined ? undefined : `metadata.name=${only}`, true, (raw) => {
      const ns = toNamespaceInfo(raw, keys);
      return { key: ns.name, value: ns };
    }, {
      upsert: (ns) => this.index.upsertNamespace(ns),
      remove: (key) => this.index.deleteNamespace(key),
    });
  }

  private serviceAccountReflector(name: string, path: string): Reflector<ServiceAccountInfo> {
    const keys = this.options.annotationKeys.serviceAccount;
    return this.reflector<ServiceAccountInfo>(name, 'serviceaccounts', path, undefined, true, (raw) => {
      const sa = toServiceAccountInfo(raw, keys);
      return { key: `${sa.namespace}/${sa.name}`, value: sa };
    }, {
      upsert: (sa) => this.index.upsertServiceAccount(sa),
      remove: (key) => this.index.deleteServiceAccount(nsOf(key), nameOf(key)),
    });
  }

  private upsertPod(pod: PodInfo): void {
    const isNew = this.index.pod(pod.namespace, pod.name) === undefined;
    if (isNew && this.options.metadataScope === 'used') this.use(pod.namespace);
    this.index.upsertPod(pod);
  }

  private removePod(namespace: string, name: string): void {
    if (this.index.pod(namespace, name) === undefined) return;
    this.index.deletePod(namespace, name);
    if (this.options.metadataScope === 'used') this.release(namespace);
  }

  /** A pod of this node is in `namespace`: watch its metadata (from the first pod on). */
  private use(namespace: string): void {
    const existing = this.scopes.get(namespace);
    if (existing !== undefined) {
      existing.pods += 1;
      clearTimeout(existing.dropTimer);
      existing.dropTimer = undefined;
      return;
    }
    const scope: Scope = {
      namespace: this.namespaceReflector(`namespaces/${namespace}`, namespace),
      serviceAccounts: this.serviceAccountReflector(`serviceaccounts/${namespace}`, `/api/v1/namespaces/${encodeURIComponent(namespace)}/serviceaccounts`),
      createdMs: this.now(),
      initial: !this.pods.everSynced,
      pods: 1,
      dropTimer: undefined,
    };
    this.scopes.set(namespace, scope);
    if (this.stopped) return;
    // Its pods' answers waited for these two; once both are in, they are served (and prefetched).
    let pending = 2;
    const synced = (): void => {
      if (--pending === 0 && this.scopes.get(namespace) === scope) this.index.renotify(namespace);
    };
    void scope.namespace.nextSync(Infinity).then(synced);
    void scope.serviceAccounts.nextSync(Infinity).then(synced);
    scope.namespace.start();
    scope.serviceAccounts.start();
  }

  /** A pod left `namespace`: after the last one (and a linger), stop watching it and forget its metadata. */
  private release(namespace: string): void {
    const scope = this.scopes.get(namespace);
    if (scope === undefined || --scope.pods > 0) return;
    scope.dropTimer = setTimeout(() => {
      if (this.scopes.get(namespace) !== scope || scope.pods > 0) return;
      this.scopes.delete(namespace);
      void scope.namespace.stop();
      void scope.serviceAccounts.stop();
      this.index.deleteNamespace(namespace);
      for (const key of scope.serviceAccounts.keys()) this.index.deleteServiceAccount(nsOf(key), nameOf(key));
    }, this.options.lingerMs ?? 60_000);
    scope.dropTimer.unref();
  }
}
