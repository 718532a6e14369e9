/**
 * Where credentials come from, for the IMDS and the token path alike: "the credentials of this
 * pod". Implemented once by LocalCredentials (role resolution and the cache over STS on this
 * node: standalone, the kube2iam drop-in) and once by the broker client (the broker resolves and
 * assumes; the agent keeps its answers). The paths never know which one they hold; main.ts picks.
 * The shape is the EKS Pod Identity agent's one-method CredentialRetriever, split in the three
 * questions a metadata request asks.
 */
import type { IssuedCredentials } from '../aws/credential-cache.js';
import type { PodInfo, RoleRequest } from '../roles.js';

export interface PodCredentials {
  /** The role the pod was granted (what security-credentials/ lists, and the audit line's ARN). */
  readonly role: RoleRequest;
  readonly creds: IssuedCredentials;
}

/**
 * What the caller showed, for a source that checks it again itself (the broker reviews a pod's
 * ServiceAccount token on its own side). The IMDS path proves nothing more than the pod's IP,
 * which only this node's interception can vouch for.
 */
export type CallerProof = { readonly kind: 'ip' } | { readonly kind: 'token'; readonly token: string };

export interface CredentialSource {
  /** The pod's role without its credentials. A denial (RoleNotAllowed, NoRoleForPod, …) throws. */
  role(pod: PodInfo): Promise<RoleRequest>;
  /** The pod's credentials: from memory when fresh, else fetched once for everyone asking. Denials and STS refusals throw. */
  credentials(pod: PodInfo, proof: CallerProof): Promise<PodCredentials>;
  /** The hot path: fresh credentials from memory, synchronously, or undefined (then credentials()). Never throws. */
  peek(pod: PodInfo): PodCredentials | undefined;
  /** A pod that may have a role appeared or changed on this node: fetch ahead. Never throws. */
  prefetch(pod: PodInfo): void;
}
