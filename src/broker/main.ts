/**
 * Wiring only: config -> certificate -> informers (all nodes: pods, namespaces, ServiceAccounts)
 * -> the cluster's credentials (role resolution, the cache over STS, paced by --sts-qps) ->
 * agent authentication -> servers -> listen. Shutdown in reverse.
 */
import { certificateCount, watchedCaFile } from '../ca-file.js';
import { Associations } from '../associations.js';
import { annotationKeysOf } from '../roles.js';
import { once } from 'node:events';
import type { Server } from 'node:http';
import { createLocalStack, rolePolicyOf } from '../credentials/local-stack.js';
import { createKubeConfig } from '../kube/api.js';
import { PodIndex, isServable } from '../kube/pod-index.js';
import { cacheKey, refreshLeadMs } from '../aws/credential-cache.js';
import type { PodInfo, RoleRequest } from '../roles.js';
import { KubeWatcher } from '../kube/pods.js';
import { createTokenReviewer } from '../kube/token-review.js';
import type { Logger } from '../log.js';
import { createMetrics } from '../metrics.js';
import { createHealthServer } from '../webhook/server.js';
import { CertificateReloader, loadCertificatePair } from '../webhook/tls.js';
import { AgentAuth } from './agent-auth.js';
import type { BrokerConfig } from './config.js';
import { describeBrokerConfig } from './config.js';
import { createBrokerMetrics } from './metrics.js';
import { PolicyChanges } from './policy-changes.js';
import { createBrokerServer } from './server.js';
import { TokenBucket, paced } from './token-bucket.js';
import { PeerClient, PeerForwarding, PeerSet } from './peers.js';
import type { PeersConfig } from './config.js';
import { readFile } from 'node:fs/promises';
import { claimsOf } from '../token/bearer.js';
import type { BoundClaims } from '../token/bearer.js';

export interface RunningBroker {
  readonly port: number;
  shutdown(signal: string): Promise<void>;
}

export async function startBroker(config: BrokerConfig, log: Logger): Promise<RunningBroker> {
  log.info('podiam broker starting', describeBrokerConfig(config));
  let accepting = false;
  const metrics = createMetrics({
    podsIndexed: () => index.ipCount(),
    cacheEntries: () => stack.cache.size(),
    credentialsMinRemainingMs: () => stack.cache.servedRemainingMs(),
    ready: () => ready(),
  });
  const brokerMetrics = createBrokerMetrics(metrics.registry, { prefetchQueued: () => bucket.queued(), changePolls: () => changes.held() });
  const certificate = await loadCertificatePair(config.tlsCertFile, config.tlsKeyFile).catch((err: Error) => {
    throw new Error(`cannot load the serving certificate (--tls-cert-file, --tls-key-file): ${err.message}`);
  });
  brokerMetrics.certificateReloads.inc({ outcome: 'success' });

  let stopping: Promise<void> | undefined;
  const kc = createKubeConfig(config);
  const index = new PodIndex();
  // No node: the broker sees every pod of the cluster, and every namespace and ServiceAccount.
  const watcher = new KubeWatcher(kc, index, { node: undefined, metadataScope: 'all', annotationKeys: annotationKeysOf(config), log, metrics, watchDeadlineMs: config.watchDeadlineMs });
  // PodIdentityAssociations live here in broker mode (agents read none): role resolution takes them
  // as data; the broker, which sees every namespace, writes their status.
  const associations = config.roleSources === undefined || config.roleSources.has('associations') ? new Associations(kc, { log, metrics, watchDeadlineMs: config.watchDeadlineMs, namespace: (name) => index.namespace(name), check: (a, ns) => stack.resolver.checkAssociation(a, ns) }) : undefined;
  const ready = (): boolean => accepting && watcher.synced() && (associations?.synced() ?? true);

  // The only process of the cluster that calls STS: its credentials come from the SDK's chain.
  const bucket = new TokenBucket({ ratePerSecond: config.stsQps });
  // The broker has no metadata service of its own to ask: its region is configured (--sts-region,
  // AWS_REGION, AWS_DEFAULT_REGION); without one, STS's us-east-1 endpoint, and the log says so.
  if (config.stsRegion === undefined) log.warn('no STS region configured (--sts-region, AWS_REGION): using us-east-1; set the cluster\'s region so STS calls stay regional');
  const region = { region: config.stsRegion ?? 'us-east-1', from: config.stsRegionFrom ?? 'default' };
  // --peers: one replica calls STS for each set of credentials, the others ask it (peers.ts).
  const peering = config.peers === undefined ? undefined : await startPeering(config, config.peers, index, log, brokerMetrics);
  const stack = createLocalStack(config, rolePolicyOf(config, config.baseRoleArn), {
    index,
    metrics,
    log,
    node: undefined,
    region,
    associationOf: associations === undefined ? undefined : (pod) => associations.of(pod),
    stsEndpointOverride: config.stsEndpointOverride,
    pace: (sts) => paced(sts, bucket),
    forward: peering === undefined ? undefined : (assumer) => peering.forwarding.wrap(assumer),
  });
  // Every pod with a role, cluster-wide, prefetched at --sts-qps: an agent's miss finds it in memory.
  // With --peers, by its owner only: another replica asked for it gets it from the owner's memory.
  const owns = (pod: PodInfo): boolean => {
    if (peering === undefined) return true;
    const role = stack.roleOf(pod);
    return role instanceof Error || peering.set.owner(cacheKey(role)) === undefined;
  };
  // With --peers, not before the informers have listed: until the brokers' own pods are in the
  // index (kube-system lists after most namespaces) this replica would think it owns everything.
  let prefetching = peering === undefined;
  index.onPodServable((pod) => {
    if (prefetching && owns(pod)) stack.source.prefetch(pod);
  });
  /** Every servable pod this replica owns, prefetched (a no-op for fresh credentials), a slice a turn of the event loop. */
  const prefetchOwned = (): void => {
    const pods = [...index.allPods()];
    let i = 0;
    const slice = (): void => {
      for (const end = Math.min(pods.length, i + 2_000); i < end; i++) {
        const pod = pods[i]!;
        if (index.pod(pod.namespace, pod.name) === pod && isServable(pod) && owns(pod)) stack.source.prefetch(pod);
      }
      if (i < pods.length && stopping === undefined) setImmediate(slice);
    };
    slice();
  };
  // A replica coming or going moves owners: what this replica owns now is prefetched.
  let members: string | undefined;
  /** Whether the ready replicas (this one included) are not the ones seen last (logged when so). */
  const membersChanged = (set: PeerSet): boolean => {
    const names = set.others().map((m) => m.name);
    const now = `${set.selfMember()}:${names.join(',')}`;
    if (now === members) return false;
    members = now;
    log.info('broker replicas', { peers: names, owning: set.selfMember() });
    return true;
  };
  const membership =
    peering === undefined
      ? undefined
      : setInterval(() => {
          if (prefetching && membersChanged(peering.set)) prefetchOwned();
        }, 5_000);
  membership?.unref();

  const auth = new AgentAuth({
    review: createTokenReviewer(kc),
    agent: config.agentServiceAccount,
    agentAudience: config.agentAudience,
    tokenAudience: config.tokenAudience,
    pods: index,
    onReview: (kind, outcome) => brokerMetrics.tokenReviews.inc({ kind, outcome }),
    peers: config.peers === undefined ? undefined : { namespace: config.peers.namespace, name: config.peers.serviceAccount },
  });
  index.onPodGone((pod) => auth.dropPod(pod.uid));

  // What agents cannot see (namespaces, ServiceAccounts, associations) reaches them as it changes.
  const changes = new PolicyChanges({ hasPodsOn: (node, namespace, serviceAccount) => index.hasPodsOn(node, namespace, serviceAccount) });
  // Recorded from the first moment this replica answers (changes.begin() below), relists included:
  // a relist after a watch gap is where changes missed meanwhile arrive.
  const policyChanged = (kind: 'namespace' | 'serviceaccount' | 'association', namespace: string, serviceAccount: string | undefined): void => {
    if (changes.record(namespace, serviceAccount)) brokerMetrics.policyChanges.inc({ kind });
  };
  index.onPolicyChange((namespace, serviceAccount) => policyChanged(serviceAccount === undefined ? 'namespace' : 'serviceaccount', namespace, serviceAccount));
  associations?.onRoleChange((namespace, serviceAccount) => policyChanged('association', namespace, serviceAccount));

  const peers =
    peering === undefined
      ? undefined
      : {
          serve: (request: RoleRequest, urgent: boolean, minValidMs: number) => peering.forwarding.serving(request, () => stack.cache.lasting(request, minValidMs, urgent)),
        };
  const server = createBrokerServer(certificate, { auth, pods: index, source: stack.source, ready, log, metrics: brokerMetrics, changes, peers });
  const reloader = new CertificateReloader(certificate, { certFile: config.tlsCertFile, keyFile: config.tlsKeyFile, intervalMs: config.tlsReloadMs, server, log, metrics: brokerMetrics });
  const health = createHealthServer({ metrics, ready });

  watcher.start();
  associations?.start();
  if (associations !== undefined) {
    void (async () => {
      await associations.whenSynced();
      while (!watcher.synced() && stopping === undefined) await new Promise((resolve) => setTimeout(resolve, 100).unref());
      associations.writeStatus();
    })();
    index.onNamespace(() => associations.namespaceChanged());
  }
  try {
    await listen(health, config.metricsPort, config.host);
    await listen(server, config.port, config.host);
  } catch (err) {
    await watcher.stop();
    await associations?.stop();
    stack.stop();
    health.close();
    throw err;
  }
  accepting = true;
  reloader.start();
  // Changes count from the first moment this replica answers (its informers' lists are not changes).
  void (async () => {
    while (!ready() && stopping === undefined) await new Promise((resolve) => setTimeout(resolve, 100).unref());
    changes.begin();
    if (peering !== undefined && !prefetching) {
      membersChanged(peering.set);
      prefetching = true;
      prefetchOwned();
    }
  })();
  const port = (server.address() as { port: number }).port;
  log.info('podiam broker listening', { port, metricsPort: config.metricsPort, agentServiceAccount: `${config.agentServiceAccount.namespace}/${config.agentServiceAccount.name}`, certificateSubject: certificate.subject, notAfter: certificate.notAfter.toISOString() });

  return {
    port,
    shutdown(signal) {
      stopping ??= (async () => {
        log.info('podiam broker stopping', { signal });
        // Not ready first, still answering for --shutdown-delay (the Service drops this replica;
        // agents that still ask get "not ready" and ask another replica).
        accepting = false;
        changes.close();
        await new Promise((resolve) => setTimeout(resolve, config.shutdownDelayMs));
        reloader.stop();
        await close(server, 10_000);
        await close(health, 1_000);
        await watcher.stop();
        await associations?.stop();
        bucket.stop();
        stack.stop();
        clearInterval(membership);
        peering?.client.close();
        log.info('podiam broker stopped');
      })();
      return stopping;
    },
  };
}

/** The replicas' shared cache: who they are (this replica's pod informer), how to ask them, and the assumer wrapper. */
async function startPeering(config: BrokerConfig, peers: PeersConfig, index: PodIndex, log: Logger, brokerMetrics: ReturnType<typeof createBrokerMetrics>) {
  const ca = await readFile(peers.caFile).catch((err: NodeJS.ErrnoException) => {
    throw new Error(`cannot read --peer-ca-file ${peers.caFile}: ${err.code ?? err.message}`);
  });
  if (certificateCount(ca) === 0) throw new Error(`--peer-ca-file ${peers.caFile} holds no PEM CA certificate (the brokers' CA: ca.crt of their serving certificate's Secret)`);
  // The token another replica will be shown: this replica's own, for the agents' audience. A wrong
  // mount would make every forward fail and every replica call STS again, silently: refuse to start.
  const token = await readFile(peers.tokenFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new Error(`cannot read --peer-token-file ${peers.tokenFile}: ${err.code ?? err.message}`);
  });
  let claims: BoundClaims;
  try {
    claims = claimsOf(token.trim(), config.agentAudience, Date.now());
  } catch (err) {
    throw new Error(`--peer-token-file ${peers.tokenFile} is not a token the other replicas accept: ${(err as Error).message} (a projected ServiceAccount token with audience --agent-audience=${config.agentAudience})`);
  }
  if (claims.namespace !== peers.namespace || claims.serviceAccount !== peers.serviceAccount || claims.podName !== peers.podName) {
    throw new Error(`--peer-token-file ${peers.tokenFile} is ServiceAccount ${claims.namespace}/${claims.serviceAccount}'s, bound to pod ${claims.podName}: --peers=${peers.namespace}/${peers.serviceAccount} and --pod-name=${peers.podName} say this replica is another`);
  }
  const set = new PeerSet({ namespace: peers.namespace, serviceAccount: peers.serviceAccount, self: peers.podName, pods: index });
  const client = new PeerClient({
    port: config.port,
    ca: watchedCaFile('--peer-ca-file', peers.caFile, ca, log),
    tlsName: peers.tlsName,
    tokenFile: peers.tokenFile,
  });
  // Credentials from the owner must outlive this replica's refresh lead, with a minute to spare, or it would refresh them at once.
  const minValidMs = refreshLeadMs(config.sessionTtlSeconds * 1000) + 60_000;
  const forwarding = new PeerForwarding({ peers: set, client, minValidMs, log, onForward: (outcome) => brokerMetrics.peerFetches.inc({ outcome }) });
  brokerMetrics.setPeers(() => set.others().length);
  log.info('replicas share one cache', { peers: `${peers.namespace}/${peers.serviceAccount}`, podName: peers.podName, tlsName: peers.tlsName });
  return { set, client, forwarding };
}

async function listen(server: Server, port: number, host: string | undefined): Promise<void> {
  server.listen(port, host);
  await once(server, 'listening');
}

function close(server: Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.closeAllConnections();
      resolve();
    }, graceMs);
    timer.unref();
    const idle = setInterval(() => server.closeIdleConnections(), 50);
    server.close(() => {
      clearTimeout(timer);
      clearInterval(idle);
      resolve();
    });
    server.closeIdleConnections();
  });
}
