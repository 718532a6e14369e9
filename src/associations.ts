/**
 * PodIdentityAssociations for role resolution: the index (what roles.ts reads as data), its
 * informer and the status writer, started and stopped together. Used by the node agent; the
 * broker reuses it as it is (there, the one status writer of the cluster).
 */
import type { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import { AssociationIndex } from './kube/association-index.js';
import { AssociationStatusWriter } from './kube/association-status.js';
import { AssociationWatcher } from './kube/associations.js';
import type { InformerState } from './kube/pods.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import type { AssociationInfo, NamespaceInfo, PodInfo } from './roles.js';

export interface AssociationsOptions {
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly watchDeadlineMs?: number;
  /** The namespace as the namespace informer has it (namespace restrictions apply to associations). */
  readonly namespace: (name: string) => NamespaceInfo | undefined;
  /** The association's verdict: RoleResolver.checkAssociation. */
  readonly check: (association: AssociationInfo, namespace: NamespaceInfo | undefined) => Error | undefined;
  readonly statusDelayMs?: number;
  /** Whether this node can decide an association's status (see AssociationStatusWriter). */
  readonly decides?: (association: AssociationInfo) => boolean;
}

export class Associations {
  readonly index = new AssociationIndex();
  private readonly watcher: AssociationWatcher;
  private readonly status: AssociationStatusWriter;

  constructor(kc: KubeConfig, options: AssociationsOptions) {
    this.watcher = new AssociationWatcher(kc, this.index, { log: options.log, metrics: options.metrics, watchDeadlineMs: options.watchDeadlineMs });
    this.status = new AssociationStatusWriter({
      index: this.index,
      namespace: options.namespace,
      check: options.check,
      decides: options.decides,
      patch: (path, body) => this.watcher.api.mergePatch(path, body),
      warn: (message, fields) => options.log.warn(message, fields),
      maxDelayMs: options.statusDelayMs,
    });
    this.index.onChange((a) => this.status.reconcile(a.name));
  }

  /**
   * Called when the association that decides a ServiceAccount's role changed: another one wins,
   * its spec changed, or none is left. Not for the status podiam itself writes.
   */
  onRoleChange(listener: (namespace: string, serviceAccount: string) => void): void {
    const decided = new Map<string, string>();
    this.index.onChange((a) => {
      const key = `${a.namespace}/${a.serviceAccount}`;
      const winner = this.index.of(a.namespace, a.serviceAccount);
      const now = winner === undefined ? '' : JSON.stringify(winner);
      if ((decided.get(key) ?? '') === now) return;
      if (now === '') decided.delete(key);
      else decided.set(key, now);
      listener(a.namespace, a.serviceAccount);
    });
  }

  /** The association of the pod's ServiceAccount, if any. */
  of(pod: PodInfo): AssociationInfo | undefined {
    return this.index.of(pod.namespace, pod.serviceAccount ?? 'default');
  }

  start(): void {
    this.watcher.start();
  }

  synced(): boolean {
    return this.watcher.synced();
  }

  whenSynced(): Promise<void> {
    return this.watcher.whenSynced();
  }

  state(): InformerState {
    return this.watcher.state();
  }

  /** Every informer has listed: verdicts can be written now (and again when a namespace changes). */
  writeStatus(): void {
    this.status.enable();
  }

  namespaceChanged(): void {
    this.status.reconcileAll();
  }

  async stop(): Promise<void> {
    this.status.stop();
    await this.watcher.stop();
  }
}
