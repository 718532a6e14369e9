/**
 * The PodIdentityAssociation informer (podiam.io/v1alpha1, cluster-scoped; the CRD is in
 * manifests/components/associations): one list/watch, its own and small, feeding the
 * AssociationIndex. Role resolution reads the index as data (roles.ts), so the broker gets
 * associations by reusing the same resolver with this same informer.
 *
 * A cluster without the CRD answers 404: that is "no associations" (synced, empty), and the list
 * is tried again every minute, so installing the CRD later needs no restart.
 */
import { ListWatch } from '@kubernetes/client-node/dist/cache.js';
import type { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { KubeApi } from './api.js';
import { createKubeApi } from './api.js';
import type { AssociationIndex, StoredAssociation } from './association-index.js';
import { ASSOCIATIONS_PATH } from './association-index.js';
import type { InformerState } from './pods.js';
import { watchWithDeadline } from './watch-deadline.js';

const RESOURCE = 'podidentityassociations';
const LIST_PAGE = 500;
const ABSENT_RETRY_MS = 60_000;

interface AssociationObject extends KubernetesObject {
  spec?: { namespace?: unknown; serviceAccount?: unknown; roleArn?: unknown; targetRoleArn?: unknown; externalId?: unknown; disableSessionTags?: unknown };
  status?: { conditions?: Array<Record<string, unknown>> };
}

const text = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** What podiam keeps of a PodIdentityAssociation. Fields the schema requires are '' when missing (then checkAssociation refuses it). */
export function toStoredAssociation(o: AssociationObject): StoredAssociation {
  const spec = o.spec ?? {};
  const accepted = o.status?.conditions?.find((c) => c['type'] === 'Accepted');
  const targetRoleArn = text(spec.targetRoleArn);
  const externalId = text(spec.externalId);
  return {
    info: Object.freeze({
      name: o.metadata?.name ?? '',
      namespace: text(spec.namespace) ?? '',
      serviceAccount: text(spec.serviceAccount) ?? '',
      roleArn: text(spec.roleArn) ?? '',
      ...(targetRoleArn === undefined ? {} : { targetRoleArn }),
      ...(externalId === undefined ? {} : { externalId }),
      disableSessionTags: spec.disableSessionTags === true,
    }),
    uid: o.metadata?.uid ?? '',
    generation: o.metadata?.generation ?? 0,
    createdMs: o.metadata?.creationTimestamp === undefined ? 0 : new Date(o.metadata.creationTimestamp).getTime() || 0,
    accepted:
      accepted === undefined
        ? undefined
        : { status: accepted['status'] === 'True' ? 'True' : 'False', reason: String(accepted['reason'] ?? ''), message: String(accepted['message'] ?? ''), observedGeneration: Number(accepted['observedGeneration'] ?? 0), lastTransitionTime: String(accepted['lastTransitionTime'] ?? '') },
  };
}

/** Only what toStoredAssociation reads (and the resourceVersion ListWatch compares). */
function slim(o: KubernetesObject): KubernetesObject {
  const a = o as AssociationObject;
  const m = a.metadata ?? {};
  return { metadata: { name: m.name, uid: m.uid, resourceVersion: m.resourceVersion, generation: m.generation, creationTimestamp: m.creationTimestamp }, spec: a.spec, status: a.status } as KubernetesObject;
}

export class AssociationWatcher {
  readonly api: KubeApi;
  private listWatch: ListWatch<KubernetesObject> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private everSynced = false;
  private absent = false;
  private stopped = false;
  private currentState: InformerState = 'syncing';
  private readonly syncWaiters: Array<() => void> = [];

  constructor(
    private readonly kc: KubeConfig,
    private readonly index: AssociationIndex,
    private readonly options: { log: Logger; metrics: Metrics; watchDeadlineMs?: number; watchTimeoutSeconds?: number },
  ) {
    this.api = createKubeApi(kc);
  }

  /** Listed at least once (an absent CRD counts: there are no associations). */
  synced(): boolean {
    return this.everSynced;
  }

  whenSynced(): Promise<void> {
    if (this.everSynced) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  state(): InformerState {
    return this.currentState;
  }

  /** The CRD is not installed (the last list was a 404). */
  crdAbsent(): boolean {
    return this.absent;
  }

  start(): void {
    const { log, metrics } = this.options;
    const listFn = async () => {
      const items: KubernetesObject[] = [];
      let resourceVersion: string | undefined;
      let page: string | undefined;
      do {
        const listed = await this.api.get<{ items: KubernetesObject[]; metadata?: { resourceVersion?: string; continue?: string } }>(ASSOCIATIONS_PATH, { limit: LIST_PAGE, continue: page });
        resourceVersion ??= listed.metadata?.resourceVersion;
        for (const o of listed.items) items.push(slim(o));
        page = listed.metadata?.continue;
      } while (page);
      if (this.absent) log.info('PodIdentityAssociation CRD found: associations are read');
      this.absent = false;
      setImmediate(() => this.markSynced());
      return { metadata: { resourceVersion }, items };
    };
    const watch = watchWithDeadline(this.kc, this.options.watchTimeoutSeconds ?? 300, this.options.watchDeadlineMs ?? 55_000, { open: () => undefined, silent: () => metrics.informerWatchTimeouts.inc({ resource: RESOURCE }) }, slim);
    const lw = new ListWatch<KubernetesObject>(ASSOCIATIONS_PATH, watch, listFn as never, false);
    this.listWatch = lw;
    const upsert = (o: KubernetesObject): void => this.index.upsert(toStoredAssociation(o as AssociationObject));
    lw.on('add', upsert);
    lw.on('update', upsert);
    lw.on('delete', (o) => this.index.remove(o.metadata?.name ?? ''));
    lw.on('error', (err: unknown) => {
      if (this.stopped) return;
      const status = (err as { statusCode?: number }).statusCode;
      let delay: number;
      if (status === 404) {
        // No CRD: no associations. Not an error, but said once.
        if (!this.absent) log.info('PodIdentityAssociation CRD not installed: no associations (pods get roles from annotations); looking again every minute', { path: ASSOCIATIONS_PATH });
        this.absent = true;
        for (const s of [...this.index.all()]) this.index.remove(s.info.name);
        this.markSynced();
        delay = ABSENT_RETRY_MS;
      } else {
        this.failures += 1;
        this.currentState = this.everSynced ? 'reconnecting' : 'syncing';
        metrics.informerSynced.set({ resource: RESOURCE }, 0);
        metrics.informerRestarts.inc({ resource: RESOURCE });
        delay = Math.min(30_000, 250 * 2 ** Math.min(this.failures - 1, 7)) * (0.5 + Math.random());
        log.warn('kubernetes watch failed, retrying', { resource: RESOURCE, error: (err as Error).message ?? String(err), retryInMs: Math.round(delay) });
      }
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        if (!this.stopped) lw.start().catch(() => undefined);
      }, delay);
      this.retryTimer.unref();
    });
    lw.start().catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.listWatch?.stop();
  }

  private markSynced(): void {
    if (this.stopped) return;
    const first = !this.everSynced;
    this.everSynced = true;
    this.currentState = 'watching';
    this.failures = 0;
    this.options.metrics.informerSynced.set({ resource: RESOURCE }, 1);
    if (first) this.options.log.info('informer synced', { resource: RESOURCE, associations: this.index.size() });
    for (const w of this.syncWaiters.splice(0)) w();
  }
}
