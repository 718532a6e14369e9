#!/usr/bin/env node
/**
 * Writes podiam's monitoring artefacts for the Prometheus Operator component from their sources,
 * so each exists once:
 *   manifests/monitoring/podiam.rules.yaml (the alerts, a plain rules file: edit that one)
 *     -> manifests/components/prometheus-operator/prometheusrule.yaml (the same groups, as a PrometheusRule)
 *   the dashboard below
 *     -> manifests/components/prometheus-operator/podiam-dashboard.json (Grafana; the component's
 *        configMapGenerator wraps it in a ConfigMap for Grafana's dashboard sidecar)
 * Run: npm run monitoring:sync. With --check it writes nothing and exits 1 when a file differs
 * (test/monitoring runs it, so the generated files never drift from their sources).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RULES = 'manifests/monitoring/podiam.rules.yaml';
const PROMETHEUS_RULE = 'manifests/components/prometheus-operator/prometheusrule.yaml';
const DASHBOARD = 'manifests/components/prometheus-operator/podiam-dashboard.json';

export function prometheusRule(rulesText) {
  const rules = parseDocument(rulesText);
  if (rules.errors.length > 0) throw new Error(`${RULES}: ${rules.errors[0].message}`);
  // The groups as written (comments and line breaks kept), indented under spec:.
  const at = rulesText.search(/^groups:/m);
  if (at < 0) throw new Error(`${RULES}: no top-level groups:`);
  const text = [
    `# Generated from ${RULES} by \`npm run monitoring:sync\`: edit that file, not this one.`,
    '# Prometheus selects PrometheusRules by label (its ruleSelector): add the label yours expects,',
    '# e.g. release: kube-prometheus-stack, in your overlay.',
    'apiVersion: monitoring.coreos.com/v1',
    'kind: PrometheusRule',
    'metadata:',
    '  name: podiam',
    '  namespace: kube-system',
    '  labels:',
    '    app.kubernetes.io/name: podiam',
    'spec:',
    rulesText.slice(at).replace(/^(?=.)/gm, '  ').trimEnd(),
    '',
  ].join('\n');
  const generated = parseDocument(text);
  if (JSON.stringify(generated.toJS().spec.groups) !== JSON.stringify(rules.toJS().groups)) throw new Error('the PrometheusRule\'s groups differ from the rules file\'s');
  return text;
}

// ---------------------------------------------------------------------------------------------
// The dashboard. Every query filters on the $node variable; $__rate_interval is Grafana's.

const DS = { type: 'prometheus', uid: '${datasource}' };
const SEL = 'node=~"$node"';

/** A time series panel; targets: [expr, legend] pairs. */
function timeseries(title, description, unit, targets, extra = {}) {
  return {
    type: 'timeseries',
    title,
    description,
    datasource: DS,
    fieldConfig: { defaults: { unit, min: extra.min ?? 0, custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never' } }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
    targets: targets.map(([expr, legendFormat], i) => ({ refId: String.fromCharCode(65 + i), datasource: DS, expr, legendFormat, range: true })),
  };
}

/** One row per node: a state over time (1 good, 0 bad). */
function stateTimeline(title, description, targets) {
  return {
    type: 'state-timeline',
    title,
    description,
    datasource: DS,
    fieldConfig: {
      defaults: {
        mappings: [{ type: 'value', options: { 0: { text: 'no', color: 'red', index: 0 }, 1: { text: 'yes', color: 'green', index: 1 } } }],
        thresholds: { mode: 'absolute', steps: [{ color: 'red', value: null }, { color: 'green', value: 1 }] },
        color: { mode: 'thresholds' },
      },
      overrides: [],
    },
    options: { showValue: 'never', mergeValues: true, rowHeight: 0.9, legend: { displayMode: 'list', placement: 'bottom', showLegend: false } },
    targets: targets.map(([expr, legendFormat], i) => ({ refId: String.fromCharCode(65 + i), datasource: DS, expr, legendFormat, range: true })),
  };
}

const rate = (metric, by) => `sum by (${by}) (rate(${metric}{${SEL}}[$__rate_interval]))`;
const quantile = (q, metric, by) => `histogram_quantile(${q}, sum by (${by}, le) (rate(${metric}_bucket{${SEL}}[$__rate_interval])))`;

const ROWS = [
  [
    'Requests',
    [
      timeseries('Requests by route', 'Metadata requests per second, by route (credentials, role-name, token, proxy, ...).', 'reqps', [[rate('podiam_http_requests_total', 'route'), '{{route}}']]),
      timeseries('Latency by route (p50, p99)', 'Time to answer, from the request to the last byte, by route.', 's', [
        [quantile(0.5, 'podiam_http_request_duration_seconds', 'route'), 'p50 {{route}}'],
        [quantile(0.99, 'podiam_http_request_duration_seconds', 'route'), 'p99 {{route}}'],
      ]),
      timeseries('Answers by status', 'Answers per second by HTTP status code (404/403: denials, 500: STS, 502: the real metadata service).', 'reqps', [[rate('podiam_http_requests_total', 'code'), '{{code}}']]),
      timeseries('Denials by code', 'Credential requests denied, by reason code (NoRoleForPod, PodNotFound, RoleNotAllowed, RoleNotTrusted, ...).', 'reqps', [[rate('podiam_denials_total', 'code'), '{{code}}']]),
    ],
  ],
  [
    'STS and credentials',
    [
      timeseries('AssumeRole by outcome', 'STS AssumeRole calls per second: success, or the STS error code (Throttling, AccessDenied, ...).', 'reqps', [[rate('podiam_sts_assume_role_total', 'outcome'), '{{outcome}}']]),
      timeseries('AssumeRole latency (p50, p99)', 'STS AssumeRole latency, retries included.', 's', [
        [quantile(0.5, 'podiam_sts_assume_role_duration_seconds', 'node'), 'p50 {{node}}'],
        [quantile(0.99, 'podiam_sts_assume_role_duration_seconds', 'node'), 'p99 {{node}}'],
      ]),
      timeseries('Cache lookups', 'Credential cache lookups by result: hit (from memory), miss (an STS call), stale (refresh due, still valid).', 'reqps', [[rate('podiam_credential_cache_lookups_total', 'result'), '{{result}}']]),
      timeseries('Credentials issued and refresh failures', 'Credentials obtained from STS by cause (request, prefetch, refresh), and failed fetches by cause.', 'ops', [
        [rate('podiam_credentials_issued_total', 'cause'), 'issued: {{cause}}'],
        [rate('podiam_credential_refresh_failures_total', 'cause'), 'failed: {{cause}}'],
      ]),
      timeseries('Time left on served credentials (minimum)', 'The soonest-expiring credentials each podiam serves: at least 15 minutes while STS is healthy; the PodiamCredentialsNearExpiry alert fires under 5 minutes.', 's', [[`min by (node) (podiam_credentials_min_remaining_seconds{${SEL}})`, '{{node}}']]),
      timeseries('Credential cache entries', 'Cached credentials (one per role, external id and session name).', 'short', [[`sum by (node) (podiam_credential_cache_entries{${SEL}})`, '{{node}}']]),
    ],
  ],
  [
    'Nodes',
    [
      stateTimeline('Interception rules present', 'Each node\'s interception rules (1: in place). Missing for more than a minute fires PodiamInterceptionMissing.', [[`min by (node, family, rule) (podiam_iptables_rule_present{${SEL}})`, '{{node}} {{family}} {{rule}}']]),
      stateTimeline('Ready', 'podiam\'s /readyz per node (1: informers synced and interception in place) and whether Prometheus scrapes it (up).', [
        [`min by (node) (podiam_ready{${SEL}})`, 'ready {{node}}'],
        [`min by (node) (up{job="podiam", ${SEL}})`, 'up {{node}}'],
      ]),
      timeseries('Pods indexed', 'Pod IPs in each podiam\'s index (this node\'s running pods).', 'short', [[`sum by (node) (podiam_pods_indexed{${SEL}})`, '{{node}}']]),
      timeseries('Pod-wait outcomes', 'Requests from an IP not yet known, by outcome: found (the pod\'s event arrived within --pod-wait) or timeout (404 PodNotFound).', 'reqps', [[rate('podiam_pod_wait_total', 'outcome'), '{{outcome}}']]),
      timeseries('Interception restores and informer restarts', 'Rules found missing and restored, informer restarts and dead watches, per node.', 'short', [
        [`sum by (node) (increase(podiam_iptables_rule_restores_total{${SEL}}[$__rate_interval]))`, 'rule restored {{node}}'],
        [`sum by (node, resource) (increase(podiam_informer_restarts_total{${SEL}}[$__rate_interval]))`, 'informer restart {{node}} {{resource}}'],
        [`sum by (node, resource) (increase(podiam_informer_watch_timeouts_total{${SEL}}[$__rate_interval]))`, 'dead watch {{node}} {{resource}}'],
      ]),
      timeseries('Memory', 'Resident memory and V8 heap in use, per node.', 'bytes', [
        [`max by (node) (podiam_process_resident_memory_bytes{${SEL}})`, 'rss {{node}}'],
        [`max by (node) (podiam_nodejs_heap_size_used_bytes{${SEL}})`, 'heap {{node}}'],
      ]),
    ],
  ],
  [
    'Broker',
    [
      stateTimeline('Broker reachable (agents)', 'Broker mode: each agent\'s last call to the broker got an answer (1) or no replica answered (0). Failing calls for 2 minutes fire PodiamBrokerUnavailable. Empty without --broker.', [[`min by (node) (podiam_broker_up{${SEL}})`, '{{node}}']]),
      timeseries('Agent calls to the broker by outcome', 'Misses, prefetches and refreshes asked of the broker per second: ok, denied (a 4xx: node restriction or the pod\'s own denial), unavailable (no replica answered within --broker-timeout), error.', 'reqps', [[rate('podiam_broker_requests_total', 'outcome'), '{{outcome}}']]),
      timeseries('Agent calls to the broker (p50, p99)', 'Time for the broker to answer an agent, failover included.', 's', [
        [quantile(0.5, 'podiam_broker_request_seconds', 'node'), 'p50 {{node}}'],
        [quantile(0.99, 'podiam_broker_request_seconds', 'node'), 'p99 {{node}}'],
      ]),
      timeseries('Broker refusals by code', 'Agent requests the broker refused: node restriction (PodNotOnAgentNode, PodUidMismatch), authentication (NotAnAgent, AgentTokenInvalid, AgentPodUnknown), token path (TokenNotForPod). Any of these is worth a look: an agent asking for another node\'s pods is a stolen token or a bug.', 'reqps', [[rate('podiam_broker_refusals_total', 'code'), '{{code}}']]),
      timeseries('Broker answers by code', 'Answers of the broker per second, by route and code (OK, or the denial or error code).', 'reqps', [[rate('podiam_broker_served_total', 'route, code'), '{{route}} {{code}}']]),
      timeseries('Broker prefetch queue', 'Background AssumeRole calls waiting for --sts-qps (a cold start of a large cluster drains at that rate; pods\' own requests never wait).', 'short', [[`sum by (pod) (podiam_broker_prefetch_queued{${SEL}})`, '{{pod}}']]),
    ],
  ],
];

export function dashboard() {
  const panels = [];
  let id = 1;
  let y = 0;
  for (const [title, row] of ROWS) {
    panels.push({ type: 'row', title, collapsed: false, id: id++, gridPos: { h: 1, w: 24, x: 0, y }, panels: [] });
    y += 1;
    row.forEach((panel, i) => {
      panels.push({ ...panel, id: id++, gridPos: { h: 8, w: 12, x: (i % 2) * 12, y: y + Math.floor(i / 2) * 8 } });
    });
    y += Math.ceil(row.length / 2) * 8;
  }
  const nodes = 'label_values(up{job="podiam"}, node)';
  return {
    title: 'podiam',
    uid: 'podiam',
    description: 'podiam, the per-pod IAM credentials agent: requests, STS, the credential cache, interception per node. See the README, "Operating podiam".',
    tags: ['podiam', 'aws', 'iam'],
    editable: true,
    graphTooltip: 1,
    refresh: '30s',
    schemaVersion: 39,
    version: 1,
    time: { from: 'now-6h', to: 'now' },
    timepicker: {},
    timezone: '',
    annotations: { list: [] },
    templating: {
      list: [
        { name: 'datasource', label: 'Data source', type: 'datasource', query: 'prometheus', current: {}, hide: 0, refresh: 1, regex: '', options: [] },
        {
          name: 'node',
          label: 'Node',
          type: 'query',
          datasource: DS,
          definition: nodes,
          query: { query: nodes, refId: 'nodes' },
          includeAll: true,
          multi: true,
          allValue: '.*',
          current: { selected: true, text: ['All'], value: ['$__all'] },
          refresh: 2,
          sort: 1,
          hide: 0,
          options: [],
        },
      ],
    },
    panels,
  };
}

export function outputs() {
  return new Map([
    [PROMETHEUS_RULE, prometheusRule(readFileSync(path.join(ROOT, RULES), 'utf8'))],
    [DASHBOARD, JSON.stringify(dashboard(), null, 2) + '\n'],
  ]);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const check = process.argv.includes('--check');
  let stale = 0;
  for (const [file, text] of outputs()) {
    const full = path.join(ROOT, file);
    let current;
    try {
      current = readFileSync(full, 'utf8');
    } catch {
      current = undefined;
    }
    if (current === text) continue;
    if (check) {
      console.error(`${file} is not what scripts/monitoring.mjs generates: run npm run monitoring:sync`);
      stale++;
    } else {
      writeFileSync(full, text);
      console.log(`wrote ${file}`);
    }
  }
  process.exit(stale === 0 ? 0 : 1);
}
