/** The broker's own metrics, on the registry of the shared ones (informers, STS, cache: src/metrics.ts). */
import type { Registry } from 'prom-client';
import { Counter, Gauge, Histogram } from 'prom-client';

export type BrokerMetrics = ReturnType<typeof createBrokerMetrics>;

export function createBrokerMetrics(registry: Registry, options: { prefetchQueued?: () => number; changePolls?: () => number } = {}) {
  const r = [registry];
  let peersNow: (() => number) | undefined;
  return {
    /** --peers: the other replicas this one sees (set once the peer set exists). */
    setPeers(count: () => number): void {
      peersNow = count;
    },
    peers: new Gauge({
      name: 'podiam_broker_peers',
      help: 'Other broker replicas this one shares its cache with (--peers): running pods of the brokers\' ServiceAccount',
      registers: r,
      collect() {
        if (peersNow) this.set(peersNow());
      },
    }),
    peerFetches: new Counter({ name: 'podiam_broker_peer_fetches_total', help: 'Credentials asked of the replica that owns them instead of STS (--peers), by outcome (ok; unreachable: this replica called STS itself; error: the owner answered late or with an error)', labelNames: ['outcome'] as const, registers: r }),
    requests: new Counter({ name: 'podiam_broker_served_total', help: 'Agent requests answered by the broker, by route (credentials, role, changes; peer: another replica) and code (OK or the refusal/error code)', labelNames: ['route', 'code'] as const, registers: r }),
    refusals: new Counter({ name: 'podiam_broker_refusals_total', help: 'Agent requests refused by the node restriction or authentication (NotAnAgent, AgentTokenInvalid, AgentPodUnknown, PodNotOnAgentNode, PodUidMismatch, TokenNotForPod, ...), by code', labelNames: ['code'] as const, registers: r }),
    seconds: new Histogram({ name: 'podiam_broker_served_seconds', help: 'Time to answer one agent request', labelNames: ['route'] as const, buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: r }),
    tokenReviews: new Counter({ name: 'podiam_broker_token_reviews_total', help: 'TokenReviews asked of the API server, by token kind (agent, pod, peer) and outcome; cached verdicts are not counted', labelNames: ['kind', 'outcome'] as const, registers: r }),
    certificateReloads: new Counter({ name: 'podiam_broker_certificate_reloads_total', help: 'Serving certificate (re)loads from the files, by outcome (success, failure)', labelNames: ['outcome'] as const, registers: r }),
    certificateExpiry: new Gauge({ name: 'podiam_broker_certificate_expiry_timestamp_seconds', help: 'notAfter of the serving certificate in use, in Unix seconds', registers: r }),
    prefetchQueued: new Gauge({
      name: 'podiam_broker_prefetch_queued',
      help: 'Background AssumeRole calls (prefetch, refresh) waiting for --sts-qps',
      registers: r,
      collect() {
        if (options.prefetchQueued) this.set(options.prefetchQueued());
      },
    }),
    changePolls: new Gauge({
      name: 'podiam_broker_change_polls',
      help: 'Agents\' long polls for policy changes held by this replica (about one per agent connected to it)',
      registers: r,
      collect() {
        if (options.changePolls) this.set(options.changePolls());
      },
    }),
    policyChanges: new Counter({ name: 'podiam_broker_policy_changes_total', help: 'Namespace, ServiceAccount and association changes told to agents\' polls (what a role decision reads), by kind', labelNames: ['kind'] as const, registers: r }),
  };
}
