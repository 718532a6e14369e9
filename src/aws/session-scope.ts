/**
 * --session-scope=role: kube2iam's STS economy. Every pod of this node with the same role (and
 * external id) shares one RoleRequest, hence one cache entry and one STS session, refreshed once
 * per period however many pods use it. The default (pod) keeps one session per pod, so
 * CloudTrail names the pod; this trades that for fewer AssumeRole calls.
 */
import type { AssociationInfo, NamespaceInfo, PodInfo, RoleRequest, ServiceAccountInfo } from '../roles.js';
import { sanitizeSessionName } from '../roles.js';

export interface RoleSource {
  resolve(pod: PodInfo, namespace: NamespaceInfo | undefined, serviceAccount?: ServiceAccountInfo, association?: AssociationInfo): RoleRequest | Error;
}

/**
 * Wraps a resolver so that requests for the same (role ARN, external id) are one shared object.
 * The session name is `<node>.<role name>` (sanitised, at most 64 characters): CloudTrail shows
 * the node and the role, not the pod. A session-name annotation is ignored in this mode.
 */
export function roleScoped(source: RoleSource, node: string | undefined): RoleSource {
  const shared = new Map<string, RoleRequest>();
  const byRequest = new WeakMap<RoleRequest, RoleRequest>();
  return {
    resolve(pod, namespace, serviceAccount, association) {
      const request = source.resolve(pod, namespace, serviceAccount, association);
      if (request instanceof Error) return request;
      const known = byRequest.get(request);
      if (known !== undefined) return known;
      const one = share(request);
      byRequest.set(request, one);
      return one;
    },
  };

  // Session tags name one pod: a shared session carries none (associations' included).
  function share(request: RoleRequest): RoleRequest {
    const source = request.sourceRole === undefined ? undefined : share(request.sourceRole);
    const key = `${request.roleArn}\n${request.externalId ?? ''}${source === undefined ? '' : `\nvia ${source.roleArn}`}`;
    let one = shared.get(key);
    if (one === undefined) {
      one = Object.freeze({
        roleArn: request.roleArn,
        roleName: request.roleName,
        externalId: request.externalId,
        sessionName: sanitizeSessionName(`${node ?? 'podiam'}.${request.roleName}`),
        pod: `(pods of this node with role ${request.roleName})`,
        ...(source === undefined ? {} : { sourceRole: source }),
      });
      shared.set(key, one);
    }
    return one;
  }
}
