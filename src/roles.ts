/**
 * Pure: a pod and its namespace -> the role it may assume, or a typed denial. No I/O.
 */
import { createHash } from 'node:crypto';
import { MAX_ROLE_ARN, checkAnnotationLimits } from './annotation-limits.js';
import { isRoleArn } from './config.js';
import type { RoleSourceKind } from './role-policy-flags.js';
import { BadAnnotation, InvalidAssociation, NoRoleForPod, RoleNotAllowed } from './errors.js';
import { compileRoleRegexp } from './role-patterns.js';

/** What podiam knows of a pod: enough to resolve its role, nothing of the Kubernetes SDK. */
export interface PodInfo {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly ips: readonly string[];
  readonly phase: string;
  /**
   * The Ready condition (status.conditions), and its lastTransitionTime when not ready (0: none
   * given); undefined when the pod has none. The broker's replicas (--peers) leave out one not ready for a while: a replica on a
   * lost node is marked not ready by the node controller within about 40 s, and stays Running
   * for minutes.
   */
  readonly readiness?: { readonly ready: boolean; readonly sinceMs: number };
  readonly hostNetwork: boolean;
  readonly createdMs: number;
  readonly deleting: boolean;
  readonly annotations: Readonly<Record<string, string>>;
  /** spec.serviceAccountName ('default' when unset, as the admission plugin sets it). */
  readonly serviceAccount?: string;
  /** spec.nodeName: the broker serves an agent only its own node's pods. */
  readonly nodeName?: string;
}

/** The same keys with the same values (annotations as podiam keeps them: only the keys it reads). */
export function sameAnnotations(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (a[k] !== b[k]) return false;
  return true;
}

/** A ServiceAccount: its role annotation applies to its pods that have none of their own. */
export interface ServiceAccountInfo {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly annotations: Readonly<Record<string, string>>;
}

/**
 * A PodIdentityAssociation (podiam.io/v1alpha1, cluster-scoped: created by the platform team, as
 * EKS's associations are made through the EKS API): this namespace's ServiceAccount gets this role.
 * Validated by the CRD's schema; resolveRole checks again (an older CRD may have let a bad one in).
 */
export interface AssociationInfo {
  /** metadata.name of the custom resource (for messages and its status). */
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly roleArn: string;
  /** Role chaining: roleArn's credentials assume this role (EKS's cross-account associations). */
  readonly targetRoleArn?: string;
  readonly externalId?: string;
  readonly disableSessionTags: boolean;
}

/** IRSA's ServiceAccount annotation: read as the ServiceAccount's role after podiam's own key. */
export const IRSA_ROLE_KEY = 'eks.amazonaws.com/role-arn';

/** The annotation keys role resolution reads, per kind: the informers keep these and drop the rest. */
export function annotationKeysOf(policy: Pick<RolePolicy, 'roleKey' | 'externalIdKey' | 'sessionNameKey' | 'namespaceKey'>): { pod: string[]; namespace: string[]; serviceAccount: string[] } {
  return { pod: [policy.roleKey, policy.externalIdKey, policy.sessionNameKey], namespace: [policy.namespaceKey], serviceAccount: [policy.roleKey, IRSA_ROLE_KEY] };
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
  /** --cluster-arn: the eks-cluster-arn session tag. */
  readonly clusterArn?: string;
  /** --role-sources: undefined is all of them. */
  readonly roleSources?: ReadonlySet<RoleSourceKind>;
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
  /**
   * Role chaining: the first hop. Its credentials (cached on their own) assume roleArn; set for an
   * association with a targetRoleArn. Part of the cache key.
   */
  readonly sourceRole?: RoleRequest;
  /** The association that granted the role (its metadata.name), for the audit line. */
  readonly association?: string;
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
  association?: AssociationInfo,
): RoleRequest {
  // Precedence: association > pod annotation > ServiceAccount annotation (podiam's key, then
  // IRSA's) > default role; --role-sources leaves some out (associations only: the platform team's).
  const sources = policy.roleSources;
  const uses = (kind: RoleSourceKind): boolean => sources === undefined || sources.has(kind);
  const ref = podRef(pod);
  if (association !== undefined && uses('associations')) return fromAssociation(pod, namespace, policy, association, allowed);
  // Lengths first, before any parsing or pattern matching (annotation-limits.ts).
  checkAnnotationLimits(pod, namespace, policy, serviceAccount);
  // The pod's own annotation wins; else its ServiceAccount's (as IRSA and Pod Identity grant roles).
  const own = uses('pod-annotation') ? pod.annotations[policy.roleKey]?.trim() : undefined;
  const saKey = uses('serviceaccount-annotation') ? serviceAccountRoleKey(serviceAccount, policy.roleKey) : undefined;
  const fromServiceAccount = (own === undefined || own === '') && saKey !== undefined ? serviceAccount : undefined;
  const annotated = fromServiceAccount === undefined ? own : fromServiceAccount.annotations[saKey!]!.trim();
  const fromDefault = annotated === undefined || annotated === '';
  const wanted = fromDefault ? (uses('default-role') ? policy.defaultRole : undefined) : annotated;
  if (wanted === undefined) throw sources === undefined ? new NoRoleForPod(ref, policy.roleKey) : new NoRoleForPod(ref, policy.roleKey, [...sources]);

  const roleArn = toRoleArn(wanted, policy.baseRoleArn);
  if (roleArn === undefined) {
    if (fromDefault) throw new BadAnnotation('flag', '--default-role', `${JSON.stringify(wanted)} is a role name but no base role ARN is known (set --base-role-arn)`);
    if (fromServiceAccount) throw new BadAnnotation(`serviceaccount ${podRef(fromServiceAccount)}`, saKey!, `${JSON.stringify(wanted)} is neither a role ARN (arn:aws:iam::<account>:role/<name>) nor a role name with --base-role-arn set`);
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
    ...(policy.sessionTags === true ? { tags: sessionTagsOf(pod, policy.clusterName, policy.clusterArn) } : {}),
  };
}

/** The ServiceAccount's role annotation in use: podiam's key, else IRSA's (a cluster moving from IRSA keeps its annotations). */
function serviceAccountRoleKey(serviceAccount: ServiceAccountInfo | undefined, roleKey: string): string | undefined {
  if (serviceAccount === undefined) return undefined;
  if (serviceAccount.annotations[roleKey]?.trim()) return roleKey;
  if (serviceAccount.annotations[IRSA_ROLE_KEY]?.trim()) return IRSA_ROLE_KEY;
  return undefined;
}

/**
 * The role an association grants, as EKS Pod Identity does: session tags unless the association
 * disables them (EKS sets them by default), and with a targetRoleArn, roleArn first, then the
 * target with roleArn's credentials. Namespace restrictions apply to the role the pod ends with.
 */
function fromAssociation(
  pod: PodInfo,
  namespace: NamespaceInfo | undefined,
  policy: RolePolicy,
  association: AssociationInfo,
  allowed: (namespace: NamespaceInfo | undefined, nsName: string, policy: RolePolicy) => RoleMatcher[],
): RoleRequest {
  const ref = podRef(pod);
  checkAssociation(association, namespace, policy, allowed, `${ref} (podidentityassociation ${association.name})`);
  const tags = association.disableSessionTags ? undefined : sessionTagsOf(pod, policy.clusterName, policy.clusterArn);
  const sessionName = sessionNameOf(pod, policy.sessionNameKey);
  const hop = (roleArn: string, externalId: string | undefined): RoleRequest => ({
    roleArn,
    roleName: roleArn.slice(roleArn.lastIndexOf('/') + 1),
    externalId,
    sessionName,
    pod: ref,
    ...(tags === undefined ? {} : { tags }),
    association: association.name,
  });
  if (association.targetRoleArn === undefined) return hop(association.roleArn, association.externalId);
  // The external id is the target's (EKS puts its own on the second AssumeRole).
  return { ...hop(association.targetRoleArn, association.externalId), sourceRole: hop(association.roleArn, undefined) };
}

/**
 * Whether an association can grant its role at all, whatever the pod: its ARNs and external id
 * (InvalidAssociation) and the namespace's restrictions (RoleNotAllowed). Also its status's verdict.
 */
export function checkAssociation(
  association: AssociationInfo,
  namespace: NamespaceInfo | undefined,
  policy: RolePolicy,
  allowed: (namespace: NamespaceInfo | undefined, nsName: string, policy: RolePolicy) => RoleMatcher[] = allowedRoles,
  subject = `${association.namespace}/* (serviceaccount ${association.serviceAccount}, podidentityassociation ${association.name})`,
): void {
  for (const [field, arn] of [['spec.roleArn', association.roleArn], ['spec.targetRoleArn', association.targetRoleArn]] as const) {
    if (arn !== undefined && !(arn.length <= MAX_ROLE_ARN && isRoleArn(arn) && !arn.endsWith('/'))) throw new InvalidAssociation(association.name, `${field} ${JSON.stringify(arn.slice(0, 120))} is not a role ARN (arn:aws:iam::<account>:role/<name>)`);
  }
  if (association.externalId !== undefined && !/^[\w+=,.@:/-]{2,1224}$/.test(association.externalId)) throw new InvalidAssociation(association.name, 'spec.externalId must be 2-1224 characters of letters, digits and +=,.@:/-');
  const served = association.targetRoleArn ?? association.roleArn;
  if (policy.namespaceRestrictions && !allowed(namespace, association.namespace, policy).some((p) => p.test(served))) {
    throw new RoleNotAllowed(subject, served, association.namespace, policy.namespaceKey);
  }
}

/**
 * The session tags EKS Pod Identity sets, so the same ABAC policies work
 * (https://docs.aws.amazon.com/eks/latest/userguide/pod-id-abac.html).
 */
export function sessionTagsOf(pod: PodInfo, clusterName: string | undefined, clusterArn?: string): Array<[string, string]> {
  const tags: Array<[string, string]> = [];
  if (clusterArn !== undefined) tags.push(['eks-cluster-arn', clusterArn]);
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
  private readonly byPod = new WeakMap<PodInfo, { ns: NamespaceInfo | undefined; sa?: ServiceAccountInfo | undefined; assoc?: AssociationInfo | undefined; result: RoleRequest | Error }>();
  private readonly byNamespace = new WeakMap<NamespaceInfo, RoleMatcher[] | Error>();

  constructor(readonly policy: RolePolicy) {}

  resolve(pod: PodInfo, namespace: NamespaceInfo | undefined, serviceAccount?: ServiceAccountInfo, association?: AssociationInfo): RoleRequest | Error {
    const memo = this.byPod.get(pod);
    if (memo !== undefined && memo.ns === namespace && memo.sa === serviceAccount && memo.assoc === association) return memo.result;
    let result: RoleRequest | Error;
    try {
      result = resolveRole(pod, namespace, this.policy, (ns, nsName, policy) => this.allowed(ns, nsName, policy), serviceAccount, association);
    } catch (err) {
      result = err as Error;
    }
    this.byPod.set(pod, { ns: namespace, sa: serviceAccount, assoc: association, result });
    return result;
  }

  /** An association's verdict (its status): undefined when it can grant its role, else why not. */
  checkAssociation(association: AssociationInfo, namespace: NamespaceInfo | undefined): Error | undefined {
    try {
      checkAssociation(association, namespace, this.policy, (ns, nsName, policy) => this.allowed(ns, nsName, policy));
      return undefined;
    } catch (err) {
      return err as Error;
    }
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
