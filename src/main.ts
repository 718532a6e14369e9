/**
 * Wiring only: config -> dependencies -> iptables -> informers -> listen. Shutdown in reverse.
 */
import type http from 'node:http';
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { describeHolder, findPortHolder } from './port-holder.js';
import type { Config } from './config.js';
import { describeConfig } from './config.js';
import { BrokerCredentials } from './credentials/broker-client.js';
import type { BrokerClientConfig } from './credentials/broker-flags.js';
import { BrokerTransport } from './credentials/broker-transport.js';
import type { LocalStackDeps } from './credentials/local-stack.js';
import { createLocalStack, rolePolicyOf } from './credentials/local-stack.js';
import type { CredentialSource } from './credentials/source.js';
import { ConfigError, PodiamError } from './errors.js';
import { Callers, nodeAddresses } from './imds/callers.js';
import { CredentialRoutes } from './imds/credentials.js';
import { Passthrough, baseArnFromIamInfo } from './imds/passthrough.js';
import type { Interception } from './iptables.js';
import { EventRecorder } from './kube/events.js';
import { PodIndex } from './kube/pod-index.js';
import { createKubeConfig } from './kube/api.js';
import { KubeWatcher } from './kube/pods.js';
import type { TokenIdentity } from './token/start.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { createMetrics } from './metrics.js';
import type { PodInfo, RolePolicy } from './roles.js';
import type { Health } from './server.js';
import { createMetricsServer, createServer } from './server.js';

export interface Podiam {
  /** The address the metadata server listens on. */
  readonly address: AddressInfo;
  readonly metrics: Metrics;
  /** Stop accepting, finish in-flight requests, stop watching. The iptables rules stay (podiam --cleanup removes them). */
  shutdown(reason: string): Promise<void>;
}

export async function start(config: Config, log: Logger, signal?: AbortSignal): Promise<Podiam> {
  // The gauges read the index and the credentials held at scrape time (both exist before anything listens).
  const metrics = createMetrics({
    podsIndexed: () => index.ipCount(),
    cacheEntries: () => credentials.size(),
    credentialsMinRemainingMs: () => credentials.servedRemainingMs(),
    ready: () => health().ready,
  });
  log.info('podiam starting', { config: describeConfig(config) });
  if (config.ignoredFlags.length > 0) {
    log.warn('kube2iam flags accepted and ignored (podiam --help says why for each)', { flags: config.ignoredFlags });
  }

  const passthrough = new Passthrough({ host: config.metadataHost, port: config.metadataPort, timeoutMs: config.metadataTimeoutMs });
  const index = new PodIndex();
  const kc = createKubeConfig(config);
  // In broker mode this node watches its own pods only: roles are decided by the broker, which
  // watches namespaces and ServiceAccounts for the cluster.
  const watcher = new KubeWatcher(kc, index, { node: config.node, log, metrics, watchDeadlineMs: config.watchDeadlineMs, podsOnly: config.broker !== undefined });
  const events = config.events ? new EventRecorder(kc, { log, metrics, component: 'podiam', host: config.node }) : undefined;
  // Where the IMDS and token paths get a pod's role and credentials: decided and assumed on this
  // node (standalone), or asked of the broker (--broker: no STS, no AWS SDK, no AWS credentials here).
  const credentials = config.broker !== undefined ? await brokerSource(config.broker, metrics, log) : localSource(config, await rolePolicy(config, passthrough), { index, metrics, log, events, node: config.node });
  const source: CredentialSource = credentials.source;
  index.onPodServable((pod) => {
    // Prefetch: a new pod's first request should find its credentials already in memory.
    // Denials are reported when the pod asks. Only for this node's pods: watching the whole
    // cluster (no --node), prefetching would assume every role of every pod.
    if (config.node !== undefined) source.prefetch(pod);
  });
  if (credentials.forget !== undefined) {
    const forget = credentials.forget;
    index.onPodGone((pod) => forget(pod.uid));
  }

  // A denied pod, on either path: a log line and an Event on the pod (`kubectl describe pod` says why).
  const reportDenial = (pod: PodInfo, err: Error, fields: Record<string, string>): void => {
    if (!(err instanceof PodiamError)) return;
    log.info('credentials denied', { ...fields, pod: `${pod.namespace}/${pod.name}`, code: err.code, reason: err.message });
    events?.denied(pod, err.code, err.message);
  };

  const routes = new CredentialRoutes({
    pods: { synced: () => watcher.synced(), lookup: (ip) => index.lookup(ip), waitFor: (ip, ms) => index.waitFor(ip, ms) },
    source,
    podWaitMs: config.podWaitMs,
    onPodWait: (outcome) => metrics.podWaits.inc({ outcome }),
    onDenied: (pod, err) => reportDenial(pod, err, {}),
  });

  // The node itself: loopback and its host IPs (one per family).
  const callers = new Callers({
    isNodeAddress: nodeAddresses([config.hostIp4, config.hostIp6].filter((ip): ip is string => ip !== undefined)),
    pods: { synced: () => watcher.synced(), waitFor: (ip, ms) => index.waitFor(ip, ms) },
    podWaitMs: config.podWaitMs,
  });

  let interception: Interception | undefined;
  let rulesEnsured = false;
  const health = (): Health => {
    const kube = watcher.states();
    // With --iptables, not ready until every family's rules are in (ensure() has returned): the
    // informers start first, so they can be synced while the rules are still going in.
    const ready = watcher.synced() && (!config.iptables || (rulesEnsured && interception !== undefined && interception.ready()));
    return { ready, pods: kube.pods, namespaces: kube.namespaces, serviceaccounts: kube.serviceaccounts, watchTimeouts: watcher.watchTimeouts(), ...(interception === undefined ? {} : { iptables: interception.state() }) };
  };

  const serverDeps = {
    credentials: routes,
    callers,
    passthrough,
    metrics,
    log,
    health,
    serveMetrics: config.metricsPort === config.appPort,
    hostIp: config.hostIp,
    allowSignedIdentity: config.allowSignedIdentity,
    debugStore: config.debug ? () => ({ pods: index.snapshot(), credentials: credentials.snapshot(), informers: watcher.states() }) : undefined,
  };
  const server = createServer(serverDeps);
  const metricsServer = config.metricsPort === config.appPort ? undefined : createMetricsServer(metrics, health);

  // The informers (and with them the first prefetches) start now, while the sockets bind and the
  // iptables rule goes in: the first credentials answer waits for the pod list and STS, not for both in turn.
  watcher.start();

  // kube2iam listens on every interface (#152): podiam only on --host-ip when given.
  const address = await listenWhenFree(server, config.appPort, config.hostIp, log, metrics, signal).catch(async (err: unknown) => {
    await watcher.stop();
    throw err;
  });
  if (metricsServer) await listen(metricsServer, config.metricsPort, config.hostIp);
  // The node's IPv6 address too (--host-ip=<v4>,<v6>): IPv6 pods are DNAT'd there. Its own
  // server, so passthrough uses the family the pod used (the real service's IPv6 endpoint).
  const v6 = await listenIpv6(config, server, log, (passthrough6) => createServer({ ...serverDeps, passthrough: passthrough6 }));

  let token: TokenIdentity | undefined;
  if (config.tokenIdentity) {
    // The token path is its own chunk of the bundle (scripts/build.mjs): read only when asked for.
    const [{ startTokenIdentity }, { createTokenReviewer }] = await Promise.all([import('./token/start.js'), import('./kube/token-review.js')]);
    token = await startTokenIdentity(config, {
      review: createTokenReviewer(kc),
      index,
      synced: () => watcher.synced(),
      source,
      metrics,
      log,
      onDenied: (pod, err) => reportDenial(pod, err, { path: 'token' }),
      listen,
      close: closeServer,
    }).catch(async (err: unknown) => {
      await closeServer(server, 0);
      if (metricsServer) await closeServer(metricsServer, 0);
      await watcher.stop();
      throw err;
    });
  }

  if (config.iptables) {
    // Loaded only when asked for: without --iptables the process runner (execa) is never loaded.
    const { createInterception } = await import('./iptables.js');
    interception = createInterception(config, { log, metrics });
    try {
      await interception.ensure();
    } catch (err) {
      await closeServer(server, 0);
      if (v6) await closeServer(v6.server, 0);
      if (metricsServer) await closeServer(metricsServer, 0);
      await watcher.stop();
      throw err;
    }
    rulesEnsured = true;
    interception.startReconcile(config.iptablesReconcileMs);
  }

  log.info('podiam listening', { address: `${address.address}:${address.port}`, node: config.node ?? '(all nodes)', metadata: passthrough.target });

  let stopping: Promise<void> | undefined;
  return {
    address,
    metrics,
    shutdown(reason: string) {
      stopping ??= (async () => {
        log.info('podiam shutting down', { reason });
        // The rules stay: while no podiam runs, pods' requests are DNAT'd to a closed port and
        // refused at once (fail closed), and the next podiam adopts them. Only --cleanup removes
        // them (kube-proxy's convention). Stop reconciling, then drain in-flight requests.
        if (interception) await interception.stop();
        await Promise.all([closeServer(server, 10_000), v6 ? closeServer(v6.server, 10_000) : undefined]);
        v6?.passthrough.close();
        await token?.close();
        if (metricsServer) await closeServer(metricsServer, 1_000);
        await watcher.stop();
        credentials.stop();
        passthrough.close();
        events?.stop();
        log.info('podiam stopped');
      })();
      return stopping;
    },
  };
}

async function rolePolicy(config: Config, passthrough: Passthrough): Promise<RolePolicy> {
  let baseRoleArn = config.baseRoleArn;
  if (config.autoDiscoverBaseArn) {
    let info: string;
    try {
      info = await passthrough.fetch('/latest/meta-data/iam/info');
    } catch (err) {
      throw new ConfigError('--auto-discover-base-arn', `could not read iam/info from ${passthrough.target}: ${(err as Error).message}`);
    }
    baseRoleArn = baseArnFromIamInfo(info);
    if (baseRoleArn === undefined) throw new ConfigError('--auto-discover-base-arn', `iam/info from ${passthrough.target} has no instance-profile ARN; set --base-role-arn instead`);
  }
  return rolePolicyOf(config, baseRoleArn);
}

/** What the agent holds of credentials, from either source. */
interface AgentCredentials {
  readonly source: CredentialSource;
  size(): number;
  servedRemainingMs(): number | undefined;
  snapshot(): unknown;
  /** A pod left this node (the broker client drops its answers; the local cache refreshes only what live pods use). */
  readonly forget?: (podUid: string) => void;
  stop(): void;
}

/** Standalone: roles decided and assumed on this node. */
function localSource(config: Config, policy: RolePolicy, deps: LocalStackDeps): AgentCredentials {
  const stack = createLocalStack(config, policy, deps);
  return { source: stack.source, size: () => stack.cache.size(), servedRemainingMs: () => stack.cache.servedRemainingMs(), snapshot: () => stack.cache.snapshot(), stop: () => stack.stop() };
}

/** Broker mode: the broker's answers, kept in memory. */
async function brokerSource(broker: BrokerClientConfig, metrics: Metrics, log: Logger): Promise<AgentCredentials> {
  let ca: Buffer;
  try {
    ca = await readFile(broker.caFile);
  } catch (err) {
    throw new ConfigError('--broker-ca-file', `cannot read ${broker.caFile}: ${(err as Error).message}`);
  }
  const transport = new BrokerTransport({
    urls: broker.urls,
    ca,
    tokenFile: broker.tokenFile,
    timeoutMs: broker.timeoutMs,
    metrics: {
      up: (value) => metrics.brokerUp.set(value),
      request: (outcome, seconds) => {
        metrics.brokerRequests.inc({ outcome });
        metrics.brokerRequestSeconds.observe(seconds);
      },
    },
  });
  const client = new BrokerCredentials({
    broker: transport,
    onFailed: (pod, err, retryInMs) => log.warn('could not get credentials from the broker', { pod, code: (err as { code?: string }).code, error: err.message, retryInMs }),
  });
  log.info('broker mode: credentials come from the broker', { brokers: broker.urls });
  return { source: client, size: () => client.size(), servedRemainingMs: () => client.servedRemainingMs(), snapshot: () => client.snapshot(), forget: (uid) => client.forget(uid), stop: () => client.stop() };
}

/**
 * Migration from kube2iam: its pod can still hold the port when podiam starts on a node. Instead of
 * exiting (and crash-looping), say who holds it and try again, backing off to every 5 s, until it
 * is free or podiam is told to stop.
 */
async function listenWhenFree(server: http.Server, port: number, host: string | undefined, log: Logger, metrics: Metrics, signal: AbortSignal | undefined): Promise<AddressInfo> {
  let delayMs = 250;
  let lastReportMs = 0;
  for (let attempt = 1; ; attempt++) {
    try {
      const address = await listen(server, port, host);
      if (attempt > 1) log.info('app port is free now: listening', { port, attempts: attempt });
      return address;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
    metrics.listenRetries.inc();
    if (Date.now() - lastReportMs >= 30_000) {
      lastReportMs = Date.now();
      const holder = describeHolder(await findPortHolder(port).catch(() => undefined));
      log.warn('app port is taken; waiting for it (during a migration from kube2iam, remove kube2iam from this node)', { port, host: host ?? '0.0.0.0', heldBy: holder, retryInMs: delayMs });
    }
    await abortableSleep(delayMs, signal);
    delayMs = Math.min(5_000, delayMs * 2);
  }
}

function abortableSleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new StartAborted());
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new StartAborted());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Start-up was interrupted by a signal while it waited (for the port): not a failure. */
export class StartAborted extends Error {
  constructor() {
    super('start-up interrupted by a signal');
    this.name = 'StartAborted';
  }
}

/** The IPv6 listener, when --host-ip has an IPv6 address; none (logged once) otherwise. */
async function listenIpv6(
  config: Config,
  v4: http.Server,
  log: Logger,
  build: (passthrough: Passthrough) => http.Server,
): Promise<{ server: http.Server; passthrough: Passthrough } | undefined> {
  if (config.hostIp6 === undefined || config.hostIp6 === config.hostIp) {
    if (config.iptables && config.metadataHost6 !== undefined) {
      log.warn('no IPv6 --host-ip: IPv6 pods are not served (with the guard they are refused, never given the node role); IPv4 works', { hostIp: config.hostIp });
    }
    return undefined;
  }
  const passthrough = new Passthrough({
    host: config.metadataHost6 ?? config.metadataHost,
    port: config.metadataHost6 !== undefined ? config.metadataPort6 : config.metadataPort,
    timeoutMs: config.metadataTimeoutMs,
  });
  const server = build(passthrough);
  try {
    await listen(server, config.appPort, config.hostIp6);
  } catch (err) {
    passthrough.close();
    log.warn('cannot listen on the IPv6 --host-ip: IPv6 pods are not served; IPv4 works', { hostIp6: config.hostIp6, error: (err as Error).message });
    if (!v4.listening) throw err;
    return undefined;
  }
  return { server, passthrough };
}

function listen(server: http.Server, port: number, host: string | undefined): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host: host ?? '0.0.0.0' }, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

/**
 * Stop accepting; let in-flight requests finish; force after graceMs. Keep-alive connections are
 * closed as soon as they go idle (a finished response would otherwise keep one open until forced).
 */
function closeServer(server: http.Server, graceMs: number): Promise<void> {
  if (!server.listening) return Promise.resolve();
  return new Promise((resolve) => {
    const force = setTimeout(() => server.closeAllConnections(), graceMs);
    const idle = setInterval(() => server.closeIdleConnections(), 50);
    server.close(() => {
      clearTimeout(force);
      clearInterval(idle);
      resolve();
    });
    server.closeIdleConnections();
  });
}
