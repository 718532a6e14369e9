/**
 * Credentials decided and fetched on this node: the pod's role from its annotations and its
 * namespace (RoleResolver), the credentials from the cache over STS. Standalone podiam and the
 * kube2iam drop-in use it; the broker uses it for the whole cluster.
 */
import type { CredentialCache } from '../aws/credential-cache.js';
import type { PodInfo, RoleRequest } from '../roles.js';
import type { CallerProof, CredentialSource, PodCredentials } from './source.js';

export interface LocalCredentialsOptions {
  /** The pod's role, or its denial (returned, not thrown: the resolver memoises both). */
  readonly roleOf: (pod: PodInfo) => RoleRequest | Error;
  readonly cache: Pick<CredentialCache, 'get' | 'peek' | 'prefetch'>;
}

export class LocalCredentials implements CredentialSource {
  constructor(private readonly options: LocalCredentialsOptions) {}

  role(pod: PodInfo): Promise<RoleRequest> {
    const role = this.options.roleOf(pod);
    return role instanceof Error ? Promise.reject(role) : Promise.resolve(role);
  }

  // The proof is the caller's business here: the IMDS path checked the IP, the token path the token.
  async credentials(pod: PodInfo, _proof: CallerProof): Promise<PodCredentials> {
    const role = await this.role(pod);
    return { role, creds: await this.options.cache.get(role) };
  }

  peek(pod: PodInfo): PodCredentials | undefined {
    const role = this.options.roleOf(pod);
    if (role instanceof Error) return undefined;
    const creds = this.options.cache.peek(role);
    return creds === undefined ? undefined : { role, creds };
  }

  prefetch(pod: PodInfo): void {
    const role = this.options.roleOf(pod);
    if (!(role instanceof Error)) this.options.cache.prefetch(role);
  }
}
