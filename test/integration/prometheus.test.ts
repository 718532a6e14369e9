/**
 * podiam scraped by a real Prometheus, with the documented scrape job
 * (manifests/monitoring/prometheus-scrape.yaml) and the alert rules loaded: the job's
 * kubernetes_sd_configs become one static loopback target carrying the __meta_kubernetes_* labels
 * Kubernetes discovery would give podiam's pod (its container name and annotations taken from the
 * DaemonSet, which declares no container port, so the target is the port-free pod IP), so the
 * job's own relabelling runs unchanged; only the port annotation names the test podiam's port
 * (promtool checks that the DaemonSet's own pod is scraped at <pod IP>:8181). After a few credential requests,
 * Prometheus's HTTP API shows the target up with podiam's series and their labels; every
 * dashboard query and every alert expression is accepted; the dashboard's key panels have data;
 * and a healthy podiam sets off no alert.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import type { PodiamProcess } from '../support/podiam-process.js';
import { PrometheusServer } from '../support/prometheus.js';
import type { Sample } from '../support/prometheus.js';
import { waitFor } from '../support/wait.js';
import { NODE, World } from '../support/world.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const RULES = path.join(ROOT, 'manifests/monitoring/podiam.rules.yaml');
const SCRAPE = path.join(ROOT, 'manifests/monitoring/prometheus-scrape.yaml');
const DASHBOARD = path.join(ROOT, 'manifests/components/prometheus-operator/podiam-dashboard.json');
const DAEMONSET = path.join(ROOT, 'manifests/base/daemonset.yaml');
const CREDS = '/latest/meta-data/iam/security-credentials/';
const POD = 'podiam-x7k2p';
const NAMESPACE = 'kube-system';

type Obj = Record<string, any>;
interface Panel {
  type: string;
  title: string;
  targets?: Array<{ expr: string; legendFormat: string }>;
}

/** The dashboard panels whose queries must show data once podiam has served a few requests. */
const KEY_PANELS = [
  'Requests by route',
  'Latency by route (p50, p99)',
  'Answers by status',
  'Denials by code',
  'AssumeRole by outcome',
  'AssumeRole latency (p50, p99)',
  'Cache lookups',
  'Credentials issued and refresh failures',
  'Time left on served credentials (minimum)',
  'Pods indexed',
  'Pod-wait outcomes',
  'Ready',
  'Memory',
];

/** Grafana's variables as the dashboard would expand them with "All" nodes selected. */
function grafanaExpand(expr: string): string {
  return expr.replaceAll('$__rate_interval', '30s').replaceAll('$node', '.*');
}

/** The label name Kubernetes service discovery gives a pod annotation. */
const annotationLabel = (key: string): string => `__meta_kubernetes_pod_annotation_${key.replace(/[^a-zA-Z0-9_]/g, '_')}`;

const daemonSet = parse(readFileSync(DAEMONSET, 'utf8')) as Obj;
const template = daemonSet.spec.template as Obj;

/** The documented job (its Kubernetes discovery checked, then removed for a static target). */
function podiamJob(): Obj {
  const job = structuredClone((parse(readFileSync(SCRAPE, 'utf8')) as Obj).scrape_configs[0]) as Obj;
  expect(job.job_name).toBe('podiam');
  expect(job.kubernetes_sd_configs).toEqual([
    { role: 'pod', namespaces: { names: [NAMESPACE] }, selectors: [{ role: 'pod', label: `app.kubernetes.io/name=${template.metadata.labels['app.kubernetes.io/name']}` }] },
  ]);
  delete job.kubernetes_sd_configs;
  return job;
}

/**
 * The target Kubernetes discovery (role pod) gives for the DaemonSet's pod at `podIp`: the
 * container declares no port, so one port-free target for it, with the pod's annotations
 * (`annotations` override the DaemonSet's).
 */
function discovered(podIp: string, annotations: Record<string, string> = {}, pod = POD): Obj {
  const containers = template.spec.containers as Obj[];
  expect(containers).toHaveLength(1);
  expect(containers[0]!.ports).toBeUndefined();
  return {
    targets: [podIp],
    labels: {
      __meta_kubernetes_namespace: NAMESPACE,
      __meta_kubernetes_pod_name: pod,
      __meta_kubernetes_pod_node_name: NODE,
      __meta_kubernetes_pod_ip: podIp,
      __meta_kubernetes_pod_container_name: containers[0]!.name,
      __meta_kubernetes_pod_container_init: 'false',
      ...Object.fromEntries(Object.entries({ ...(template.metadata.annotations as Record<string, string>), ...annotations }).map(([k, v]) => [annotationLabel(k), v])),
    },
  };
}

let world: World;
let podiam: PodiamProcess;
let prometheus: PrometheusServer;
const rules = parse(readFileSync(RULES, 'utf8')) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> };
const alerts = rules.groups.flatMap((g) => g.rules);
const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Panel[]; templating: { list: Array<{ name: string; query: unknown }> } };
const panels = dashboard.panels.filter((p) => p.type !== 'row');

beforeAll(async () => {
  world = await World.start();
  podiam = await world.podiam();

  // The documented job, discovered as Kubernetes would discover podiam's pod on this node.
  const job = podiamJob();
  job.scrape_interval = '1s';
  // podiam's pod on this node: pod IP 127.0.0.1, its prometheus.io/port the test podiam's port.
  job.static_configs = [discovered('127.0.0.1', { 'prometheus.io/port': String(podiam.port) })];
  const config = { global: { scrape_interval: '1s', evaluation_interval: '1s' }, rule_files: ['podiam.rules.yaml'], scrape_configs: [job] };
  prometheus = await PrometheusServer.start(stringify(config), { 'podiam.rules.yaml': readFileSync(RULES, 'utf8') });

  // A few pods' requests: two roles (STS calls, then cache hits), a pod without a role (a
  // denial), and an IP no pod has (a pod-wait timeout).
  for (const [name, role] of [
    ['prom-a', 'prom-role-a'],
    ['prom-b', 'prom-role-b'],
  ] as const) {
    const ip = world.nextIp();
    world.pod(name, { ip, role });
    for (let i = 0; i < 3; i++) expect((await podiam.get(CREDS + role, ip)).status).toBe(200);
  }
  const plain = world.nextIp();
  world.pod('prom-plain', { ip: plain });
  await waitFor(async () => (await podiam.get(CREDS, plain)).status === 404, 8000, 'the unannotated pod is known');
  expect((await podiam.get(CREDS, world.nextIp())).body).toContain('PodNotFound');
}, 60_000);

afterAll(async () => {
  await prometheus?.stop();
  await world?.stop();
});

/** Waits until the query returns samples (Prometheus scrapes every second), and returns them. */
async function eventually(expr: string, ms = 15_000): Promise<Sample[]> {
  let samples: Sample[] = [];
  await waitFor(async () => (samples = await prometheus.query(expr)).length > 0, ms, `${expr} returns data`);
  return samples;
}

test('the target is up, with the job, namespace, pod and node labels the alerts use', async () => {
  const up = await eventually('up{job="podiam"} == 1');
  expect(up.map((s) => s.metric)).toEqual([{ __name__: 'up', job: 'podiam', instance: `127.0.0.1:${podiam.port}`, namespace: NAMESPACE, pod: POD, node: NODE }]);
  const targets = await prometheus.api<{ activeTargets: Array<{ scrapeUrl: string; health: string; lastError: string }> }>('targets');
  expect(targets.data.activeTargets).toEqual([expect.objectContaining({ scrapeUrl: `http://127.0.0.1:${podiam.port}/metrics`, health: 'up', lastError: '' })]);
});

test("the job scrapes the DaemonSet's pods at <pod IP>:8181, the port podiam listens on (IPv4 and IPv6 pod IPs)", () => {
  const args = template.spec.containers[0].args as string[];
  expect(args).toContain('--app-port=8181');
  expect(template.metadata.annotations['prometheus.io/port']).toBe('8181');
  const job = podiamJob();
  job.static_configs = [discovered('10.0.1.23'), discovered('fd00:10::23', {}, 'podiam-v6')];
  // promtool runs the job's discovery and relabelling, and scrapes nothing.
  const dir = mkdtempSync(path.join(tmpdir(), 'podiam-sd-'));
  try {
    writeFileSync(path.join(dir, 'prometheus.yml'), stringify({ scrape_configs: [job] }));
    const out = execFileSync('promtool', ['check', 'service-discovery', '--timeout=2s', path.join(dir, 'prometheus.yml'), 'podiam'], { encoding: 'utf8' });
    // promtool lists the targets in no fixed order: sorted by address (IPv4 '1…' before IPv6 '[…').
    const targets = (JSON.parse(out) as Array<{ labels: Record<string, string> }>).map((t) => t.labels).sort((a, b) => ((a['__address__'] ?? '') < (b['__address__'] ?? '') ? -1 : 1));
    expect(targets).toEqual([
      expect.objectContaining({ __address__: '10.0.1.23:8181', __metrics_path__: '/metrics', job: 'podiam', namespace: NAMESPACE, pod: POD, node: NODE }),
      expect.objectContaining({ __address__: '[fd00:10::23]:8181', __metrics_path__: '/metrics', job: 'podiam', namespace: NAMESPACE, pod: 'podiam-v6', node: NODE }),
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("podiam's request, STS and cache series, with the expected labels and values", async () => {
  const where = `job="podiam", namespace="${NAMESPACE}", pod="${POD}", node="${NODE}"`;
  const value = async (expr: string): Promise<number> => Number((await eventually(expr))[0]!.value[1]);
  // Six credential answers; counts reach Prometheus at its next scrape.
  await waitFor(async () => (await value(`sum(podiam_http_requests_total{${where}, route="credentials", code="200"})`)) >= 6, 15_000, 'six 200 credential answers scraped');
  expect(await value(`sum(podiam_http_requests_total{${where}, route="role-name", code="404"})`)).toBeGreaterThanOrEqual(2); // the role list: unannotated, unknown IP
  expect(await value(`sum(podiam_http_request_duration_seconds_count{${where}, route="credentials"})`)).toBeGreaterThanOrEqual(6);
  // Two roles: two AssumeRole calls to moto (prefetch or first request), both successes.
  await waitFor(async () => (await value(`sum(podiam_sts_assume_role_total{${where}, outcome="success"})`)) >= 2, 15_000, 'two AssumeRole successes scraped');
  expect(await prometheus.query(`podiam_sts_assume_role_total{outcome!="success"}`)).toEqual([]);
  expect(await value(`podiam_sts_assume_role_duration_seconds_count{${where}}`)).toBeGreaterThanOrEqual(2);
  expect(await value(`sum(podiam_credentials_issued_total{${where}})`)).toBeGreaterThanOrEqual(2);
  // Repeat requests are answered from memory.
  await waitFor(async () => (await value(`podiam_credential_cache_lookups_total{${where}, result="hit"}`)) >= 4, 15_000, 'cache hits scraped');
  const lookups = await prometheus.query(`podiam_credential_cache_lookups_total{${where}}`);
  expect(lookups.map((s) => s.metric.result).sort()).toEqual(expect.arrayContaining(['hit']));
  // The two metrics added for alerting: the session is an hour, so nearly all of it is left.
  expect(await value(`podiam_credentials_min_remaining_seconds{${where}}`)).toBeGreaterThan(3000);
  expect(await value(`podiam_ready{${where}}`)).toBe(1);
  expect(await value(`podiam_denials_total{${where}, code="NoRoleForPod"}`)).toBeGreaterThanOrEqual(1);
  expect(await value(`podiam_pod_wait_total{${where}, outcome="timeout"}`)).toBeGreaterThanOrEqual(1);
  expect(await value(`podiam_pods_indexed{${where}}`)).toBe(3);
  expect(await value(`podiam_process_resident_memory_bytes{${where}}`)).toBeGreaterThan(10e6);
});

test('every dashboard query is accepted by Prometheus, and the key panels show data', async () => {
  expect(panels.map((p) => p.title)).toEqual(expect.arrayContaining(KEY_PANELS));
  // The node variable's query (label_values) lists this node.
  const nodeVar = dashboard.templating.list.find((v) => v.name === 'node')!;
  const m = /^label_values\((.+), (\w+)\)$/.exec((nodeVar.query as { query: string }).query);
  expect(m).not.toBeNull();
  const values = await prometheus.api<string[]>(`label/${m![2]}/values`, { 'match[]': m![1]! });
  expect(values.status).toBe('success');
  expect(values.data).toContain(NODE);

  // Rates need two scrapes inside their window: give the counters time to be seen twice.
  await eventually('count_over_time(podiam_http_requests_total{route="credentials"}[30s]) >= 3');
  const empty: string[] = [];
  for (const panel of panels) {
    expect(panel.targets?.length).toBeGreaterThan(0);
    for (const t of panel.targets!) {
      const samples = await prometheus.query(grafanaExpand(t.expr)); // throws with Prometheus's error
      if (KEY_PANELS.includes(panel.title) && samples.length === 0) empty.push(`${panel.title}: ${t.expr}`);
    }
  }
  // A panel with two queries (p50, p99; issued and failed) has data when either has: list per panel.
  const emptyPanels = KEY_PANELS.filter((title) => {
    const queries = panels.find((p) => p.title === title)!.targets!;
    return queries.every((t) => empty.includes(`${title}: ${t.expr}`));
  });
  expect(emptyPanels).toEqual([]);
});

test('every alert expression is accepted by Prometheus, and the rule engine evaluates all of them without error', async () => {
  for (const a of alerts) await prometheus.query(a.expr);
  type Rules = { groups: Array<{ rules: Array<{ name: string; health: string; lastError?: string }> }> };
  let loaded: Rules['groups'][number]['rules'] = [];
  await waitFor(
    async () => {
      loaded = (await prometheus.api<Rules>('rules')).data.groups.flatMap((g) => g.rules);
      return loaded.length === alerts.length && loaded.every((r) => r.health !== 'unknown');
    },
    15_000,
    'every rule evaluated',
  );
  expect(loaded.map((r) => ({ name: r.name, health: r.health, lastError: r.lastError ?? '' }))).toEqual(alerts.map((a) => ({ name: a.alert, health: 'ok', lastError: '' })));
});

test('a healthy podiam sets off no alert', async () => {
  const active = await prometheus.api<{ alerts: Array<{ labels: Record<string, string>; state: string }> }>('alerts');
  expect(active.status).toBe('success');
  // Without --iptables (as here) no podiam_iptables_rule_present series exists, so no interception alert either.
  expect(active.data.alerts).toEqual([]);
  expect(await prometheus.query('ALERTS{alertname=~"PodiamDown|PodiamNotReady|PodiamTargetsMissing|PodiamCredentialsNearExpiry|PodiamInformerNotSynced"}')).toEqual([]);
});
