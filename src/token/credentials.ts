/**
 * GET /v1/credentials: the container-credentials protocol (EKS Pod Identity's), where the
 * caller is who its ServiceAccount token says, never its IP. Reads top-down, as a request flows:
 * token -> verdict (cached TokenReview) -> live pod on this node -> role -> credentials.
 */
import type { IssuedCredentials } from '../aws/credential-cache.js';
import type { CredentialSource } from '../credentials/source.js';
import { TokenPodNotHere } from '../errors.js';
import type { PodInfo, RoleRequest } from '../roles.js';
import { claimsOf, tokenFromHeader, tokenHash } from './bearer.js';
import type { TokenIdentity, TokenReviews, Verdict } from './reviews.js';

export interface TokenPods {
  /** The informers this pod's answer depends on are in sync (none given: the pod informer). */
  synced(pod?: PodInfo): boolean;
  /** Waits (within --pod-wait) until synced(pod), else throws NotReady naming the informer. */
  ready(pod?: PodInfo): Promise<void>;
  /** This node's pod by name, hostNetwork pods included. */
  pod(namespace: string, name: string): PodInfo | undefined;
}

export interface TokenCredentialsOptions {
  readonly pods: TokenPods;
  readonly reviews: Pick<TokenReviews, 'cached' | 'verdict' | 'isCurrent'>;
  readonly audience: string;
  /** The pod's role (its own annotation, else its ServiceAccount's, else the default) and credentials: this node's cache over STS, or the broker. */
  readonly source: CredentialSource;
  readonly now?: () => number;
  /** A denial the pod's owner should hear about (log line, Kubernetes Event). */
  readonly onDenied?: (pod: PodInfo, err: Error) => void;
  /** The audit line: credentials handed out on the token path (once per token and access key). */
  readonly onServed?: (identity: TokenIdentity, role: RoleRequest, creds: IssuedCredentials) => void;
}

export interface TokenAnswer {
  readonly pod: PodInfo;
  readonly role: RoleRequest;
  readonly body: Buffer;
}

export class TokenCredentials {
  /** The protocol's body, rendered once per issued credentials (they are immutable). */
  private readonly bodies = new WeakMap<IssuedCredentials, Buffer>();
  /**
   * The last token a keep-alive connection sent and its verdict: the same token again skips the
   * hash (a SHA-256 of ~1 KB per request is most of this path's cost). Gone with the connection.
   */
  private readonly byConnection = new WeakMap<object, { token: string; verdict: Verdict }>();
  private readonly now: () => number;

  constructor(private readonly options: TokenCredentialsOptions) {
    this.now = options.now ?? Date.now;
  }

  async credentials(authorization: string | string[] | undefined): Promise<TokenAnswer> {
    const { pods, reviews, source } = this.options;
    await pods.ready(); //                                                       503 after --pod-wait
    const token = tokenFromHeader(authorization); //                           400
    const hash = tokenHash(token);
    const verdict = reviews.cached(hash) ?? (await this.review(token, hash)); // 401, 403, 503
    if (verdict.error !== undefined) throw verdict.error;
    const pod = this.livePod(verdict.identity!); //                            403
    await pods.ready(pod); //                                                  503 (its namespace, ServiceAccount)
    await this.roleOf(pod); //                                                  404, 403
    const { role, creds } = await source.credentials(pod, { kind: 'token', token }); // 5xx
    return { pod, role, body: this.body(verdict, role, creds) };
  }

  /**
   * The common case answered synchronously: a token already reviewed, its pod live, its
   * credentials fresh in memory. Anything else is undefined: the caller takes the full path.
   */
  credentialsNow(authorization: string | string[] | undefined, connection?: object): TokenAnswer | undefined {
    const { pods, reviews, source } = this.options;
    if (typeof authorization !== 'string') return undefined;
    const memo = connection === undefined ? undefined : this.byConnection.get(connection);
    let verdict: Verdict | undefined;
    if (memo !== undefined && memo.token === authorization && reviews.isCurrent(memo.verdict)) {
      verdict = memo.verdict;
    } else {
      verdict = reviews.cached(tokenHash(authorization.trim()));
      if (verdict !== undefined && connection !== undefined) this.byConnection.set(connection, { token: authorization, verdict });
    }
    const identity = verdict?.identity;
    if (identity === undefined) return undefined;
    const pod = pods.pod(identity.namespace, identity.podName);
    if (pod === undefined || pod.uid !== identity.podUid || ended(pod) || !pods.synced(pod)) return undefined;
    const fresh = source.peek(pod);
    return fresh === undefined ? undefined : { pod, role: fresh.role, body: this.body(verdict!, fresh.role, fresh.creds) };
  }

  /**
   * A token not reviewed yet: what it claims must be possible here (audience, expiry, a live pod
   * of this node) before the API server is asked, so a token for a pod that is gone, elsewhere or
   * made up costs no API call.
   */
  private review(token: string, hash: string): Promise<Verdict> {
    const claims = claimsOf(token, this.options.audience, this.now());
    this.livePod(claims);
    return this.options.reviews.verdict(token, hash, claims);
  }

  /** The pod the token is bound to, live on this node now (the informer's view: name and uid). */
  private livePod(identity: TokenIdentity): PodInfo {
    const pod = this.options.pods.pod(identity.namespace, identity.podName);
    if (pod === undefined || pod.uid !== identity.podUid || ended(pod)) throw new TokenPodNotHere(`${identity.namespace}/${identity.podName}`);
    return pod;
  }

  /** The pod's role; a denial is one the pod's owner hears about. */
  private async roleOf(pod: PodInfo): Promise<RoleRequest> {
    try {
      return await this.options.source.role(pod);
    } catch (err) {
      this.options.onDenied?.(pod, err as Error);
      throw err;
    }
  }

  private body(verdict: Verdict, role: RoleRequest, creds: IssuedCredentials): Buffer {
    let body = this.bodies.get(creds);
    if (body === undefined) {
      body = renderContainerCredentials(creds.body, role.roleArn);
      this.bodies.set(creds, body);
    }
    if (verdict.servedAccessKeyId !== creds.accessKeyId) {
      verdict.servedAccessKeyId = creds.accessKeyId;
      this.options.onServed?.(verdict.identity!, role, creds);
    }
    return body;
  }
}

function ended(pod: PodInfo): boolean {
  return pod.phase === 'Succeeded' || pod.phase === 'Failed';
}

/**
 * The container-credentials answer, from the EC2 one rendered by the cache: key order as the
 * EKS Pod Identity agent sends it; `Expiration` already `YYYY-MM-DDTHH:MM:SSZ`.
 */
export function renderContainerCredentials(ec2Body: Buffer, roleArn: string): Buffer {
  const c = JSON.parse(ec2Body.toString('utf8')) as { AccessKeyId: string; SecretAccessKey: string; Token: string; Expiration: string };
  const accountId = roleArn.split(':')[4] ?? '';
  return Buffer.from(JSON.stringify({ AccessKeyId: c.AccessKeyId, SecretAccessKey: c.SecretAccessKey, Token: c.Token, AccountId: accountId, Expiration: c.Expiration }));
}
