/**
 * Pure: a pod and its namespace -> the role it may assume, or a typed denial. No I/O.
 */
import { createHash } from 'node:crypto';
import { isRoleArn } from './config.js';
import { BadAnnotation, NoRoleForPod, RoleNotAllowed } from './errors.js';

/** What podiam knows of a pod: enough to resolve its role, nothing of the Kubernetes SDK. */
export interface PodInfo {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly ips: readonly string[];
  readonly phase: string;
  readonly hostNetwork: boolean;
  readonly createdMs: number;
  readonly deleting: boolean;
  readonly annotations: Readonly<Record<string, string>>;
}

export interface NamespaceInfo {
  readonly name: string;
  readonly annotations: Readonly<Record<string, string>>;
}

export interface RolePolicy {
  readonly baseRoleArn: string | undefined;
  readonly defaultRole: string | undefined;
  readonly roleKey: string;
  readonly externalIdKey: string;
  readonly sessionNameKey: string;
  readonly namespaceKey: string;
  readonly namespaceRestrictions: boolean;
  readonly namespaceRestrictionFormat: 'glob' | 'regexp';
}

/** Everything STS needs; also the credential cache key. */
export interface RoleRequest {
  readonly roleArn: string;
  /** The last path segment of the ARN: what security-credentials/ lists. */
  readonly roleName: string;
  readonly externalId: string | undefined;
  readonly sessionName: string;
  /** The pod the request was resolved for (namespace/name): for audit logs, not part of the cache key. */
  readonly pod: string;
}

export function podRef(pod: { namespace: string; name: string }): string {
  return `${pod.namespace}/${pod.name}`;
}

export function resolveRole(pod: PodInfo, namespace: NamespaceInfo | undefined, policy: RolePolicy): RoleRequest {
  const ref = podRef(pod);
  const annotated = pod.annotations[policy.roleKey]?.trim();
  const fromDefault = annotated === undefined || annotated === '';
  const wanted = fromDefault ? policy.defaultRole : annotated;
  if (wanted === undefined) throw new NoRoleForPod(ref, policy.roleKey);

  const roleArn = toRoleArn(wanted, policy.baseRoleArn);
  if (roleArn === undefined) {
    if (fromDefault) throw new BadAnnotation('flag', '--default-role', `${JSON.stringify(wanted)} is a role name but no base role ARN is known (set --base-role-arn)`);
    throw new BadAnnotation(`pod ${ref}`, policy.roleKey, `${JSON.stringify(wanted)} is neither a role ARN (arn:aws:iam::<account>:role/<name>) nor a role name with --base-role-arn set`);
  }

  // kube2iam: the default role is always allowed, whatever the namespace says (compared by ARN,
  // so a pod that names it explicitly is allowed too).
  const isDefaultRole = fromDefault || (policy.defaultRole !== undefined && roleArn === toRoleArn(policy.defaultRole, policy.baseRoleArn));
  if (policy.namespaceRestrictions && !isDefaultRole) {
    const allowed = allowedRoles(namespace, pod.namespace, policy);
    if (!allowed.some((p) => p.test(roleArn))) {
      throw new RoleNotAllowed(ref, roleArn, pod.namespace, policy.namespaceKey);
    }
  }

  return {
    roleArn,
    roleName: roleArn.slice(roleArn.lastIndexOf('/') + 1),
    externalId: externalIdOf(pod, policy.externalIdKey),
    sessionName: sessionNameOf(pod, policy.sessionNameKey),
    pod: ref,
  };
}

/** A role name is appended to the base ARN; a full ARN is taken as it is (validated). */
export function toRoleArn(value: string, baseRoleArn: string | undefined): string | undefined {
  if (value.startsWith('arn:')) return isRoleArn(value) && !value.endsWith('/') ? value : undefined;
  if (baseRoleArn === undefined) return undefined;
  const name = value.replace(/^\/+/, '');
  if (!/^[\w+=,.@/-]+$/.test(name) || name.endsWith('/')) return undefined;
  return baseRoleArn + name;
}

function allowedRoles(namespace: NamespaceInfo | undefined, nsName: string, policy: RolePolicy): RegExp[] {
  const raw = namespace?.annotations[policy.namespaceKey];
  if (raw === undefined || raw.trim() === '') return [];
  let list: unknown;
  try {
    list = JSON.parse(raw);
  } catch (err) {
    throw new BadAnnotation(`namespace ${nsName}`, policy.namespaceKey, `not valid JSON (${(err as Error).message}); expected e.g. ["app-*"]`);
  }
  if (!Array.isArray(list) || !list.every((x) => typeof x === 'string')) {
    throw new BadAnnotation(`namespace ${nsName}`, policy.namespaceKey, 'must be a JSON array of strings, e.g. ["app-*"]');
  }
  return list.map((pattern: string) => {
    if (policy.namespaceRestrictionFormat === 'glob') return globToRegExp(pattern, policy.baseRoleArn);
    // As kube2iam: an entry that is not an ARN is relative to the base role ARN.
    const full = pattern.startsWith('arn:') || policy.baseRoleArn === undefined ? pattern : `${escapeRegExp(policy.baseRoleArn)}(?:${pattern.replace(/^\/+/, '')})`;
    try {
      return new RegExp(`^(?:${full})$`);
    } catch (err) {
      throw new BadAnnotation(`namespace ${nsName}`, policy.namespaceKey, `bad regexp ${JSON.stringify(pattern)}: ${(err as Error).message}`);
    }
  });
}

/**
 * kube2iam's glob (ryanuber/go-glob): `*` matches any run of characters, `/` included.
 * A pattern that is not an ARN is taken relative to the base role ARN, as kube2iam does.
 */
export function globToRegExp(pattern: string, baseRoleArn: string | undefined): RegExp {
  const full = pattern.startsWith('arn:') || baseRoleArn === undefined ? pattern : baseRoleArn + pattern.replace(/^\/+/, '');
  return new RegExp(`^${full.split('*').map(escapeRegExp).join('.*')}$`);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function externalIdOf(pod: PodInfo, key: string): string | undefined {
  const v = pod.annotations[key];
  if (v === undefined || v === '') return undefined;
  // STS: 2-1224 characters of [\w+=,.@:/-].
  if (!/^[\w+=,.@:/-]{2,1224}$/.test(v)) {
    throw new BadAnnotation(`pod ${podRef(pod)}`, key, 'must be 2-1224 characters of letters, digits and +=,.@:/-');
  }
  return v;
}

/**
 * STS RoleSessionName: 2-64 characters of [\w+=,.@-]. The default names the pod, so CloudTrail
 * shows which pod made a call (kube2iam's fnv(podIP)-role name does not survive IP reuse).
 */
export function sessionNameOf(pod: Pick<PodInfo, 'namespace' | 'name' | 'annotations'>, key: string): string {
  const annotated = pod.annotations[key];
  const source = annotated !== undefined && annotated.trim() !== '' ? annotated : `${pod.namespace}.${pod.name}`;
  return sanitizeSessionName(source);
}

export function sanitizeSessionName(source: string): string {
  let name = source.replace(/[^\w+=,.@-]/g, '-');
  if (name.length > 64) {
    // Keep it unique after truncation: a short hash of the whole name stands for the cut part.
    const hash = createHash('sha256').update(source).digest('hex').slice(0, 8);
    name = `${name.slice(0, 55)}-${hash}`;
  }
  if (name.length < 2) name = `${name}--`.slice(0, 2);
  return name;
}
