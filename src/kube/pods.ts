/**
 * The only module that talks to Kubernetes (with kube/events.ts): informers on this node's pods
 * and on namespaces, feeding the PodIndex, and their sync state.
 */
// From their own modules, not the package index (which loads the whole generated API): see api.ts.
import { ListWatch } from '@kubernetes/client-node/dist/cache.js';
import type { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import { Watch } from '@kubernetes/client-node/dist/watch.js';
import type { KubernetesObject, V1Namespace, V1Pod } from '@kubernetes/client-node';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { NamespaceInfo, PodInfo, ServiceAccountInfo } from '../roles.js';
import type { KubeApi } from './api.js';
import { createKubeApi } from './api.js';
import type { PodIndex } from './pod-index.js';

/** Objects per list page (the API server's own default chunking is 500). */
const LIST_PAGE = 500;

export type InformerState = 'syncing' | 'watching' | 'reconnecting';


/**
 * The watch as ListWatch uses it, bounded in time as client-go's reflector is: a server-side
 * `timeoutSeconds`, plus a client-side read deadline: no event for `deadlineMs`, from the request
 * on, and the watch is aborted and ended as if the server had timed it out. ListWatch then
 * watches again from the last resourceVersion: the API server replays whatever the silent watch
 * missed (a DELETED included), or answers 410 and ListWatch relists. A dead connection (up,
 * silent) would otherwise be noticed only by TCP keepalive, after about 11 minutes. A quiet but
 * healthy watch is renewed the same way, at no cost in lag (nothing was flowing); a busy one
 * never reaches the deadline. Also: bookmarks, and a signal when the watch stream is really open
 * (ListWatch's own 'connect' fires before the request is made).
 */
function watchWithDeadline(
  kc: KubeConfig,
  timeoutSeconds: number,
  deadlineMs: number,
  on: { open(): void; silent(silentMs: number): void },
  slim: (o: KubernetesObject) => KubernetesObject,
) {
  const inner = new Watch(kc);
  return {
    watch: async (path: string, query: Record<string, unknown>, callback: (phase: string, obj: unknown, watchObj?: unknown) => void, done: (err: unknown) => void) => {
      let finished = false;
      let expired = false;
      let controller: AbortController | undefined;
      let timer: NodeJS.Timeout | undefined;
      const finish = (err: unknown): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        done(err);
      };
      const touch = (): void => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          if (finished) return;
          expired = true;
          on.silent(deadlineMs);
          finish(null);
          controller?.abort();
        }, deadlineMs);
        timer.unref();
      };
      const cb = (phase: string, obj: unknown): void => {
        touch();
        callback(phase, phase === 'ERROR' || phase === 'BOOKMARK' ? obj : slim(obj as KubernetesObject));
      };
      let failed = false;
      touch();
      try {
        controller = await inner.watch(path, { ...query, timeoutSeconds, allowWatchBookmarks: true }, cb, (err: unknown) => {
          if (err) failed = true;
          finish(err);
        });
        // The deadline passed while connecting: this late stream is not wanted.
        if (expired) controller.abort();
        else if (!failed) on.open();
        return controller;
      } catch (err) {
        // Watch.watch prepares auth outside its own try: an exec/OIDC plugin failure would be an
        // unhandled rejection (ListWatch restarts the watch without awaiting it). Report it as a
        // failed watch instead, so the informer backs off and retries.
        finish(err);
        const aborted = new AbortController();
        aborted.abort();
        return aborted;
      }
    },
  } as unknown as Watch;
}

function toMs(t: Date | string | undefined): number {
  if (t === undefined) return 0;
  const ms = new Date(t).getTime();
  return Number.isNaN(ms) ? 0 : ms;
}

export function toPodInfo(pod: V1Pod): PodInfo {
  const ips = (pod.status?.podIPs?.map((p) => p.ip).filter((ip): ip is string => !!ip) ?? []).slice();
  const primary = pod.status?.podIP;
  if (primary && !ips.includes(primary)) ips.unshift(primary);
  return {
    namespace: pod.metadata?.namespace ?? 'default',
    name: pod.metadata?.name ?? '',
    uid: pod.metadata?.uid ?? '',
    ips,
    phase: pod.status?.phase ?? 'Unknown',
    hostNetwork: pod.spec?.hostNetwork === true,
    createdMs: toMs(pod.metadata?.creationTimestamp),
    deleting: pod.metadata?.deletionTimestamp !== undefined && pod.metadata?.deletionTimestamp !== null,
    annotations: { ...(pod.metadata?.annotations ?? {}) },
    serviceAccount: pod.spec?.serviceAccountName || 'default',
    nodeName: pod.spec?.nodeName ?? undefined,
  };
}

function toServiceAccountInfo(o: KubernetesObject): ServiceAccountInfo {
  return { namespace: o.metadata?.namespace ?? 'default', name: o.metadata?.name ?? '', uid: o.metadata?.uid ?? '', annotations: { ...(o.metadata?.annotations ?? {}) } };
}

/**
 * What the informer's own store keeps of each object: only the fields podiam reads (and the
 * resourceVersion ListWatch compares). A pod is ~6 KB of JSON, mostly container specs; watching
 * 10,000 pods cluster-wide, the full objects alone would be hundreds of MB.
 */
export function slimObject(o: KubernetesObject): KubernetesObject {
  const m = o.metadata ?? {};
  const pod = o as V1Pod;
  const slimmed: V1Pod = {
    metadata: {
      name: m.name,
      namespace: m.namespace,
      uid: m.uid,
      resourceVersion: m.resourceVersion,
      creationTimestamp: m.creationTimestamp,
      deletionTimestamp: m.deletionTimestamp,
      annotations: m.annotations,
    },
  };
  if (pod.spec !== undefined) slimmed.spec = { nodeName: pod.spec.nodeName, hostNetwork: pod.spec.hostNetwork, serviceAccountName: pod.spec.serviceAccountName, containers: [] };
  if (pod.status !== undefined) slimmed.status = { phase: pod.status.phase, podIP: pod.status.podIP, podIPs: pod.status.podIPs };
  return slimmed as KubernetesObject;
}

function toNamespaceInfo(ns: V1Namespace): NamespaceInfo {
  return { name: ns.metadata?.name ?? '', annotations: { ...(ns.metadata?.annotations ?? {}) } };
}

/** A list response as the API server sends it (JSON field `continue`, not the generated `_continue`). */
interface KubeList {
  items: KubernetesObject[];
  metadata?: { resourceVersion?: string; continue?: string };
}

interface Informer {
  readonly resource: 'pods' | 'namespaces' | 'serviceaccounts';
  state: InformerState;
  everSynced: boolean;
  listWatch: ListWatch<KubernetesObject> | undefined;
  failures: number;
  retryTimer: NodeJS.Timeout | undefined;
  /** Watches replaced after their read deadline passed in silence. */
  watchTimeouts: number;
}

export class KubeWatcher {
  private readonly api: KubeApi;
  private readonly informers: { pods: Informer; namespaces: Informer; serviceaccounts: Informer };
  private stopped = false;
  private readonly syncWaiters: Array<() => void> = [];

  constructor(
    private readonly kc: KubeConfig,
    private readonly index: PodIndex,
    private readonly options: { node: string | undefined; log: Logger; metrics: Metrics; watchTimeoutSeconds?: number; watchDeadlineMs?: number; podsOnly?: boolean },
  ) {
    this.api = createKubeApi(kc);
    const informer = (resource: Informer['resource']): Informer => ({ resource, state: 'syncing', everSynced: false, listWatch: undefined, failures: 0, retryTimer: undefined, watchTimeouts: 0 });
    this.informers = { pods: informer('pods'), namespaces: informer('namespaces'), serviceaccounts: informer('serviceaccounts') };
  }

  start(): void {
    const fieldSelector = this.options.node === undefined ? undefined : `spec.nodeName=${this.options.node}`;
    // makeInformer drops the field selector from the watch; ListWatch built here passes it to both.
    this.run(this.informers.pods, '/api/v1/pods', (page) => this.api.get<KubeList>('/api/v1/pods', { fieldSelector, limit: LIST_PAGE, continue: page }), fieldSelector, {
      upsert: (o) => this.index.upsertPod(toPodInfo(o as V1Pod)),
      remove: (o) => this.index.deletePod(o.metadata?.namespace ?? 'default', o.metadata?.name ?? ''),
    });
    // Broker mode's agent: its node's pods only (the broker decides roles; it watches the rest).
    if (this.options.podsOnly === true) return;
    this.run(this.informers.namespaces, '/api/v1/namespaces', (page) => this.api.get<KubeList>('/api/v1/namespaces', { limit: LIST_PAGE, continue: page }), undefined, {
      upsert: (o) => this.index.upsertNamespace(toNamespaceInfo(o as V1Namespace)),
      remove: (o) => this.index.deleteNamespace(o.metadata?.name ?? ''),
    });
    // ServiceAccounts carry roles too (a pod without its own annotation gets its ServiceAccount's).
    this.run(this.informers.serviceaccounts, '/api/v1/serviceaccounts', (page) => this.api.get<KubeList>('/api/v1/serviceaccounts', { limit: LIST_PAGE, continue: page }), undefined, {
      upsert: (o) => this.index.upsertServiceAccount(toServiceAccountInfo(o)),
      remove: (o) => this.index.deleteServiceAccount(o.metadata?.namespace ?? 'default', o.metadata?.name ?? ''),
    });
  }

  /** Every informer has listed at least once. */
  synced(): boolean {
    if (this.options.podsOnly === true) return this.informers.pods.everSynced;
    return this.informers.pods.everSynced && this.informers.namespaces.everSynced && this.informers.serviceaccounts.everSynced;
  }

  whenSynced(): Promise<void> {
    if (this.synced()) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  states(): { pods: InformerState; namespaces: InformerState; serviceaccounts: InformerState } {
    return { pods: this.informers.pods.state, namespaces: this.informers.namespaces.state, serviceaccounts: this.informers.serviceaccounts.state };
  }

  /** Watches found silent past the deadline and replaced, per resource (also a metric). */
  watchTimeouts(): { pods: number; namespaces: number; serviceaccounts: number } {
    return { pods: this.informers.pods.watchTimeouts, namespaces: this.informers.namespaces.watchTimeouts, serviceaccounts: this.informers.serviceaccounts.watchTimeouts };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const inf of Object.values(this.informers)) {
      if (inf.retryTimer) clearTimeout(inf.retryTimer);
      await inf.listWatch?.stop();
    }
  }

  private run(
    inf: Informer,
    path: string,
    list: (page: string | undefined) => Promise<KubeList>,
    fieldSelector: string | undefined,
    handlers: { upsert(o: KubernetesObject): void; remove(o: KubernetesObject): void },
  ): void {
    const { log, metrics } = this.options;
    const listFn = async () => {
      // In pages, slimmed as they come: a cluster-wide list never sits in memory whole.
      // Every page comes from the first page's snapshot, at its resourceVersion.
      const items: KubernetesObject[] = [];
      let resourceVersion: string | undefined;
      let page: string | undefined;
      do {
        const listed = await list(page);
        resourceVersion ??= listed.metadata?.resourceVersion;
        for (const o of listed.items) items.push(slimObject(o));
        page = listed.metadata?.continue;
      } while (page);
      const result = { metadata: { resourceVersion }, items };
      // ListWatch applies the list right after this promise settles; mark synced after that.
      setImmediate(() => this.markSynced(inf));
      return result;
    };
    const onOpen = (): void => {
      if (!inf.everSynced || inf.state === 'watching' || this.stopped) return;
      inf.state = 'watching';
      inf.failures = 0;
      metrics.informerSynced.set({ resource: inf.resource }, 1);
      log.info('kubernetes watch resumed', { resource: inf.resource });
    };
    const onSilent = (silentMs: number): void => {
      if (this.stopped) return;
      inf.watchTimeouts += 1;
      metrics.informerWatchTimeouts.inc({ resource: inf.resource });
      // Routine on a quiet cluster (no change, no bookmark, for the whole deadline): debug, not warn.
      log.debug('kubernetes watch silent past its deadline, watching again', { resource: inf.resource, silentMs });
    };
    const watch = watchWithDeadline(this.kc, this.options.watchTimeoutSeconds ?? 300, this.options.watchDeadlineMs ?? 55_000, { open: onOpen, silent: onSilent }, slimObject);
    const lw = new ListWatch<KubernetesObject>(path, watch, listFn as never, false, undefined, fieldSelector);
    inf.listWatch = lw;
    const guard = (fn: (o: KubernetesObject) => void) => (o: KubernetesObject) => {
      try {
        fn(o);
      } catch (err) {
        log.error('informer handler failed', { resource: inf.resource, object: `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`, error: (err as Error).message });
      }
    };
    lw.on('add', guard(handlers.upsert));
    lw.on('update', guard(handlers.upsert));
    lw.on('delete', guard(handlers.remove));
    lw.on('error', (err: unknown) => {
      if (this.stopped) return;
      inf.failures += 1;
      inf.state = inf.everSynced ? 'reconnecting' : 'syncing';
      metrics.informerSynced.set({ resource: inf.resource }, 0);
      metrics.informerRestarts.inc({ resource: inf.resource });
      // ListWatch does not restart after an error: back off (jittered, capped at 30 s) and start again.
      const delay = Math.min(30_000, 250 * 2 ** Math.min(inf.failures - 1, 7)) * (0.5 + Math.random());
      log.warn('kubernetes watch failed, retrying', { resource: inf.resource, error: describe(err), retryInMs: Math.round(delay) });
      inf.retryTimer = setTimeout(() => {
        inf.retryTimer = undefined;
        if (!this.stopped) lw.start().catch(() => undefined);
      }, delay);
      inf.retryTimer.unref();
    });
    lw.start().catch(() => undefined);
  }

  private markSynced(inf: Informer): void {
    if (this.stopped) return;
    const first = !inf.everSynced;
    inf.everSynced = true;
    inf.state = 'watching';
    inf.failures = 0;
    this.options.metrics.informerSynced.set({ resource: inf.resource }, 1);
    if (first) this.options.log.info('informer synced', { resource: inf.resource, node: this.options.node });
    if (this.synced()) for (const w of this.syncWaiters.splice(0)) w();
  }
}

function describe(err: unknown): string {
  const e = err as { statusCode?: number; code?: string | number; message?: string };
  return [e.statusCode ?? e.code, e.message ?? String(err)].filter((x) => x !== undefined).join(' ');
}
