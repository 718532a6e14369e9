/**
 * Pure: a pod and its namespace -> the role it may assume, or a typed denial. No I/O.
 */
import { createHash } from 'node:crypto';
import { checkAnnotationLimits } from './annotation-limits.js';
import { isRoleArn } from './config.js';
import { BadAnnotation, NoRoleForPod, RoleNotAllowed } from './errors.js';
import { compileRoleRegexp } from './role-patterns.js';

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
  /** spec.serviceAccountName ('default' when unset, as the admission plugin sets it). */
  readonly serviceAccount?: string;
  /** spec.nodeName: the broker serves an agent only its own node's pods. */
  readonly nodeName?: string;
}

/** A ServiceAccount: its role annotation applies to its pods that have none of their own. */
export interface ServiceAccountInfo {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
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
  readonly namespaceRestrictionFormat: 'glob' | 'regexp' | 'regexp-anchored';
  /** --session-tags: AssumeRole carries the pod's identity as session tags (EKS Pod Identity's ABAC). */
  readonly sessionTags?: boolean;
  readonly clusterName?: string;
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
  /** STS session tags [key, value] (with --session-tags); part of the cache key. */
  readonly tags?: ReadonlyArray<readonly [string, string]>;
}

export function podRef(pod: { namespace: string; name: string }): string {
  return `${pod.namespace}/${pod.name}`;
}

export function resolveRole(
  pod: PodInfo,
  namespace: NamespaceInfo | undefined,
  policy: RolePolicy,
  allowed: (namespace: NamespaceInfo | undefined, nsName: string, policy: RolePolicy) => RoleMatcher[] = allowedRoles,
  serviceAccount?: ServiceAccountInfo,
): RoleRequest {
  // Lengths first, before any parsing or pattern matching (annotation-limits.ts).
  checkAnnotationLimits(pod, namespace, policy, serviceAccount);
  const ref = podRef(pod);
  // The pod's own annotation wins; else its ServiceAccount's (as IRSA and Pod Identity grant roles).
  const own = pod.annotations[policy.roleKey]?.trim();
  const fromServiceAccount = (own === undefined || own === '') && serviceAccount?.annotations[policy.roleKey]?.trim() ? serviceAccount : undefined;
  const annotated = fromServiceAccount === undefined ? own : fromServiceAccount.annotations[policy.roleKey]!.trim();
  const fromDefault = annotated === undefined || annotated === '';
  const wanted = fromDefault ? policy.defaultRole : annotated;
  if (wanted === undefined) throw new NoRoleForPod(ref, policy.roleKey);

  const roleArn = toRoleArn(wanted, policy.baseRoleArn);
  if (roleArn === undefined) {
    if (fromDefault) throw new BadAnnotation('flag', '--default-role', `${JSON.stringify(wanted)} is a role name but no base role ARN is known (set --base-role-arn)`);
    if (fromServiceAccount) throw new BadAnnotation(`serviceaccount ${podRef(fromServiceAccount)}`, policy.roleKey, `${JSON.stringify(wanted)} is neither a role ARN (arn:aws:iam::<account>:role/<name>) nor a role name with --base-role-arn set`);
    throw new BadAnnotation(`pod ${ref}`, policy.roleKey, `${JSON.stringify(wanted)} is neither a role ARN (arn:aws:iam::<account>:role/<name>) nor a role name with --base-role-arn set`);
  }

  // kube2iam: the default role is always allowed, whatever the namespace says (compared by ARN,
  // so a pod that names it explicitly is allowed too).
  const isDefaultRole = fromDefault || (policy.defaultRole !== undefined && roleArn === toRoleArn(policy.defaultRole, policy.baseRoleArn));
  if (policy.namespaceRestrictions && !isDefaultRole) {
    if (!allowed(namespace, pod.namespace, policy).some((p) => p.test(roleArn))) {
      throw new RoleNotAllowed(ref, roleArn, pod.namespace, policy.namespaceKey);
    }
  }

  return {
    roleArn,
    roleName: roleArn.slice(roleArn.lastIndexOf('/') + 1),
    externalId: externalIdOf(pod, policy.externalIdKey),
    sessionName: sessionNameOf(pod, policy.sessionNameKey),
    pod: ref,
    ...(policy.sessionTags === true ? { tags: sessionTagsOf(pod, policy.clusterName) } : {}),
  };
}

/**
 * The session tags EKS Pod Identity sets, so the same ABAC policies work
 * (https://docs.aws.amazon.com/eks/latest/userguide/pod-id-abac.html).
 */
export function sessionTagsOf(pod: PodInfo, clusterName: string | undefined): Array<[string, string]> {
  const tags: Array<[string, string]> = [];
  if (clusterName !== undefined) tags.push(['eks-cluster-name', clusterName]);
  tags.push(['kubernetes-namespace', pod.namespace], ['kubernetes-service-account', pod.serviceAccount ?? 'default'], ['kubernetes-pod-name', pod.name], ['kubernetes-pod-uid', pod.uid]);
  return tags;
}

/** A role name is appended to the base ARN; a full ARN is taken as it is (validated). */
export function toRoleArn(value: string, baseRoleArn: string | undefined): string | undefined {
  if (value.startsWith('arn:')) return isRoleArn(value) && !value.endsWith('/') ? value : undefined;
  if (baseRoleArn === undefined) return undefined;
  const name = value.replace(/^\/+/, '');
  if (!/^[\w+=,.@/-]+$/.test(name) || name.endsWith('/')) return undefined;
  return baseRoleArn + name;
}

/**
 * resolveRole with memory, for the request path and the informer callbacks: one result per pod
 * object and one compiled allowed-roles list per namespace object (the informers replace these
 * objects on every change, never mutate them). Denials are returned, not thrown.
 */
export class RoleResolver {
  private readonly byPod = new WeakMap<PodInfo, { ns: NamespaceInfo | undefined; sa?: ServiceAccountInfo | undefined; result: RoleRequest | Error }>();
  private readonly byNamespace = new WeakMap<NamespaceInfo, RoleMatcher[] | Error>();

  constructor(readonly policy: RolePolicy) {}

  resolve(pod: PodInfo, namespace: NamespaceInfo | undefined, serviceAccount?: ServiceAccountInfo): RoleRequest | Error {
    const memo = this.byPod.get(pod);
    if (memo !== undefined && memo.ns === namespace && memo.sa === serviceAccount) return memo.result;
    let result: RoleRequest | Error;
    try {
      result = resolveRole(pod, namespace, this.policy, (ns, nsName, policy) => this.allowed(ns, nsName, policy), serviceAccount);
    } catch (err) {
      result = err as Error;
    }
    this.byPod.set(pod, { ns: namespace, sa: serviceAccount, result });
    return result;
  }

  private allowed(ns: NamespaceInfo | undefined, nsName: string, policy: RolePolicy): RoleMatcher[] {
    if (ns === undefined) return [];
    let compiled = this.byNamespace.get(ns);
    if (compiled === undefined) {
      try {
        compiled = allowedRoles(ns, nsName, policy);
      } catch (err) {
        compiled = err as Error;
      }
      this.byNamespace.set(ns, compiled);
    }
    if (compiled instanceof Error) throw compiled;
    return compiled;
  }
}

/** One allowed-roles entry, ready to test role ARNs. */
export interface RoleMatcher {
  test(roleArn: string): boolean;
}

/** The namespace's allowed-roles, parsed and compiled; a BadAnnotation when it cannot be used. */
export function allowedRoles(namespace: NamespaceInfo | undefined, nsName: string, policy: RolePolicy): RoleMatcher[] {
  const raw = namespace?.annotations[policy.namespaceKey];
  if (raw === undefined || raw.trim() === '') return [];
  const bad = (why: string) => new BadAnnotation(`namespace ${nsName}`, policy.namespaceKey, why);
  let list: unknown;
  try {
    list = JSON.parse(raw);
  } catch (err) {
    throw bad(`not valid JSON (${(err as Error).message}); expected e.g. ["app-*"]`);
  }
  if (!Array.isArray(list) || !list.every((x) => typeof x === 'string')) throw bad('must be a JSON array of strings, e.g. ["app-*"]');
  return list.map((pattern: string) => {
    if (pattern.length > MAX_PATTERN) throw bad(`entry longer than ${MAX_PATTERN} characters`);
    if (policy.namespaceRestrictionFormat === 'glob') return globToRegExp(pattern, policy.baseRoleArn);
    // RE2 (linear time, Go's syntax). An entry that does not compile never matches and the others
    // still apply, as in kube2iam; AllowedRolesAudit reports it (log, metric, Event).
    return compileRoleRegexp(pattern, policy.baseRoleArn, policy.namespaceRestrictionFormat === 'regexp-anchored');
  });
}

const MAX_PATTERN = 512;

/**
 * kube2iam's glob (ryanuber/go-glob): `*` matches any run of characters, `/` included.
 * A pattern that is not an ARN is taken relative to the base role ARN, as kube2iam does.
 * Matched without backtracking regexps: `*a*a*a*b` stays linear-ish, whatever the ARN.
 */
export function globToRegExp(pattern: string, baseRoleArn: string | undefined): RoleMatcher {
  const full = pattern.startsWith('arn:') || baseRoleArn === undefined ? pattern : baseRoleArn + pattern.replace(/^\/+/, '');
  const parts = full.split('*');
  return {
    test(text: string): boolean {
      if (parts.length === 1) return text === full;
      const first = parts[0]!;
      const last = parts[parts.length - 1]!;
      if (text.length < first.length + last.length || !text.startsWith(first) || !text.endsWith(last)) return false;
      // Greedy left-to-right: each middle part at its earliest position is always a valid choice.
      let at = first.length;
      const end = text.length - last.length;
      for (let i = 1; i < parts.length - 1; i++) {
        const found = text.indexOf(parts[i]!, at);
        if (found === -1 || found + parts[i]!.length > end) return false;
        at = found + parts[i]!.length;
      }
      return true;
    },
  };
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
 * The annotation is always prefixed with the pod's namespace (unless it already starts with
 * `<namespace>.`): namespace names have no dots, so no pod can pass for another namespace's.
 */
export function sessionNameOf(pod: Pick<PodInfo, 'namespace' | 'name' | 'annotations'>, key: string): string {
  const annotated = pod.annotations[key];
  const own = `${pod.namespace}.`;
  const source = annotated === undefined || annotated.trim() === '' ? own + pod.name : annotated.startsWith(own) ? annotated : own + annotated;
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
