/**
 * Wiring only: config -> dependencies -> iptables -> informers -> listen. Shutdown in reverse.
 */
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CredentialCache, cacheKey } from './aws/credential-cache.js';
import type { RoleAssumer } from './aws/sts.js';
import { createStsAssumer } from './aws/sts.js';
import { roleScoped } from './aws/session-scope.js';
import { AllowedRolesAudit } from './allowed-roles-audit.js';
import { describeHolder, findPortHolder } from './port-holder.js';
import { drain, listen, reusePortSupported } from './listeners.js';
import { otherListeners, waitForSuccessor } from './handover.js';
import type { Config } from './config.js';
import { describeConfig } from './config.js';
import { ConfigError, PodiamError } from './errors.js';
import { Callers, nodeAddresses } from './imds/callers.js';
import { CredentialRoutes } from './imds/credentials.js';
import { renderCredentials } from './imds/format.js';
import { Passthrough, baseArnFromIamInfo } from './imds/passthrough.js';
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
import type { PodInfo, RolePolicy } from './roles.js';
import { RoleResolver, toRoleArn } from './roles.js';
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
  // The gauges read the index and the cache at scrape time (both exist before anything listens).
  const metrics = createMetrics({
    podsIndexed: () => index.ipCount(),
    cacheEntries: () => cache.size(),
    credentialsMinRemainingMs: () => cache.servedRemainingMs(),
    ready: () => health().ready,
  });
  log.info('podiam starting', { config: describeConfig(config) });
  if (!reusePortSupported()) {
    log.warn(`Node ${process.versions.node} cannot share the app port (listen reusePort needs Node >= 22.12): during a rolling update the new podiam waits for the old one to exit, and pods are refused in between; roll with maxSurge: 0`);
  }
  if (config.ignoredFlags.length > 0) {
    log.warn('kube2iam flags accepted and ignored (podiam --help says why for each)', { flags: config.ignoredFlags });
  }

  const passthrough = new Passthrough({ host: config.metadataHost, port: config.metadataPort, timeoutMs: config.metadataTimeoutMs });
  const policy = await rolePolicy(config, passthrough, log);
  // --session-scope=role: pods with the same role and external id share one session (kube2iam's economy).
  const roles = config.sessionScope === 'role' ? roleScoped(new RoleResolver(policy), config.node) : new RoleResolver(policy);
  const roleOf = (pod: PodInfo) => roles.resolve(pod, index.namespace(pod.namespace), index.serviceAccountOf(pod));
  if (config.sessionTtlSeconds < 1800) {
    // Refresh happens at half-life for short sessions, so served credentials have under 15 min
    // left and botocore re-reads them on every call (cheap here, from memory, but noisy).
    log.warn('--iam-role-session-ttl under 30m: credentials will be served with less than 15 minutes left, and SDKs will refresh them often', { sessionTtlSeconds: config.sessionTtlSeconds });
  }

  const sts = instrument(createStsAssumer({ region: config.stsRegion, sessionTtlSeconds: config.sessionTtlSeconds, attemptTimeoutMs: config.stsTimeoutMs }), metrics);
  const index = new PodIndex();
  const cache = new CredentialCache({
    assumer: sts,
    render: renderCredentials,
    refusalTtlMs: config.stsRefusalTtlMs,
    isWanted: (request) => {
      const key = cacheKey(request);
      for (const pod of index.allPods()) {
        const role = roleOf(pod);
        if (!(role instanceof Error) && cacheKey(role) === key) return true;
      }
      return false;
    },
    events: {
      issued: (c, cause) => {
        metrics.credentialsIssued.inc({ cause });
        // The audit line: who got which role until when. Never the secret or the token.
        log.info('credentials issued', { pod: c.request.pod, roleArn: c.request.roleArn, sessionName: c.request.sessionName, accessKeyId: c.accessKeyId, expiration: new Date(c.expirationMs).toISOString(), cause });
      },
      failed: (request, cause, err, retryInMs) => {
        metrics.refreshFailures.inc({ cause });
        log.warn('could not get credentials', { pod: request.pod, roleArn: request.roleArn, cause, error: err.message, detail: (err as { detail?: string }).detail, retryInMs });
      },
      lookup: (result) => metrics.countLookup(result),
    },
  });

  const kc = createKubeConfig(config);
  const watcher = new KubeWatcher(kc, index, { node: config.node, log, metrics, watchDeadlineMs: config.watchDeadlineMs });
  const events = config.events ? new EventRecorder(kc, { log, metrics, component: 'podiam', host: config.node }) : undefined;
  const audit = new AllowedRolesAudit(policy, {
    warn: (message, fields) => log.warn(message, fields),
    invalidEntry: (namespace) => metrics.allowedRolesInvalid.inc({ namespace }),
    unanchoredMatch: (namespace) => metrics.allowedRolesUnanchored.inc({ namespace }),
    namespaceEvent: events === undefined ? undefined : (namespace, reason, message) => events.namespaceWarning(namespace, reason, message),
  });
  const allowedRolesOf = (namespace: string): string[] => {
    const arns: string[] = [];
    for (const pod of index.allPods()) {
      if (pod.namespace !== namespace) continue;
      const role = roleOf(pod);
      if (!(role instanceof Error)) arns.push(role.roleArn);
    }
    return arns;
  };
  if (audit.active) {
    index.onNamespace((ns) => audit.check(ns, allowedRolesOf(ns.name)));
    index.onPodServable((pod) => {
      const ns = index.namespace(pod.namespace);
      const role = roleOf(pod);
      if (ns !== undefined && !(role instanceof Error)) audit.check(ns, [role.roleArn]);
    });
  }
  index.onPodServable((pod) => {
    // Prefetch: a new pod's first request should find its credentials already in memory.
    // Denials are reported when the pod asks. Only for this node's pods: watching the whole
    // cluster (no --node), prefetching would assume every role of every pod.
    if (config.node === undefined) return;
    const role = roleOf(pod);
    if (!(role instanceof Error)) cache.prefetch(role);
  });

  // A denied pod, on either path: a log line and an Event on the pod (`kubectl describe pod` says why).
  const reportDenial = (pod: PodInfo, err: Error, fields: Record<string, string>): void => {
    if (!(err instanceof PodiamError)) return;
    log.info('credentials denied', { ...fields, pod: `${pod.namespace}/${pod.name}`, code: err.code, reason: err.message });
    events?.denied(pod, err.code, err.message);
  };

  const routes = new CredentialRoutes({
    pods: { synced: () => watcher.synced(), lookup: (ip) => index.lookup(ip), waitFor: (ip, ms) => index.waitFor(ip, ms), namespace: (n) => index.namespace(n) },
    cache,
    roles: { resolve: (pod, ns) => roles.resolve(pod, ns, index.serviceAccountOf(pod)) },
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
    const ready = watcher.synced() && (!config.iptables || (rulesEnsured && interception !== undefined && interception.ready()));
    const iface = hostInterfaces?.state();
    return { ready, pods: kube.pods, namespaces: kube.namespaces, serviceaccounts: kube.serviceaccounts, watchTimeouts: watcher.watchTimeouts(), ...(interception === undefined ? {} : { iptables: interception.state() }), ...(iface === undefined ? {} : { hostInterface: { pattern: iface.pattern, interfacesMatching: iface.matching, podIps: iface.podIps, ...(iface.examples.length > 0 ? { notIntercepted: iface.examples } : {}) } }) };
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
    debugStore: config.debug ? () => ({ pods: index.snapshot(), credentials: cache.snapshot(), informers: watcher.states() }) : undefined,
  };
  const server = createServer(serverDeps);
  const metricsServer = config.metricsPort === config.appPort ? undefined : createMetricsServer(metrics, health);

  // The informers (and with them the first prefetches) start now, while the sockets bind and the
  // iptables rule goes in: the first credentials answer waits for the pod list and STS, not for both in turn.
  watcher.start();

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
    v6 = await listenIpv6(config, server, log, (passthrough6) => createServer({ ...serverDeps, passthrough: passthrough6 }));
    if (config.tokenIdentity) {
      // The token path is its own chunk of the bundle (scripts/build.mjs): read only when asked for.
      const [{ startTokenIdentity }, { createTokenReviewer }] = await Promise.all([import('./token/start.js'), import('./kube/token-review.js')]);
      token = await startTokenIdentity(config, {
        review: createTokenReviewer(kc),
        index,
        synced: () => watcher.synced(),
        roleOf,
        cache,
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
    await watcher.stop();
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
    await untilAborted(watcher.whenSynced(), signal).catch(failed);
    address = await listenAll().catch(failed);
  }

  // --remove-startup-taint: pods may come to this node once podiam intercepts (the rules are in
  // by now; the informers may still be listing).
  const startupTaint = config.removeStartupTaint !== undefined && config.node !== undefined ? new StartupTaint(kc, { node: config.node, key: config.removeStartupTaint, log }) : undefined;
  if (startupTaint) void watcher.whenSynced().then(() => startupTaint.remove());
  if (hostInterfaces) {
    void watcher.whenSynced().then(async () => {
      await hostInterfaces.check();
      hostInterfaces.start(config.iptablesReconcileMs);
    });
  }

  log.info('podiam listening', { address: `${address!.address}:${address!.port}`, node: config.node ?? '(all nodes)', metadata: passthrough.target });

  let stopping: Promise<void> | undefined;
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
        await watcher.stop();
        cache.stop();
        sts.destroy();
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
  });
}

function instrument(sts: RoleAssumer & { destroy(): void }, metrics: Metrics): RoleAssumer & { destroy(): void } {
  return {
    async assume(request, urgency) {
      const end = metrics.stsSeconds.startTimer();
      try {
        const creds = await sts.assume(request, urgency);
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
