/** Every metric podiam exports, on its own prom-client registry (no global state). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type Metrics = ReturnType<typeof createMetrics>;

export function createMetrics(options: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'podiam_' });
  const r = [registry];
  return {
    registry,
    requests: new Counter({ name: 'podiam_http_requests_total', help: 'Metadata requests by route and status code', labelNames: ['route', 'code'] as const, registers: r }),
    requestSeconds: new Histogram({
      name: 'podiam_http_request_duration_seconds',
      help: 'Metadata request latency by route',
      labelNames: ['route'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: r,
    }),
    stsCalls: new Counter({ name: 'podiam_sts_assume_role_total', help: 'STS AssumeRole calls by outcome', labelNames: ['outcome'] as const, registers: r }),
    stsSeconds: new Histogram({ name: 'podiam_sts_assume_role_duration_seconds', help: 'STS AssumeRole latency', buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: r }),
    cacheLookups: new Counter({ name: 'podiam_credential_cache_lookups_total', help: 'Credential cache lookups by result (hit, miss, stale)', labelNames: ['result'] as const, registers: r }),
    credentialsIssued: new Counter({ name: 'podiam_credentials_issued_total', help: 'Credentials obtained from STS by cause (request, prefetch, refresh)', labelNames: ['cause'] as const, registers: r }),
    refreshFailures: new Counter({ name: 'podiam_credential_refresh_failures_total', help: 'Failed credential fetches by cause', labelNames: ['cause'] as const, registers: r }),
    cachedRoles: new Gauge({ name: 'podiam_credential_cache_entries', help: 'Credential cache entries', registers: r }),
    podsIndexed: new Gauge({ name: 'podiam_pods_indexed', help: 'Pod IPs in the index', registers: r }),
    podWaits: new Counter({ name: 'podiam_pod_wait_total', help: 'Requests from an IP not yet known, by outcome (found, timeout)', labelNames: ['outcome'] as const, registers: r }),
    informerSynced: new Gauge({ name: 'podiam_informer_synced', help: '1 when the informer has listed and is watching', labelNames: ['resource'] as const, registers: r }),
    informerRestarts: new Counter({ name: 'podiam_informer_restarts_total', help: 'Informer restarts after watch or list errors', labelNames: ['resource'] as const, registers: r }),
    denials: new Counter({ name: 'podiam_denials_total', help: 'Credential requests denied, by reason code', labelNames: ['code'] as const, registers: r }),
    iptablesRule: new Gauge({ name: 'podiam_iptables_rule_present', help: '1 when the DNAT rule is installed', registers: r }),
    iptablesRestores: new Counter({ name: 'podiam_iptables_rule_restores_total', help: 'Times the DNAT rule was found missing and restored', registers: r }),
    events: new Counter({ name: 'podiam_kube_events_total', help: 'Kubernetes Events recorded on pods, by outcome', labelNames: ['outcome'] as const, registers: r }),
  };
}
