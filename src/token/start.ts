/**
 * Wiring of the token path (--token-identity): verdict cache, route, its own listener(s), and
 * the link-local addresses when --token-interface asks for them.
 */
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config.js';
import { ConnectionLimiter } from '../connection-limits.js';
import type { CredentialSource } from '../credentials/source.js';
import { PodiamError } from '../errors.js';
import { ec2Time } from '../imds/format.js';
import type { ReviewOutcome } from '../kube/token-review.js';
import type { SigningKeysFetcher } from '../kube/token-keys.js';
import type { PodIndex } from '../kube/pod-index.js';
import { createLinkAddresses } from '../link-addresses.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { PodInfo } from '../roles.js';
import { podRef } from '../roles.js';
import { TokenCredentials } from './credentials.js';
import { TokenReviews } from './reviews.js';
import { createTokenServer } from './server.js';
import { SigningKeys } from './signing-keys.js';

export interface TokenIdentityDeps {
  readonly review: (token: string, audiences: readonly string[]) => Promise<ReviewOutcome>;
  /** The API server's token signing keys (its /openid/v1/jwks). */
  readonly signingKeys: SigningKeysFetcher;
  readonly index: Pick<PodIndex, 'pod' | 'onPodGone'>;
  /** The informers' sync state: what an answer for a pod may be given from (kube/pods.ts). */
  readonly informers: { synced(pod?: PodInfo): boolean; ready(ms: number, pod?: PodInfo): Promise<void> };
  readonly source: CredentialSource;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly onDenied: (pod: PodInfo, err: Error) => void;
  readonly listen: (server: http.Server, port: number, host: string) => Promise<AddressInfo>;
  readonly close: (server: http.Server, graceMs: number) => Promise<void>;
}

export interface TokenIdentity {
  readonly addresses: readonly AddressInfo[];
  close(): Promise<void>;
}

export async function startTokenIdentity(config: Config, deps: TokenIdentityDeps): Promise<TokenIdentity> {
  const { log, metrics } = deps;
  const keys = new SigningKeys({
    fetch: deps.signingKeys,
    onFetch: (outcome) =>
      'error' in outcome
        ? log.warn('could not read the API server\'s token signing keys (the last ones read stay in use)', { error: outcome.error, keys: keys.size() })
        : log.info('token signing keys read from the API server', { keys: outcome.keys }),
  });
  keys.prefetch();
  const reviews = new TokenReviews({ review: deps.review, checkSignature: (token) => keys.check(token), audience: config.tokenAudience, onReview: (outcome) => metrics.tokenReviews.inc({ outcome }) });
  deps.index.onPodGone((pod) => reviews.dropPod(pod.uid));
  const credentials = new TokenCredentials({
    pods: { synced: (pod) => deps.informers.synced(pod), ready: (pod) => deps.informers.ready(config.podWaitMs, pod), pod: (ns, name) => deps.index.pod(ns, name) },
    reviews,
    audience: config.tokenAudience,
    source: deps.source,
    onDenied: (pod, err) => {
      if (err instanceof PodiamError) deps.onDenied(pod, err);
    },
    onServed: (identity, role, creds) =>
      // The audit line of the token path: which pod (by its token), which role, until when.
      log.info('credentials served', { path: 'token', pod: podRef({ namespace: identity.namespace, name: identity.podName }), serviceAccount: identity.serviceAccount, roleArn: role.roleArn, sessionName: role.sessionName, accessKeyId: creds.accessKeyId, expiration: ec2Time(creds.expirationMs) }),
  });

  if (config.tokenInterface !== undefined) {
    await createLinkAddresses(config.tokenInterface, config.tokenAddrs.map((a) => a.host)).ensure();
    log.info('token addresses on the node', { link: config.tokenInterface, addresses: config.tokenAddrs.map((a) => a.host) });
  }
  const servers: http.Server[] = [];
  const addresses: AddressInfo[] = [];
  // The metadata listeners' caps, counted separately for the token listeners.
  const connections = new ConnectionLimiter({ maxPerIp: config.maxConnectionsPerIp, max: config.maxConnections, onRefused: (limit) => metrics.connectionsRefused.inc({ listener: 'token', limit }) });
  try {
    for (const a of config.tokenAddrs) {
      const server = createTokenServer({ credentials, metrics, log });
      connections.attach(server);
      servers.push(server);
      addresses.push(await deps.listen(server, a.port, a.host));
    }
  } catch (err) {
    await Promise.all(servers.map((s) => deps.close(s, 0)));
    throw err;
  }
  log.info('token identity listening', { addresses: addresses.map((a) => (a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`)), audience: config.tokenAudience });
  return {
    addresses,
    close: async () => {
      await Promise.all(servers.map((s) => deps.close(s, 10_000)));
    },
  };
}
