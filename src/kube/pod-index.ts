/**
 * Pods and namespaces by what podiam asks of them: which live pod owns an IP now, and what
 * its namespace says. Fed by the informers (kube/pods.ts); no Kubernetes SDK types here.
 */
import type { NamespaceInfo, PodInfo, ServiceAccountInfo } from '../roles.js';
import { sameAnnotations } from '../roles.js';

interface Waiter {
  resolve(pod: PodInfo | undefined): void;
}

/** Pods that can make a metadata request from their own IP. */
export function isServable(pod: PodInfo): boolean {
  // Succeeded/Failed pods keep status.podIP for a while after the IP went to someone else.
  return !pod.hostNetwork && pod.phase !== 'Succeeded' && pod.phase !== 'Failed' && pod.ips.length > 0;
}

/**
 * When two live pods claim one IP: a CNI hands an IP out only after the last holder's sandbox
 * is gone, so the later claimant owns it and the other's status is lagging (kube2iam #244).
 * Not terminating first, then the newest, then Running (creation times have second precision).
 */
function better(a: PodInfo, b: PodInfo): boolean {
  const alive = Number(!a.deleting) - Number(!b.deleting);
  if (alive !== 0) return alive > 0;
  if (a.createdMs !== b.createdMs) return a.createdMs > b.createdMs;
  return a.phase === 'Running' && b.phase !== 'Running';
}

export class PodIndex {
  private readonly pods = new Map<string, PodInfo>();
  private readonly byIp = new Map<string, PodInfo[]>();
  private readonly namespaces = new Map<string, NamespaceInfo>();
  private readonly waiters = new Map<string, Set<Waiter>>();
  private readonly listeners: Array<(pod: PodInfo) => void> = [];
  private readonly namespaceListeners: Array<(ns: NamespaceInfo) => void> = [];
  private readonly serviceAccounts = new Map<string, ServiceAccountInfo>();
  private readonly goneListeners: Array<(pod: PodInfo) => void> = [];
  private readonly policyListeners: Array<(namespace: string, serviceAccount: string | undefined) => void> = [];
  /**
   * node -> namespace -> ServiceAccount -> pods of it scheduled there: the broker tells an agent
   * only of changes to its own pods' namespaces and ServiceAccounts.
   */
  private readonly onNodes = new Map<string, Map<string, Map<string, number>>>();

  /** Called for every pod deleted (or replaced by a pod of the same name with another uid). */
  onPodGone(listener: (pod: PodInfo) => void): void {
    this.goneListeners.push(listener);
  }

  /** Any pod of this node by name, hostNetwork pods included (the token path's lookup). */
  pod(namespace: string, name: string): PodInfo | undefined {
    return this.pods.get(`${namespace}/${name}`);
  }

  upsertServiceAccount(sa: ServiceAccountInfo): void {
    const key = `${sa.namespace}/${sa.name}`;
    const old = this.serviceAccounts.get(key);
    this.serviceAccounts.set(key, sa);
    // A relist re-upserts every object: only a change of what roles are decided from is one.
    if (old === undefined || !sameAnnotations(old.annotations, sa.annotations)) this.policyChanged(sa.namespace, sa.name);
  }

  deleteServiceAccount(namespace: string, name: string): void {
    if (this.serviceAccounts.delete(`${namespace}/${name}`)) this.policyChanged(namespace, name);
  }

  /**
   * Called when what a role decision reads may have changed: a namespace's annotations (the
   * serviceAccount undefined), or a ServiceAccount's (added, changed, removed). Not for relists
   * that change nothing.
   */
  onPolicyChange(listener: (namespace: string, serviceAccount: string | undefined) => void): void {
    this.policyListeners.push(listener);
  }

  /** Whether any pod of `namespace` (running as `serviceAccount`, when given) is scheduled on `node`. */
  hasPodsOn(node: string, namespace: string, serviceAccount?: string): boolean {
    const bySa = this.onNodes.get(node)?.get(namespace);
    return bySa !== undefined && (serviceAccount === undefined || bySa.has(serviceAccount));
  }

  private policyChanged(namespace: string, serviceAccount: string | undefined): void {
    for (const l of this.policyListeners) l(namespace, serviceAccount);
  }

  private countOnNode(pod: PodInfo, delta: 1 | -1): void {
    if (pod.nodeName === undefined) return;
    const sa = pod.serviceAccount ?? 'default';
    let byNs = this.onNodes.get(pod.nodeName);
    if (byNs === undefined) this.onNodes.set(pod.nodeName, (byNs = new Map()));
    let bySa = byNs.get(pod.namespace);
    if (bySa === undefined) byNs.set(pod.namespace, (bySa = new Map()));
    const n = (bySa.get(sa) ?? 0) + delta;
    if (n > 0) {
      bySa.set(sa, n);
      return;
    }
    bySa.delete(sa);
    if (bySa.size > 0) return;
    byNs.delete(pod.namespace);
    if (byNs.size === 0) this.onNodes.delete(pod.nodeName);
  }

  serviceAccountOf(pod: PodInfo): ServiceAccountInfo | undefined {
    return this.serviceAccounts.get(`${pod.namespace}/${pod.serviceAccount ?? 'default'}`);
  }

  /** Called for every pod that becomes servable or changes while servable. */
  onPodServable(listener: (pod: PodInfo) => void): void {
    this.listeners.push(listener);
  }

  upsertPod(pod: PodInfo): void {
    const key = `${pod.namespace}/${pod.name}`;
    const old = this.pods.get(key);
    if (old !== undefined) {
      this.unindex(old);
      this.countOnNode(old, -1);
    }
    if (old !== undefined && old.uid !== pod.uid) for (const l of this.goneListeners) l(old);
    this.pods.set(key, pod);
    this.countOnNode(pod, 1);
    if (!isServable(pod)) return;
    for (const ip of pod.ips) {
      const list = this.byIp.get(ip);
      if (list === undefined) this.byIp.set(ip, [pod]);
      else list.push(pod);
    }
    for (const l of this.listeners) l(pod);
    for (const ip of pod.ips) this.wake(ip);
  }

  /** Tells the servable-pod listeners again about a namespace's pods (its metadata has just arrived). */
  renotify(namespace: string): void {
    for (const pod of this.pods.values()) if (pod.namespace === namespace && isServable(pod)) for (const l of this.listeners) l(pod);
  }

  deletePod(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const old = this.pods.get(key);
    if (old === undefined) return;
    this.pods.delete(key);
    this.unindex(old);
    this.countOnNode(old, -1);
    for (const l of this.goneListeners) l(old);
  }

  upsertNamespace(ns: NamespaceInfo): void {
    const old = this.namespaces.get(ns.name);
    this.namespaces.set(ns.name, ns);
    for (const l of this.namespaceListeners) l(ns);
    if (old === undefined || !sameAnnotations(old.annotations, ns.annotations)) this.policyChanged(ns.name, undefined);
  }

  /** Called for every namespace added or changed. */
  onNamespace(listener: (ns: NamespaceInfo) => void): void {
    this.namespaceListeners.push(listener);
  }

  deleteNamespace(name: string): void {
    if (this.namespaces.delete(name)) this.policyChanged(name, undefined);
  }

  namespace(name: string): NamespaceInfo | undefined {
    return this.namespaces.get(name);
  }

  /** The pod that owns this IP now, if any. */
  lookup(ip: string): PodInfo | undefined {
    const list = this.byIp.get(ip);
    if (list === undefined) return undefined;
    let best = list[0]!;
    for (let i = 1; i < list.length; i++) if (better(list[i]!, best)) best = list[i]!;
    return best;
  }

  /**
   * The pod for this IP, waiting up to `ms` for the informer to deliver it (pod-start race:
   * an SDK may ask before the watch event arrives). Event-driven: no polling.
   */
  waitFor(ip: string, ms: number): Promise<PodInfo | undefined> {
    const found = this.lookup(ip);
    if (found !== undefined || ms <= 0) return Promise.resolve(found);
    return new Promise((resolve) => {
      let set = this.waiters.get(ip);
      if (set === undefined) this.waiters.set(ip, (set = new Set()));
      const waiter: Waiter = {
        resolve: (pod) => {
          clearTimeout(timer);
          set!.delete(waiter);
          if (set!.size === 0 && this.waiters.get(ip) === set) this.waiters.delete(ip);
          resolve(pod);
        },
      };
      const timer = setTimeout(() => waiter.resolve(undefined), ms);
      set.add(waiter);
    });
  }

  allPods(): IterableIterator<PodInfo> {
    return this.pods.values();
  }

  podCount(): number {
    return this.pods.size;
  }

  ipCount(): number {
    return this.byIp.size;
  }

  waiting(): number {
    let n = 0;
    for (const s of this.waiters.values()) n += s.size;
    return n;
  }

  /** For /debug/store: IP -> pod, no annotations beyond the role ones asked for. */
  snapshot(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const ip of this.byIp.keys()) {
      const p = this.lookup(ip)!;
      out[ip] = `${p.namespace}/${p.name}`;
    }
    return out;
  }

  private unindex(pod: PodInfo): void {
    for (const ip of pod.ips) {
      const list = this.byIp.get(ip);
      if (list === undefined) continue;
      const rest = list.filter((p) => p !== pod);
      if (rest.length === 0) this.byIp.delete(ip);
      else this.byIp.set(ip, rest);
    }
  }

  private wake(ip: string): void {
    const set = this.waiters.get(ip);
    if (set === undefined) return;
    const pod = this.lookup(ip);
    for (const w of [...set]) w.resolve(pod);
  }
}
