/**
 * Kubernetes objects as podiam keeps them: only the fields it reads, and of the annotations
 * only the keys it reads (the role, external id and session name keys on pods and
 * ServiceAccounts, the allowed-roles key on namespaces). Values are kept whole: their size
 * limits are checked where they are read (annotation-limits.ts), so an over-long value is a 403
 * naming it, not a value silently cut.
 */
import type { NamespaceInfo, PodInfo, ServiceAccountInfo } from '../roles.js';

/** The annotation keys podiam reads, per kind (from the --iam-role-key family of flags). */
export interface AnnotationKeys {
  readonly pod: readonly string[];
  readonly namespace: readonly string[];
  readonly serviceAccount: readonly string[];
}

interface RawMeta {
  name?: unknown;
  namespace?: unknown;
  uid?: unknown;
  creationTimestamp?: unknown;
  deletionTimestamp?: unknown;
  annotations?: unknown;
}
interface RawObject {
  metadata?: RawMeta;
  spec?: { hostNetwork?: unknown; serviceAccountName?: unknown; nodeName?: unknown };
  status?: { phase?: unknown; podIP?: unknown; podIPs?: unknown; conditions?: unknown };
}

const str = (v: unknown, fallback = ''): string => (typeof v === 'string' ? v : fallback);

function pick(annotations: unknown, keys: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  if (annotations === null || typeof annotations !== 'object') return out;
  const all = annotations as Record<string, unknown>;
  for (const k of keys) {
    const v = all[k];
    if (typeof v === 'string') out[k] = v;
  }
  return out;
}

/** Every ready pod shares this (most pods are ready: no object a pod on a broker that holds the cluster's). */
const READY = Object.freeze({ ready: true, sinceMs: 0 });

/** The pod's Ready condition: True or not, and since when (undefined: the pod has none yet). */
function readiness(conditions: unknown): PodInfo['readiness'] {
  if (!Array.isArray(conditions)) return undefined;
  for (const c of conditions as Array<{ type?: unknown; status?: unknown; lastTransitionTime?: unknown }>) {
    if (c?.type === 'Ready') return c.status === 'True' ? READY : { ready: false, sinceMs: toMs(c.lastTransitionTime) };
  }
  return undefined;
}

function toMs(t: unknown): number {
  if (typeof t !== 'string') return 0;
  const ms = new Date(t).getTime();
  return Number.isNaN(ms) ? 0 : ms;
}

export function toPodInfo(raw: unknown, keys: readonly string[]): PodInfo {
  const o = (raw ?? {}) as RawObject;
  const m = o.metadata ?? {};
  const ips: string[] = [];
  if (Array.isArray(o.status?.podIPs)) for (const p of o.status.podIPs as Array<{ ip?: unknown }>) if (typeof p?.ip === 'string' && p.ip !== '') ips.push(p.ip);
  const primary = o.status?.podIP;
  if (typeof primary === 'string' && primary !== '' && !ips.includes(primary)) ips.unshift(primary);
  return {
    namespace: str(m.namespace, 'default'),
    name: str(m.name),
    uid: str(m.uid),
    ips,
    phase: str(o.status?.phase, 'Unknown'),
    readiness: readiness(o.status?.conditions),
    hostNetwork: o.spec?.hostNetwork === true,
    createdMs: toMs(m.creationTimestamp),
    deleting: m.deletionTimestamp !== undefined && m.deletionTimestamp !== null,
    annotations: pick(m.annotations, keys),
    serviceAccount: str(o.spec?.serviceAccountName) || 'default',
    nodeName: str(o.spec?.nodeName) || undefined,
  };
}

export function toNamespaceInfo(raw: unknown, keys: readonly string[]): NamespaceInfo {
  const m = ((raw ?? {}) as RawObject).metadata ?? {};
  return { name: str(m.name), annotations: pick(m.annotations, keys) };
}

export function toServiceAccountInfo(raw: unknown, keys: readonly string[]): ServiceAccountInfo {
  const m = ((raw ?? {}) as RawObject).metadata ?? {};
  return { namespace: str(m.namespace, 'default'), name: str(m.name), uid: str(m.uid), annotations: pick(m.annotations, keys) };
}
