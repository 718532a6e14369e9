/**
 * Role chaining, as EKS Pod Identity's cross-account associations do it
 * (https://docs.aws.amazon.com/eks/latest/userguide/pod-id-assign-target-role.html): a request
 * with a sourceRole is assumed with the source role's credentials, which come from the cache like
 * any other role's (cached, refreshed ahead, one STS call shared by every pod of that source).
 * A refresh of the target costs one AssumeRole while the source's credentials are fresh.
 * STS caps a chained session at one hour (sts.ts asks for at most that).
 */
import type { RoleRequest } from '../roles.js';
import type { AwsCredentials, RoleAssumer } from './sts.js';

export function chainRoles(assumer: RoleAssumer, sourceCredentials: (source: RoleRequest) => Promise<AwsCredentials>): RoleAssumer {
  return {
    async assume(request, urgency, using) {
      if (request.sourceRole === undefined || using !== undefined) return assumer.assume(request, urgency, using);
      return assumer.assume(request, urgency, await sourceCredentials(request.sourceRole));
    },
  };
}
