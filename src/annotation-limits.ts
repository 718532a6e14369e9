/**
 * Pure: the size limits on annotation values, checked before any parsing or matching, so a
 * value written by a pod's or namespace's owner costs podiam a length check and nothing more.
 * The limits are AWS's own: a longer value could never work, so refusing it loses nothing.
 */
import { BadAnnotation } from './errors.js';
import type { NamespaceInfo, PodInfo, RolePolicy, ServiceAccountInfo } from './roles.js';

/** IRSA's ServiceAccount annotation (roles.ts reads it after podiam's own key). */
const IRSA_ROLE_KEY = 'eks.amazonaws.com/role-arn';

/** IAM: RoleName 1-64, Path 1-512 (https://docs.aws.amazon.com/IAM/latest/APIReference/API_Role.html). */
export const MAX_ROLE_NAME = 64;
export const MAX_ROLE_PATH = 512;
/** STS AssumeRole: RoleArn 20-2048, ExternalId 2-1224, RoleSessionName 2-64. */
export const MAX_ROLE_ARN = 2048;
export const MAX_EXTERNAL_ID = 1224;
export const MAX_SESSION_NAME = 64;
/** allowed-roles: entries, characters per entry, and characters of the whole annotation. */
export const MAX_ALLOWED_ROLES = 256;
export const MAX_ALLOWED_ROLE_ENTRY = 512;
export const MAX_ALLOWED_ROLES_TOTAL = 64 * 1024;

/**
 * Throws BadAnnotation (403, naming the object and the annotation) for a value over its limit.
 * The namespace's allowed-roles is checked only when it can matter: restrictions on and a role asked for.
 */
export function checkAnnotationLimits(pod: PodInfo, namespace: NamespaceInfo | undefined, policy: RolePolicy, serviceAccount?: ServiceAccountInfo): void {
  const onPod = (key: string, why: string) => new BadAnnotation(`pod ${pod.namespace}/${pod.name}`, key, why);
  const checkRole = (role: string, fail: (key: string, why: string) => BadAnnotation): void => {
    if (role.length > MAX_ROLE_ARN) throw fail(policy.roleKey, `${role.length} characters; a role ARN has at most ${MAX_ROLE_ARN}`);
    const parts = roleNameAndPath(role.trim(), policy.baseRoleArn);
    if (parts !== undefined && parts.name.length > MAX_ROLE_NAME) throw fail(policy.roleKey, `the role name has ${parts.name.length} characters; IAM allows at most ${MAX_ROLE_NAME}`);
    if (parts !== undefined && parts.path.length > MAX_ROLE_PATH) throw fail(policy.roleKey, `the role path has ${parts.path.length} characters; IAM allows at most ${MAX_ROLE_PATH}`);
  };
  const podRole = pod.annotations[policy.roleKey];
  if (podRole !== undefined) checkRole(podRole, onPod);
  // A ServiceAccount's role is as untrusted as a pod's (whoever may edit the ServiceAccount wrote it).
  const saRole = serviceAccount?.annotations[policy.roleKey];
  const onServiceAccount = (key: string) => (_: string, why: string) => new BadAnnotation(`serviceaccount ${serviceAccount!.namespace}/${serviceAccount!.name}`, key, why);
  if (saRole !== undefined) checkRole(saRole, onServiceAccount(policy.roleKey));
  const irsaRole = serviceAccount?.annotations[IRSA_ROLE_KEY];
  if (irsaRole !== undefined) checkRole(irsaRole, onServiceAccount(IRSA_ROLE_KEY));
  const role = podRole !== undefined && podRole.trim() !== '' ? podRole : (saRole ?? irsaRole);
  const externalId = pod.annotations[policy.externalIdKey];
  if (externalId !== undefined && externalId.length > MAX_EXTERNAL_ID) throw onPod(policy.externalIdKey, `${externalId.length} characters; STS allows at most ${MAX_EXTERNAL_ID}`);
  const sessionName = pod.annotations[policy.sessionNameKey];
  if (sessionName !== undefined && sessionName.length > MAX_SESSION_NAME) throw onPod(policy.sessionNameKey, `${sessionName.length} characters; STS allows at most ${MAX_SESSION_NAME}`);

  const allowed = namespace?.annotations[policy.namespaceKey];
  if (!policy.namespaceRestrictions || allowed === undefined || role === undefined || role.trim() === '') return;
  const onNamespace = (why: string) => new BadAnnotation(`namespace ${namespace!.name}`, policy.namespaceKey, why);
  if (allowed.length > MAX_ALLOWED_ROLES_TOTAL) throw onNamespace(`${allowed.length} characters; at most ${MAX_ALLOWED_ROLES_TOTAL}`);
  let list: unknown;
  try {
    list = JSON.parse(allowed);
  } catch {
    return; // allowedRoles() says what is wrong with it
  }
  if (!Array.isArray(list)) return;
  if (list.length > MAX_ALLOWED_ROLES) throw onNamespace(`${list.length} entries; at most ${MAX_ALLOWED_ROLES}`);
  for (const entry of list) {
    if (typeof entry === 'string' && entry.length > MAX_ALLOWED_ROLE_ENTRY) throw onNamespace(`an entry of ${entry.length} characters; at most ${MAX_ALLOWED_ROLE_ENTRY}`);
  }
}

/** The role's name and path (`/` … `/`) as IAM counts them, or undefined when it is not a role reference at all. */
function roleNameAndPath(value: string, baseRoleArn: string | undefined): { name: string; path: string } | undefined {
  const full = value.startsWith('arn:') ? value : baseRoleArn === undefined ? undefined : baseRoleArn + value.replace(/^\/+/, '');
  const at = full?.indexOf(':role/') ?? -1;
  if (full === undefined || at === -1) return undefined;
  const resource = full.slice(at + ':role'.length);
  const slash = resource.lastIndexOf('/');
  return { name: resource.slice(slash + 1), path: resource.slice(0, slash + 1) };
}
