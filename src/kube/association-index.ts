/**
 * PodIdentityAssociations by what role resolution asks of them: the association of a pod's
 * namespace and ServiceAccount. Fed by the association informer (kube/associations.ts); no
 * Kubernetes SDK types here. EKS refuses a second association for the same ServiceAccount; a
 * custom resource cannot, so the oldest wins (creation time, then name) and the others are
 * reported as conflicting in their status.
 */
import type { AssociationInfo } from '../roles.js';

/** The custom resource's collection (podiam.io/v1alpha1, cluster-scoped). */
export const ASSOCIATIONS_PATH = '/apis/podiam.io/v1alpha1/podidentityassociations';

/** An association as stored: what role resolution reads, and what its status writer compares. */
export interface StoredAssociation {
  readonly info: AssociationInfo;
  readonly uid: string;
  readonly generation: number;
  readonly createdMs: number;
  /** The Accepted condition as the API server holds it now (undefined: none yet). */
  readonly accepted: AcceptedCondition | undefined;
}

export interface AcceptedCondition {
  readonly status: 'True' | 'False';
  readonly reason: string;
  readonly message: string;
  readonly observedGeneration: number;
  readonly lastTransitionTime?: string;
}

const keyOf = (namespace: string, serviceAccount: string): string => `${namespace}/${serviceAccount}`;

function older(a: StoredAssociation, b: StoredAssociation): boolean {
  return a.createdMs !== b.createdMs ? a.createdMs < b.createdMs : a.info.name < b.info.name;
}

export class AssociationIndex {
  private readonly byName = new Map<string, StoredAssociation>();
  /** namespace/serviceAccount -> every association naming it. */
  private readonly byServiceAccount = new Map<string, Set<StoredAssociation>>();
  private readonly listeners: Array<(association: AssociationInfo) => void> = [];

  /** Called with every association added, changed or removed (the old and the new, on a change of target). */
  onChange(listener: (association: AssociationInfo) => void): void {
    this.listeners.push(listener);
  }

  upsert(stored: StoredAssociation): void {
    const old = this.byName.get(stored.info.name);
    if (old !== undefined) this.unindex(old);
    this.byName.set(stored.info.name, stored);
    const key = keyOf(stored.info.namespace, stored.info.serviceAccount);
    let set = this.byServiceAccount.get(key);
    if (set === undefined) this.byServiceAccount.set(key, (set = new Set()));
    set.add(stored);
    if (old !== undefined && old.info !== stored.info) this.notify(old.info);
    this.notify(stored.info);
  }

  remove(name: string): void {
    const old = this.byName.get(name);
    if (old === undefined) return;
    this.unindex(old);
    this.byName.delete(name);
    this.notify(old.info);
  }

  /** Everything known is replaced by a fresh list (a relist). */
  replaceAll(list: readonly StoredAssociation[]): void {
    const names = new Set(list.map((s) => s.info.name));
    for (const name of [...this.byName.keys()]) if (!names.has(name)) this.remove(name);
    for (const s of list) if (this.byName.get(s.info.name) !== s) this.upsert(s);
  }

  /** The association granting a role to this namespace's ServiceAccount, if any. */
  of(namespace: string, serviceAccount: string): AssociationInfo | undefined {
    return this.winner(keyOf(namespace, serviceAccount))?.info;
  }

  get(name: string): StoredAssociation | undefined {
    return this.byName.get(name);
  }

  all(): IterableIterator<StoredAssociation> {
    return this.byName.values();
  }

  /** The association that wins over this one for the same ServiceAccount, if it is not the winner itself. */
  supersededBy(stored: StoredAssociation): StoredAssociation | undefined {
    const winner = this.winner(keyOf(stored.info.namespace, stored.info.serviceAccount));
    return winner === undefined || winner.info.name === stored.info.name ? undefined : winner;
  }

  size(): number {
    return this.byName.size;
  }

  private winner(key: string): StoredAssociation | undefined {
    let best: StoredAssociation | undefined;
    for (const s of this.byServiceAccount.get(key) ?? []) if (best === undefined || older(s, best)) best = s;
    return best;
  }

  private unindex(stored: StoredAssociation): void {
    const key = keyOf(stored.info.namespace, stored.info.serviceAccount);
    const set = this.byServiceAccount.get(key);
    set?.delete(stored);
    if (set?.size === 0) this.byServiceAccount.delete(key);
  }

  private notify(info: AssociationInfo): void {
    for (const l of this.listeners) l(info);
  }
}
