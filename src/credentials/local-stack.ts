/**
 * Everything that decides and assumes roles, built once: the role resolver over the pod index
 * (pod, namespace and ServiceAccount annotations, --session-scope), STS (the SDK chain's
 * credentials), the credential cache (prefetch, refresh ahead, single flight, refusals as
 * denials), the allowed-roles audit, and LocalCredentials over them. Standalone podiam builds it
 * for its node; `podiam broker` builds it for the cluster. An agent with --broker never does.
 */
import { CredentialCache } from '../aws/credential-cache.js';
import type { Clock } from '../aws/credential-cache.js';
import { chainRoles } from '../aws/role-chain.js';
import { roleScoped } from '../aws/session-scope.js';
import type { AwsCredentials, RoleAssumer } from '../aws/sts.js';
import { createStsAssumer } from '../aws/sts.js';
import { AllowedRolesAudit } from '../allowed-roles-audit.js';
import { renderCredentials } from '../imds/format.js';
import type { EventRecorder } from '../kube/events.js';
import type { PodIndex } from '../kube/pod-index.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { RolePolicyConfig } from '../role-policy-flags.js';
import type { AssociationInfo, PodInfo, RolePolicy, RoleRequest } from '../roles.js';
import { RoleResolver, toRoleArn } from '../roles.js';
import { ConfigError } from '../errors.js';
import { LocalCredentials } from './local.js';

export interface LocalStackDeps {
  readonly index: Pick<PodIndex, 'namespace' | 'serviceAccountOf' | 'allPods' | 'onNamespace' | 'onPodServable' | 'onPodGone'>;
  /** The STS region and where it came from (aws/sts-region.ts resolves it: flag, environment, or the node's metadata). */
  readonly region: { readonly region: string; readonly from: string };
  /** AWS_ENDPOINT_URL_STS (else AWS_ENDPOINT_URL), named in the start-up log. */
  readonly stsEndpointOverride?: string;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly events?: EventRecorder;
  /** The node named in role-scoped session names (--session-scope=role); the broker has none. */
  readonly node: string | undefined;
  /** The pod's PodIdentityAssociation, when associations are read (role resolution takes it as data). */
  readonly associationOf?: (pod: PodInfo) => AssociationInfo | undefined;
  /** Wraps STS (the broker paces its background calls with --sts-qps). */
  readonly pace?: (sts: RoleAssumer) => RoleAssumer;
  /** Wraps the whole assumer (the broker asks the replica that owns a key before STS: broker/peers.ts). */
  readonly forward?: (assumer: RoleAssumer) => RoleAssumer;
  readonly clock?: Clock;
}

export interface LocalStack {
  readonly source: LocalCredentials;
  readonly roleOf: (pod: PodInfo) => RoleRequest | Error;
  /** The resolver itself (not role-scoped): associations' status verdicts. */
  readonly resolver: RoleResolver;
  readonly cache: CredentialCache;
  stop(): void;
}

export function createLocalStack(config: RolePolicyConfig, policy: RolePolicy, deps: LocalStackDeps): LocalStack {
  const { index, metrics, log } = deps;
  // --session-scope=role: pods with the same role and external id share one session (kube2iam's economy).
  const resolver = new RoleResolver(policy);
  const roles = config.sessionScope === 'role' ? roleScoped(resolver, deps.node) : resolver;
  const associationOf = deps.associationOf;
  const roleOf = (pod: PodInfo): RoleRequest | Error => roles.resolve(pod, index.namespace(pod.namespace), index.serviceAccountOf(pod), associationOf?.(pod));
  if (config.sessionTtlSeconds < 1800) {
    // Refresh happens at half-life for short sessions, so served credentials have under 15 min
    // left and botocore re-reads them on every call (cheap here, from memory, but noisy).
    log.warn('--iam-role-session-ttl under 30m: credentials will be served with less than 15 minutes left, and SDKs will refresh them often', { sessionTtlSeconds: config.sessionTtlSeconds });
  }

  const { region } = deps;
  const stsClient = createStsAssumer({ region: region.region, sessionTtlSeconds: config.sessionTtlSeconds, attemptTimeoutMs: config.stsTimeoutMs });
  stsClient.endpoint(deps.stsEndpointOverride).then(
    (endpoint) => log.info('STS endpoint', { region: region.region, regionFrom: region.from, endpoint }),
    (err: unknown) => log.warn('STS client did not load', { region: region.region, error: (err as Error).message }),
  );
  const sts = instrument(stsClient, metrics);
  const cache: CredentialCache = new CredentialCache({
    // An association's targetRoleArn: assumed with its roleArn's credentials, from this same cache.
    assumer: (deps.forward ?? ((a: RoleAssumer) => a))(chainRoles(deps.pace === undefined ? sts : deps.pace(sts), async (source): Promise<AwsCredentials> => (await cache.get(source)).credentials)),
    render: renderCredentials,
    refusalTtlMs: config.stsRefusalTtlMs,
    clock: deps.clock,
    events: {
      issued: (c, cause) => {
        metrics.credentialsIssued.inc({ cause });
        // The audit line: who got which role until when. Never the secret or the token.
        log.info('credentials issued', { pod: c.request.pod, roleArn: c.request.roleArn, sourceRoleArn: c.request.sourceRole?.roleArn, association: c.request.association, sessionName: c.request.sessionName, accessKeyId: c.accessKeyId, expiration: new Date(c.expirationMs).toISOString(), cause });
      },
      failed: (request, cause, err, retryInMs) => {
        metrics.refreshFailures.inc({ cause });
        log.warn('could not get credentials', { pod: request.pod, roleArn: request.roleArn, cause, error: err.message, detail: (err as { detail?: string }).detail, retryInMs });
      },
      lookup: (result) => metrics.countLookup(result),
      throttled: (_request, cause) => metrics.newSessionsThrottled.inc({ cause }),
    },
  });
  // What each live pod wants now: a key no pod wants any more (pod gone, annotation changed)
  // leaves the cache at once.
  index.onPodServable((pod) => {
    const role = roleOf(pod);
    cache.want(pod.uid, role instanceof Error ? undefined : role);
  });
  index.onPodGone((pod) => cache.want(pod.uid, undefined));

  const events = deps.events;
  const audit = new AllowedRolesAudit(policy, {
    warn: (message, fields) => log.warn(message, fields),
    invalidEntry: (namespace) => metrics.allowedRolesInvalid.inc({ namespace }),
    unanchoredMatch: (namespace) => metrics.allowedRolesUnanchored.inc({ namespace }),
    namespaceEvent: events === undefined ? undefined : (namespace, reason, message) => events.namespaceWarning(namespace, reason, message),
  });
  if (audit.active) {
    const allowedRolesOf = (namespace: string): string[] => {
      const arns: string[] = [];
      for (const pod of index.allPods()) {
        if (pod.namespace !== namespace) continue;
        const role = roleOf(pod);
        if (!(role instanceof Error)) arns.push(role.roleArn);
      }
      return arns;
    };
    index.onNamespace((ns) => audit.check(ns, allowedRolesOf(ns.name)));
    index.onPodServable((pod) => {
      const ns = index.namespace(pod.namespace);
      const role = roleOf(pod);
      if (ns !== undefined && !(role instanceof Error)) audit.check(ns, [role.roleArn]);
    });
  }

  return {
    source: new LocalCredentials({ roleOf, cache }),
    roleOf,
    resolver,
    cache,
    stop() {
      cache.stop();
      sts.destroy();
    },
  };
}

function instrument(sts: RoleAssumer & { destroy(): void }, metrics: Metrics): RoleAssumer & { destroy(): void } {
  return {
    async assume(request, urgency, using) {
      const end = metrics.stsSeconds.startTimer();
      try {
        const creds = await sts.assume(request, urgency, using);
        metrics.stsCalls.inc({ outcome: 'success' });
        return creds;
      } catch (err) {
        metrics.stsCalls.inc({ outcome: (err as { stsCode?: string }).stsCode ?? 'error' });
        throw err;
      } finally {
        end();
      }
    },
    destroy: () => sts.destroy(),
  };
}

/** The role policy, frozen: the flags, with the base role ARN given or discovered. */
export function rolePolicyOf(config: RolePolicyConfig, baseRoleArn: string | undefined): RolePolicy {
  if (config.defaultRole !== undefined && toRoleArn(config.defaultRole, baseRoleArn) === undefined) {
    throw new ConfigError('--default-role', `${JSON.stringify(config.defaultRole)} is a role name but no base ARN is set: add --base-role-arn, e.g. --base-role-arn=arn:aws:iam::123456789012:role/, or give a full ARN`);
  }
  return Object.freeze({
    baseRoleArn,
    defaultRole: config.defaultRole,
    roleKey: config.roleKey,
    externalIdKey: config.externalIdKey,
    sessionNameKey: config.sessionNameKey,
    namespaceKey: config.namespaceKey,
    namespaceRestrictions: config.namespaceRestrictions,
    namespaceRestrictionFormat: config.namespaceRestrictionFormat,
    sessionTags: config.sessionTags,
    clusterName: config.clusterName,
    clusterArn: config.clusterArn,
    roleSources: config.roleSources,
  });
}
