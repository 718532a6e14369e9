/**
 * The role policy flags: how a pod's role is decided (annotations, namespace restrictions,
 * default role, session names and tags) and how it is assumed (STS session, timeouts, refusals).
 * One definition for the node agent (standalone: it decides and assumes) and for `podiam broker`
 * (broker mode: only the broker does). An agent started with --broker refuses them by name.
 */
import { ConfigError } from './errors.js';
import type { FlagReaders, FlagSpec } from './flags.js';
import { nonEmpty } from './flags.js';

export type RestrictionFormat = 'glob' | 'regexp' | 'regexp-anchored';
export type SessionScope = 'pod' | 'role';

export interface RolePolicyConfig {
  readonly baseRoleArn: string | undefined;
  readonly defaultRole: string | undefined;
  readonly roleKey: string;
  readonly externalIdKey: string;
  readonly sessionNameKey: string;
  readonly namespaceKey: string;
  readonly namespaceRestrictions: boolean;
  readonly namespaceRestrictionFormat: RestrictionFormat;
  readonly sessionTtlSeconds: number;
  readonly stsTimeoutMs: number;
  readonly stsRegion: string;
  /** How long an STS refusal (AccessDenied, invalid ARN) is answered from memory: kube2iam's --iam-role-error-ttl. */
  readonly stsRefusalTtlMs: number;
  /** pod: one STS session per pod (CloudTrail names it); role: one per role and external id per node, as kube2iam. */
  readonly sessionScope: SessionScope;
  readonly sessionTags: boolean;
  readonly clusterName: string | undefined;
}

export const ROLE_POLICY_FLAGS: readonly FlagSpec[] = [
  { name: 'base-role-arn', type: 'string', example: '--base-role-arn=arn:aws:iam::123456789012:role/', help: 'prefix for role names in annotations' },
  { name: 'default-role', type: 'string', example: '--default-role=default-pod-role', help: 'role for pods without the role annotation' },
  { name: 'iam-role-key', type: 'string', default: 'iam.amazonaws.com/role', example: '--iam-role-key=iam.amazonaws.com/role', help: 'pod annotation holding the role' },
  { name: 'iam-external-id', type: 'string', default: 'iam.amazonaws.com/external-id', example: '--iam-external-id=iam.amazonaws.com/external-id', help: 'pod annotation holding the STS external id' },
  { name: 'iam-session-name-key', type: 'string', default: 'iam.amazonaws.com/session-name', example: '--iam-session-name-key=iam.amazonaws.com/session-name', help: 'pod annotation holding the STS session name' },
  { name: 'namespace-key', type: 'string', default: 'iam.amazonaws.com/allowed-roles', example: '--namespace-key=iam.amazonaws.com/allowed-roles', help: 'namespace annotation listing allowed roles (JSON array)' },
  { name: 'namespace-restrictions', type: 'bool', default: 'false', example: '--namespace-restrictions', help: 'only allow roles listed on the pod namespace' },
  { name: 'namespace-restriction-format', type: 'enum', default: 'glob', values: ['glob', 'regexp', 'regexp-anchored'], example: '--namespace-restriction-format=regexp', help: 'how allowed-roles entries match the role ARN: glob; regexp (RE2, unanchored, exactly as kube2iam); regexp-anchored (the whole ARN must match)' },
  { name: 'iam-role-session-ttl', type: 'duration', default: '1h', example: '--iam-role-session-ttl=1h', help: 'STS session duration, exactly (15m..12h)' },
  { name: 'sts-timeout', type: 'duration', default: '3s', example: '--sts-timeout=3s', help: 'timeout of one STS AssumeRole attempt' },
  { name: 'sts-region', type: 'string', example: '--sts-region=eu-west-1', help: 'STS region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)' },
  { name: 'session-scope', type: 'enum', default: 'pod', values: ['pod', 'role'], example: '--session-scope=role', help: 'pod: one STS session per pod (CloudTrail names the pod); role: one per role and external id on this node, as kube2iam (fewer STS calls)' },
  { name: 'session-tags', type: 'bool', default: 'false', example: '--session-tags', help: 'AssumeRole with session tags kubernetes-namespace, -service-account, -pod-name, -pod-uid (role trust needs sts:TagSession)' },
  { name: 'cluster-name', type: 'string', example: '--cluster-name=prod-eu', help: 'with --session-tags: also tag eks-cluster-name' },
  { name: 'iam-role-error-ttl', type: 'duration', default: '30s', example: '--iam-role-error-ttl=30s', help: 'how long an STS refusal (AccessDenied, invalid role ARN) is answered from memory before STS is asked again (at least 1s; kube2iam default 0)' },
  { name: 'auto-discover-default-role', type: 'bool', default: 'false', example: '--default-role=arn:aws:iam::123456789012:role/<node-role>', help: 'kube2iam compatibility', compat: "refused: name the node's role with --default-role if you mean it" },
];

const ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]*$/;

export function isRoleArn(value: string): boolean {
  return ROLE_ARN.test(value);
}

/** The ROLE_POLICY_FLAGS read and checked, each error naming its flag. */
export function rolePolicyConfig({ get, fail, bool, str, duration, oneOf }: FlagReaders, env: NodeJS.ProcessEnv): RolePolicyConfig {
  let baseRoleArn = str('base-role-arn');
  if (baseRoleArn !== undefined) {
    if (!baseRoleArn.endsWith('/')) baseRoleArn += '/';
    if (!isRoleArn(baseRoleArn)) fail('base-role-arn', `${JSON.stringify(get('base-role-arn'))} is not a role ARN prefix`);
  }
  const defaultRole = str('default-role');
  if (defaultRole !== undefined && !/^[\w+=,.@/:-]+$/.test(defaultRole)) {
    fail('default-role', `${JSON.stringify(defaultRole)} is not a role name or ARN`);
  }
  if (defaultRole?.startsWith('arn:') && !isRoleArn(defaultRole)) {
    fail('default-role', `${JSON.stringify(defaultRole)} is not a role ARN`);
  }
  if (bool('auto-discover-default-role')) {
    // kube2iam reads the node's role from iam/security-credentials/ and gives it to every pod
    // without an annotation: any such pod then holds the node's own permissions.
    throw new ConfigError(
      '--auto-discover-default-role',
      "refused: it makes the node's own IAM role the default for every pod without an iam.amazonaws.com/role annotation, so any such pod gets the node's permissions. " +
        "If that is really what you want, name the role explicitly: --default-role=<the node's role>, e.g. --default-role=arn:aws:iam::123456789012:role/<node-role> " +
        '(the node\'s role is what `curl http://169.254.169.254/latest/meta-data/iam/security-credentials/` prints on the node)',
    );
  }
  const clusterName = str('cluster-name');
  // An STS tag value: up to 256 characters of letters, digits, spaces and _.:/=+-@.
  if (clusterName !== undefined && !/^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,256}$/u.test(clusterName)) fail('cluster-name', `${JSON.stringify(clusterName)} is not a valid session tag value`);

  // Session tags name one pod; a role-scoped session is shared by every pod with that role.
  if (bool('session-tags') && oneOf<SessionScope>('session-scope') === 'role') {
    fail('session-tags', 'cannot be combined with --session-scope=role (a shared session cannot carry one pod\'s tags); use --session-scope=pod');
  }
  const sessionTtlMs = duration('iam-role-session-ttl', 15 * 60_000, 12 * 3_600_000);
  if (sessionTtlMs % 1000 !== 0) fail('iam-role-session-ttl', 'must be whole seconds');
  return {
    baseRoleArn,
    defaultRole,
    roleKey: str('iam-role-key')!,
    externalIdKey: str('iam-external-id')!,
    sessionNameKey: str('iam-session-name-key')!,
    namespaceKey: str('namespace-key')!,
    namespaceRestrictions: bool('namespace-restrictions'),
    namespaceRestrictionFormat: oneOf<RestrictionFormat>('namespace-restriction-format'),
    sessionTtlSeconds: sessionTtlMs / 1000,
    stsTimeoutMs: duration('sts-timeout', 100, 60_000),
    stsRegion: str('sts-region') ?? nonEmpty(env.AWS_REGION) ?? nonEmpty(env.AWS_DEFAULT_REGION) ?? 'us-east-1',
    stsRefusalTtlMs: Math.max(1000, duration('iam-role-error-ttl', 0, 3_600_000)),
    sessionScope: oneOf<SessionScope>('session-scope'),
    sessionTags: bool('session-tags'),
    clusterName,
  };
}
