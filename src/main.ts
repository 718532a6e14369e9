/**
 * Wiring only: config -> dependencies -> iptables -> informers -> listen. Shutdown in reverse.
 */
import type http from 'node:http';
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { resolveStsRegion } from './aws/sts-region.js';
import { Associations } from './associations.js';
import { describeHolder, findPortHolder } from './port-holder.js';
import { drain, listen, reusePortSupported } from './listeners.js';
import { otherListeners, waitForSuccessor } from './handover.js';
import type { Config } from './config.js';
import { FULL_CHECK_EVERY, describeConfig } from './config.js';
import { BrokerChanges } from './credentials/broker-changes.js';
import { BrokerCredentials } from './credentials/broker-client.js';
import type { BrokerClientConfig } from './credentials/broker-flags.js';
import { certificateCount, watchedCaFile } from './ca-file.js';
import { BrokerTransport } from './credentials/broker-transport.js';
import type { LocalStackDeps } from './credentials/local-stack.js';
import { createLocalStack, rolePolicyOf } from './credentials/local-stack.js';
import type { CredentialSource } from './credentials/source.js';
import { ConnectionLimiter } from './connection-limits.js';
import { ConfigError, PodiamError } from './errors.js';
import { Callers, callerId, nodeAddresses } from './imds/callers.js';
import { CredentialRoutes } from './imds/credentials.js';
import { Passthrough, baseArnFromIamInfo } from './imds/passthrough.js';
import { ImdsTokenPolicy, PROBE_PATH } from './imds/token-policy.js';
import { TokenBroker } from './imds/tokens.js';
import type { Interception } from './iptables.js';
import { EventRecorder } from './kube/events.js';
import { PodIndex } from './kube/pod-index.js';
import { createKubeConfig } from './kube/api.js';
import { KubeWatcher } from './kube/pods.js';
import { StartupTaint } from './kube/startup-taint.js';
import { HostInterfaceMonitor } from './host-interfaces.js';
import type { TokenIdentity } from './token/start.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { createMetrics } from './metrics.js';
import type { PodInfo, RolePolicy, RoleResolver } from './roles.js';
import { annotationKeysOf } from './roles.js';
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
    informersOutOfSync: () => watcher.outOfSync(),
  });
  log.info('podiam starting', { config: describeConfig(config) });
  if (!reusePortSupported()) {
    log.warn(`Node ${process.versions.node} cannot share the app port (listen reusePort needs Node >= 22.12): during a rolling update the new podiam waits for the old one to exit, and pods are refused in between; roll with maxSurge: 0`);
  }
  if (config.ignoredFlags.length > 0) {
    log.warn('kube2iam flags accepted and ignored (podiam --help says why for each)', { flags: config.ignoredFlags });
  }

  const passthrough = new Passthrough({ host: config.metadataHost, port: config.metadataPort, timeoutMs: config.metadataTimeoutMs });
  // IMDSv1 follows the node (--imds-tokens=auto): probed while the rest starts, awaited before listening.
  const imdsTokens = new ImdsTokenPolicy({ mode: config.imdsTokens, probe: () => passthrough.statusWithoutToken(PROBE_PATH), log });
  const imdsTokensProbed = imdsTokens.start();
  const index = new PodIndex();
  const kc = createKubeConfig(config);
  // With --node, only the namespaces and ServiceAccounts of this node's pods (metadata only), each
  // watched from its first pod on. In broker mode this node watches its own pods only: roles are
  // decided by the broker, which watches namespaces and ServiceAccounts for the cluster.
  const watcher = new KubeWatcher(kc, index, {
    node: config.node,
    metadataScope: config.broker !== undefined ? 'none' : config.node === undefined ? 'all' : 'used',
    annotationKeys: annotationKeysOf(config),
    log,
    metrics,
    watchDeadlineMs: config.watchDeadlineMs,
  });
  // PodIdentityAssociations (unless --role-sources leaves them out): role resolution reads them as data.
  // In broker mode the broker reads them. The status verdict is the local resolver's (bound below).
  const associations = config.broker === undefined && (config.roleSources === undefined || config.roleSources.has('associations')) ? new Associations(kc, { log, metrics, watchDeadlineMs: config.watchDeadlineMs, namespace: (name) => index.namespace(name), check: (a, ns) => credentials.checkAssociation!(a, ns), decides: (a) => !config.namespaceRestrictions || config.node === undefined || index.namespace(a.namespace) !== undefined }) : undefined;
  const synced = (pod?: PodInfo): boolean => watcher.synced(pod) && (associations?.synced() ?? true);
  const stopWatching = async (): Promise<void> => {
    await watcher.stop();
    await associations?.stop();
  };
  let stopping: Promise<void> | undefined;
  // Status verdicts read namespaces: written once every informer has listed, again when a namespace changes.
  if (associations !== undefined) {
    void Promise.all([untilReady(watcher, () => stopping !== undefined), associations.whenSynced()]).then(() => associations.writeStatus());
    index.onNamespace(() => associations.namespaceChanged());
  }
  associations?.index.onChange((a) => {
    // Its pods' role changed: fetch ahead, as for a new pod.
    if (config.node !== undefined) for (const pod of index.allPods()) if (pod.namespace === a.namespace && (pod.serviceAccount ?? 'default') === a.serviceAccount) source.prefetch(pod);
  });
  const events = config.events ? new EventRecorder(kc, { log, metrics, component: 'podiam', host: config.node }) : undefined;
  // Where the IMDS and token paths get a pod's role and credentials: decided and assumed on this
  // node (standalone), or asked of the broker (--broker: no STS, no AWS SDK, no AWS credentials here).
  const credentials: AgentCredentials = config.broker !== undefined ? await brokerSource(config.broker, metrics, log) : await localSource(config, passthrough, { index, metrics, log, events, node: config.node, associationOf: associations === undefined ? undefined : (pod) => associations.of(pod) });
  const source: CredentialSource = credentials.source;
  index.onPodServable((pod) => {
    // Prefetch: a new pod's first request should find its credentials already in memory.
    // Denials are reported when the pod asks. Only for this node's pods: watching the whole
    // cluster (no --node), prefetching would assume every role of every pod.
    if (config.node !== undefined && watcher.synced(pod)) source.prefetch(pod);
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
    pods: { synced, ready: (ms, pod) => watcher.ready(ms, pod), lookup: (ip) => index.lookup(ip), waitFor: (ip, ms) => index.waitFor(ip, ms) },
    source,
    podWaitMs: config.podWaitMs,
    onPodWait: (outcome) => metrics.podWaits.inc({ outcome }),
    onDenied: (pod, err) => reportDenial(pod, err, {}),
  });

  // The node itself: loopback and its host IPs (one per family).
  const callers = new Callers({
    isNodeAddress: nodeAddresses([config.hostIp4, config.hostIp6].filter((ip): ip is string => ip !== undefined)),
    pods: { ready: (ms) => watcher.ready(ms), waitFor: (ip, ms) => index.waitFor(ip, ms) },
    podWaitMs: config.podWaitMs,
  });

  let interception: Interception | undefined;
  let rulesEnsured = false;
  // --iptables on one node: is --host-interface the interface its pods are behind? (host-interfaces.ts)
  const hostInterfaces = config.iptables && config.node !== undefined ? new HostInterfaceMonitor({
    pattern: config.hostInterface,
    podIps: () => [...index.allPods()].filter((p) => !p.hostNetwork).flatMap((p) => p.ips),
    log,
    report: (r) => {
      metrics.hostInterfacesMatching.set(r.matching);
      metrics.hostInterfacePodIps.set({ via: 'matching' }, r.podIps.matching);
      metrics.hostInterfacePodIps.set({ via: 'other' }, r.podIps.other);
    },
    nodeWarning: events === undefined ? undefined : (reason, message) => events.nodeWarning(config.node!, reason, message),
  }) : undefined;
  const health = (): Health => {
    const kube = watcher.states();
    // With --iptables, not ready until every family's rules are in (ensure() has returned): the
    // informers start first, so they can be synced while the rules are still going in.
    // Not ready either while an informer has been out of sync past --watch-deadline (its answers are 503).
    const ready = watcher.healthy() && (associations?.synced() ?? true) && (!config.iptables || (rulesEnsured && interception !== undefined && interception.ready()));
    const outOfSync = watcher.outOfSync();
    const iface = hostInterfaces?.state();
    // In broker mode only pods are watched here (the broker watches namespaces and ServiceAccounts).
    const informers = config.broker !== undefined ? { pods: kube.pods } : { pods: kube.pods, namespaces: kube.namespaces, serviceaccounts: kube.serviceaccounts };
    return { ready, ...informers, watchTimeouts: watcher.watchTimeouts(), ...(outOfSync.length === 0 ? {} : { outOfSync }), ...(interception === undefined ? {} : { iptables: interception.state() }), ...(iface === undefined ? {} : { hostInterface: { pattern: iface.pattern, interfacesMatching: iface.matching, podIps: iface.podIps, ...(iface.examples.length > 0 ? { notIntercepted: iface.examples } : {}) } }) };
  };

  // Pods' IMDSv2 tokens, shared by the IPv4 and IPv6 servers; a pod's go when the pod goes.
  const podTokens = new TokenBroker();
  index.onPodGone((pod) => podTokens.dropCaller(callerId(pod)));

  const serverDeps = {
    credentials: routes,
    tokens: podTokens,
    imdsTokensRequired: () => imdsTokens.required(),
    allowUserData: config.allowUserData,
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
  // One pod cannot hoard connections (fds, memory): caps per source IP and in all, shared by the IPv4 and IPv6 listeners.
  const connections = new ConnectionLimiter({ maxPerIp: config.maxConnectionsPerIp, max: config.maxConnections, onRefused: (limit) => metrics.connectionsRefused.inc({ listener: 'imds', limit }) });
  connections.attach(server);
  const metricsServer = config.metricsPort === config.appPort ? undefined : createMetricsServer(metrics, health);

  // The informers (and with them the first prefetches) start now, while the sockets bind and the
  // iptables rule goes in: the first credentials answer waits for the pod list and STS, not for both in turn.
  watcher.start();
  associations?.start();
  await imdsTokensProbed;

  // A rolling update's old podiam still holds the app port: join it (SO_REUSEPORT) only once
  // ready, so the kernel never hands a pod's request to a podiam not ready to answer (handover.ts).
  const successor = reusePortSupported() && (await otherListeners(config.appPort)) > 0;
  if (successor) log.info('another process listens on the app port (a rolling update\'s previous podiam): podiam listens once it is ready', { port: config.appPort });

  let address: AddressInfo | undefined;
  let v6: Awaited<ReturnType<typeof listenIpv6>>;
  let token: TokenIdentity | undefined;
  const closeListeners = async (): Promise<void> => {
    await closeServer(server, 0);
    if (v6) await closeServer(v6.server, 0);
    if (metricsServer) await closeServer(metricsServer, 0);
    await token?.close();
  };
  const listenAll = async (): Promise<AddressInfo> => {
    // kube2iam listens on every interface (#152): podiam only on --host-ip when given.
    const bound = await listenWhenFree(server, config.appPort, config.hostIp, log, metrics, signal);
    if (metricsServer) await listen(metricsServer, config.metricsPort, config.hostIp);
    // The node's IPv6 address too (--host-ip=<v4>,<v6>): IPv6 pods are DNAT'd there. Its own
    // server, so passthrough uses the family the pod used (the real service's IPv6 endpoint).
    v6 = await listenIpv6(config, server, log, (passthrough6) => {
      const server6 = createServer({ ...serverDeps, passthrough: passthrough6 });
      connections.attach(server6);
      return server6;
    });
    if (config.tokenIdentity) {
      // The token path is its own chunk of the bundle (scripts/build.mjs): read only when asked for.
      const [{ startTokenIdentity }, { createTokenReviewer }, { createSigningKeysFetcher }] = await Promise.all([import('./token/start.js'), import('./kube/token-review.js'), import('./kube/token-keys.js')]);
      token = await startTokenIdentity(config, {
        review: createTokenReviewer(kc),
        signingKeys: createSigningKeysFetcher(kc),
        index,
        informers: { synced, ready: (ms, pod) => watcher.ready(ms, pod) },
        source,
        metrics,
        log,
        onDenied: (pod, err) => reportDenial(pod, err, { path: 'token' }),
        listen,
        close: closeServer,
      });
    }
    return bound;
  };
  const failed = async (err: unknown): Promise<never> => {
    await closeListeners();
    await stopWatching();
    throw err;
  };

  if (!successor) address = await listenAll().catch(failed);

  if (config.iptables) {
    // Loaded only when asked for: without --iptables the process runner is never loaded.
    const { createInterception } = await import('./iptables.js');
    interception = createInterception(config, { log, metrics });
    await interception.ensure().catch(failed);
    rulesEnsured = true;
    interception.startReconcile(config.iptablesReconcileMs);
  }

  if (successor) {
    await untilAborted(untilReady(watcher, () => stopping !== undefined), signal).catch(failed);
    address = await listenAll().catch(failed);
  }

  // --remove-startup-taint: pods may come to this node once podiam intercepts (the rules are in
  // by now; the informers may still be listing).
  const startupTaint = config.removeStartupTaint !== undefined && config.node !== undefined ? new StartupTaint(kc, { node: config.node, key: config.removeStartupTaint, log }) : undefined;
  if (startupTaint) void untilReady(watcher, () => stopping !== undefined).then(() => startupTaint.remove());
  if (hostInterfaces) {
    void untilReady(watcher, () => stopping !== undefined).then(async () => {
      await hostInterfaces.check();
      // Every full check's period (50 s by default): pod changes are what move the answer, and
      // each brings a check within a second; reading the routes every round was most of an idle
      // agent's CPU once the ruleset watch took the rounds' processes away.
      hostInterfaces.start(config.iptablesReconcileMs * FULL_CHECK_EVERY);
      index.onPodServable(() => hostInterfaces.soon());
      index.onPodGone(() => hostInterfaces.soon());
    });
  }

  log.info('podiam listening', { address: `${address!.address}:${address!.port}`, node: config.node ?? '(all nodes)', metadata: passthrough.target });

  return {
    address: address!,
    metrics,
    shutdown(reason: string) {
      stopping ??= (async () => {
        log.info('podiam shutting down', { reason });
        // The rules stay: while no podiam runs, pods' requests are DNAT'd to a closed port and
        // refused at once (fail closed), and the next podiam adopts them. Only --cleanup removes
        // them (kube-proxy's convention). Stop reconciling, then drain in-flight requests.
        startupTaint?.stop();
        await hostInterfaces?.stop();
        if (interception) await interception.stop();
        // A rolling update's next podiam joins the port once ready: serve until it does.
        if (reusePortSupported() && config.shutdownHandoverMs > 0) {
          const handedOver = await waitForSuccessor(config.appPort, config.shutdownHandoverMs);
          log.info(handedOver ? 'another podiam listens on the app port: handing over' : 'no other podiam took the app port: stopping', { waitedUpToMs: config.shutdownHandoverMs });
        }
        await Promise.all([closeServer(server, 10_000), v6 ? closeServer(v6.server, 10_000) : undefined]);
        v6?.passthrough.close();
        await token?.close();
        if (metricsServer) await closeServer(metricsServer, 1_000);
        await stopWatching();
        credentials.stop();
        imdsTokens.stop();
        passthrough.close();
        events?.stop();
        log.info('podiam stopped');
      })();
      return stopping;
    },
  };
}

async function rolePolicy(config: Config, passthrough: Passthrough, log: Logger): Promise<RolePolicy> {
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
    log.info('discovered base role ARN', { baseRoleArn });
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
  /** Standalone: an association's status verdict, as this node's resolver decides it. */
  readonly checkAssociation?: RoleResolver['checkAssociation'];
  stop(): void;
}

/** Standalone: roles decided and assumed on this node, at STS's endpoint in the node's region unless one is configured. */
async function localSource(config: Config, passthrough: Passthrough, deps: Omit<LocalStackDeps, 'region' | 'stsEndpointOverride'>): Promise<AgentCredentials> {
  const policy = await rolePolicy(config, passthrough, deps.log);
  const region = await resolveStsRegion({ configured: config.stsRegion, configuredFrom: config.stsRegionFrom, fetch: (path) => passthrough.fetch(path), metadataTarget: passthrough.target });
  const stack = createLocalStack(config, policy, { ...deps, region, stsEndpointOverride: config.stsEndpointOverride });
  return { source: stack.source, size: () => stack.cache.size(), servedRemainingMs: () => stack.cache.servedRemainingMs(), snapshot: () => stack.cache.snapshot(), checkAssociation: (a, ns) => stack.resolver.checkAssociation(a, ns), stop: () => stack.stop() };
}

/** Broker mode: the broker's answers, kept in memory. */
async function brokerSource(broker: BrokerClientConfig, metrics: Metrics, log: Logger): Promise<AgentCredentials> {
  let ca: Buffer;
  try {
    ca = await readFile(broker.caFile);
  } catch (err) {
    throw new ConfigError('--broker-ca-file', `cannot read ${broker.caFile}: ${(err as Error).message}`);
  }
  if (certificateCount(ca) === 0) throw new ConfigError('--broker-ca-file', `${broker.caFile} holds no PEM CA certificate (the broker's CA: ca.crt of its serving certificate's Secret)`);
  const transport = new BrokerTransport({
    urls: broker.urls,
    ca: watchedCaFile('--broker-ca-file', broker.caFile, ca, log),
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
  // What this node cannot see (namespaces, ServiceAccounts, associations) comes as it changes.
  const changes = new BrokerChanges(transport, (list, reset) => client.policyChanged(list, reset), log);
  changes.start();
  log.info('broker mode: credentials come from the broker', { brokers: broker.urls });
  return {
    source: client,
    size: () => client.size(),
    servedRemainingMs: () => client.servedRemainingMs(),
    snapshot: () => client.snapshot(),
    forget: (uid) => client.forget(uid),
    stop: () => {
      changes.stop();
      client.stop();
    },
  };
}

/**
 * Resolves once the informers have first synced. Polls with an unref'd timer, so a start-up that
 * failed meanwhile (or a shutdown) never waits on it, and it never keeps the process alive.
 */
async function untilReady(watcher: KubeWatcher, stopped: () => boolean): Promise<void> {
  while (!stopped() && !watcher.synced()) {
    await new Promise((resolve) => setTimeout(resolve, 100).unref());
  }
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

/** `promise`, or StartAborted as soon as `signal` aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) return reject(new StartAborted());
    const onAbort = (): void => reject(new StartAborted());
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
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

/** Stop accepting; in-flight requests finish; keep-alive connections close without a race (listeners.ts). */
function closeServer(server: http.Server, graceMs: number): Promise<void> {
  return drain(server, { graceMs });
}
