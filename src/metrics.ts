/** Every metric podiam exports, on its own prom-client registry (no global state). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type Metrics = ReturnType<typeof createMetrics>;

export interface MetricsOptions {
  readonly defaultMetrics?: boolean;
  /** Read at scrape time, so these gauges are never stale. */
  readonly podsIndexed?: () => number;
  readonly cacheEntries?: () => number;
  /** Milliseconds left on the soonest-expiring credentials served, undefined when none. */
  readonly credentialsMinRemainingMs?: () => number | undefined;
  /** What /readyz answers (true: 200). */
  readonly ready?: () => boolean;
  /** Informers not in sync with the API server, and for how many seconds. */
  readonly informersOutOfSync?: () => ReadonlyArray<{ readonly resource: string; readonly seconds: number }>;
}

export type LookupResult = 'hit' | 'miss' | 'stale';

export function createMetrics(options: MetricsOptions = {}) {
  const pendingLookups: Record<LookupResult, number> = { hit: 0, miss: 0, stale: 0 };
  const cacheLookups = new Counter({
    name: 'podiam_credential_cache_lookups_total',
    help: 'Credential cache lookups by result (hit, miss, stale)',
    labelNames: ['result'] as const,
    registers: [],
    collect() {
      for (const result of ['hit', 'miss', 'stale'] as const) {
        if (pendingLookups[result] > 0) this.inc({ result }, pendingLookups[result]);
        pendingLookups[result] = 0;
      }
    },
  });
  const registry = new Registry();
  // The event-loop delay histogram samples every second, not prom-client's default 10 ms: the
  // 10 ms timer alone cost 5 ms of CPU per second of an idle podiam, more than all of its own
  // work (scripts/bench/idle-cpu.mjs). A blocked loop still shows; its quantiles are coarser.
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'podiam_', eventLoopMonitoringPrecision: 1000 });
  const r = [registry];
  registry.registerMetric(cacheLookups);
  const requests = new Counter({ name: 'podiam_http_requests_total', help: 'Metadata requests by route and status code', labelNames: ['route', 'code'] as const, registers: r });
  const requestSeconds = new Histogram({
    name: 'podiam_http_request_duration_seconds',
    help: 'Metadata request latency by route',
    labelNames: ['route'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: r,
  });
  return {
    registry,
    requests,
    requestSeconds,
    /** requests.inc({ route, code }) and requestSeconds.observe({ route }, seconds), cheaply: once per request. */
    observeRequest: requestRecorder(requests, requestSeconds),
    stsCalls: new Counter({ name: 'podiam_sts_assume_role_total', help: 'STS AssumeRole calls by outcome', labelNames: ['outcome'] as const, registers: r }),
    stsSeconds: new Histogram({ name: 'podiam_sts_assume_role_duration_seconds', help: 'STS AssumeRole latency', buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: r }),
    cacheLookups,
    /** One cache lookup, counted in a plain number on the hot path and added to the counter at scrape time. */
    countLookup(result: LookupResult): void {
      pendingLookups[result]++;
    },
    credentialsIssued: new Counter({ name: 'podiam_credentials_issued_total', help: 'Credentials obtained from STS by cause (request, prefetch, refresh)', labelNames: ['cause'] as const, registers: r }),
    refreshFailures: new Counter({ name: 'podiam_credential_refresh_failures_total', help: 'Failed credential fetches by cause', labelNames: ['cause'] as const, registers: r }),
    cachedRoles: new Gauge({
      name: 'podiam_credential_cache_entries',
      help: 'Credential cache entries',
      registers: r,
      collect() {
        if (options.cacheEntries) this.set(options.cacheEntries());
      },
    }),
    podsIndexed: new Gauge({
      name: 'podiam_pods_indexed',
      help: 'Pod IPs in the index',
      registers: r,
      collect() {
        if (options.podsIndexed) this.set(options.podsIndexed());
      },
    }),
    credentialsMinRemaining: new Gauge({
      name: 'podiam_credentials_min_remaining_seconds',
      help: 'Seconds left on the soonest-expiring credentials podiam serves (NaN when it holds none); at least 900 while STS is healthy',
      registers: r,
      collect() {
        if (options.credentialsMinRemainingMs) {
          const ms = options.credentialsMinRemainingMs();
          this.set(ms === undefined ? NaN : Math.round(ms / 1000));
        }
      },
    }),
    ready: new Gauge({
      name: 'podiam_ready',
      help: '1 when /readyz answers 200: informers listed and watching, interception in place',
      registers: r,
      collect() {
        if (options.ready) this.set(options.ready() ? 1 : 0);
      },
    }),
    podWaits: new Counter({ name: 'podiam_pod_wait_total', help: 'Requests from an IP not yet known, by outcome (found, timeout)', labelNames: ['outcome'] as const, registers: r }),
    informerSynced: new Gauge({ name: 'podiam_informer_synced', help: '1 when the informer has listed and is watching', labelNames: ['resource'] as const, registers: r }),
    informerOutOfSync: new Gauge({
      name: 'podiam_informer_out_of_sync_seconds',
      help: 'Seconds since the longest-out-of-sync informer of this resource stopped listing and watching (0 while all are in sync); past --watch-deadline its answers are 503 NotReady',
      labelNames: ['resource'] as const,
      registers: r,
      collect() {
        if (!options.informersOutOfSync) return;
        const worst: Record<string, number> = { pods: 0, namespaces: 0, serviceaccounts: 0 };
        for (const { resource, seconds } of options.informersOutOfSync()) worst[resource] = Math.max(worst[resource] ?? 0, seconds);
        for (const [resource, seconds] of Object.entries(worst)) this.set({ resource }, seconds);
      },
    }),
    informerRestarts: new Counter({ name: 'podiam_informer_restarts_total', help: 'Informer restarts after watch or list errors', labelNames: ['resource'] as const, registers: r }),
    informerWatchTimeouts: new Counter({ name: 'podiam_informer_watch_timeouts_total', help: 'Watches silent past --watch-deadline, aborted and replaced by a relist', labelNames: ['resource'] as const, registers: r }),
    denials: new Counter({ name: 'podiam_denials_total', help: 'Credential requests denied, by reason code', labelNames: ['code'] as const, registers: r }),
    iptablesRule: new Gauge({ name: 'podiam_iptables_rule_present', help: '1 when the interception rule is in place, by family (ipv4, ipv6) and rule (dnat, guard)', labelNames: ['family', 'rule'] as const, registers: r }),
    iptablesWatch: new Gauge({ name: 'podiam_iptables_watch', help: '1 while podiam watches the ruleset for deletions (nft monitor): a deleted rule is restored at once; 0: rules are checked every --iptables-reconcile-interval', registers: r }),
    iptablesRestores: new Counter({ name: 'podiam_iptables_rule_restores_total', help: 'Times an interception rule was found missing and restored, by family and rule', labelNames: ['family', 'rule'] as const, registers: r }),
    tokenReviews: new Counter({ name: 'podiam_token_reviews_total', help: 'TokenReviews asked of the API server by outcome (authenticated, refused, error), and new tokens refused without one (forged: not signed by the API server; limited: the pod\'s review budget is spent); cached verdicts are not counted', labelNames: ['outcome'] as const, registers: r }),
    events: new Counter({ name: 'podiam_kube_events_total', help: 'Kubernetes Events recorded on pods, by outcome', labelNames: ['outcome'] as const, registers: r }),
    allowedRolesInvalid: new Counter({ name: 'podiam_allowed_roles_invalid_entries_total', help: 'allowed-roles regexp entries that do not compile and are skipped, by namespace (each entry counted once)', labelNames: ['namespace'] as const, registers: r }),
    allowedRolesUnanchored: new Counter({ name: 'podiam_allowed_roles_unanchored_matches_total', help: 'allowed-roles regexp entries that allow a role in use only because kube2iam regexps are unanchored, by namespace (each entry and role counted once)', labelNames: ['namespace'] as const, registers: r }),
    brokerUp: new Gauge({ name: 'podiam_broker_up', help: 'Broker mode: 1 when the last call to the broker got an answer from a replica, 0 when none answered', registers: r }),
    brokerRequests: new Counter({ name: 'podiam_broker_requests_total', help: 'Broker mode: calls to the broker (misses, prefetches, refreshes) by outcome (ok, denied, unavailable, error)', labelNames: ['outcome'] as const, registers: r }),
    brokerRequestSeconds: new Histogram({ name: 'podiam_broker_request_seconds', help: 'Broker mode: time to get an answer from the broker, failover included', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: r }),
    hostInterfacesMatching: new Gauge({ name: 'podiam_host_interfaces_matching', help: 'Interfaces on the node that --host-interface matches (with --iptables)', registers: r }),
    hostInterfacePodIps: new Gauge({ name: 'podiam_host_interface_pod_ips', help: "This node's pod IPs by whether their route leaves through an interface --host-interface matches (via: matching, other); other pods' metadata requests are not intercepted", labelNames: ['via'] as const, registers: r }),
    listenRetries: new Counter({ name: 'podiam_listen_retries_total', help: 'Attempts to bind the app port that found it taken (another process holds it, e.g. kube2iam)', registers: r }),
    newSessionsThrottled: new Counter({ name: 'podiam_new_sessions_throttled_total', help: 'New STS sessions a pod asked for over its budget (its annotations keep changing), by cause: prefetch (deferred, last value wins) or request (refused, retried by the SDK)', labelNames: ['cause'] as const, registers: r }),
    connectionsRefused: new Counter({ name: 'podiam_connections_refused_total', help: 'Connections closed at once on accept, by listener (imds, token) and limit (per-ip: --max-connections-per-ip, total: --max-connections)', labelNames: ['listener', 'limit'] as const, registers: r }),
  };
}

/** prom-client's storage for one series, as its inc() and observe() update it (prom-client 15). */
interface CounterSeries {
  value: number;
}
interface HistogramSeries {
  labels: Record<string, unknown>;
  sum: number;
  count: number;
  bucketValues: Record<string, number>;
}
type Stored<T> = { hashMap: Record<string, T>; upperBounds?: readonly number[] };

/**
 * The per-request metrics without prom-client's per-call label validation and hashing (a
 * measurable part of a cached credentials answer): each series is created through prom-client's
 * own inc()/observe() the first time, then its stored value is updated in place with the same
 * arithmetic. Whenever that series is no longer the one prom-client holds (reset(), remove()),
 * or the value is not a finite number, the call goes through the public API again, so /metrics
 * always shows exactly what inc() and observe() per request would.
 */
function requestRecorder(requests: Counter<'route' | 'code'>, seconds: Histogram<'route'>): (route: string, code: number, value: number) => void {
  const counterStore = requests as unknown as Stored<CounterSeries>;
  const histogramStore = seconds as unknown as Stored<HistogramSeries>;
  const upperBounds = histogramStore.upperBounds ?? [];
  // bucketValues is keyed by each bound as a property key: the strings made once, not per request.
  const bucketKeys = upperBounds.map(String);
  const counters = new Map<string, Map<number, { hash: string; series: CounterSeries }>>();
  const histograms = new Map<string, { hash: string; series: HistogramSeries }>();

  return (route, code, value) => {
    let byCode = counters.get(route);
    if (byCode === undefined) counters.set(route, (byCode = new Map()));
    const c = byCode.get(code);
    if (c !== undefined && counterStore.hashMap[c.hash] === c.series) {
      c.series.value += 1;
    } else {
      const result = requests.inc({ route, code }) as unknown as { labelHash?: string } | undefined;
      const hash = result?.labelHash;
      const series = hash === undefined ? undefined : counterStore.hashMap[hash];
      if (hash !== undefined && series !== undefined) byCode.set(code, { hash, series });
    }

    const h = histograms.get(route);
    if (h !== undefined && Number.isFinite(value) && histogramStore.hashMap[h.hash] === h.series) {
      // prom-client's observe(): the first bound >= value, else none (+Inf is the count).
      let key: string | undefined;
      for (let i = 0; i < upperBounds.length; i++) {
        if (value <= upperBounds[i]!) {
          key = bucketKeys[i];
          break;
        }
      }
      const series = h.series;
      series.sum += value;
      series.count += 1;
      if (key !== undefined && Object.prototype.hasOwnProperty.call(series.bucketValues, key)) series.bucketValues[key]! += 1;
    } else {
      seconds.observe({ route }, value);
      for (const [hash, series] of Object.entries(histogramStore.hashMap)) {
        if (series.labels['route'] === route) histograms.set(route, { hash, series });
      }
    }
  };
}
