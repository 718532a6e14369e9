/**
 * The deployment artefacts, checked as an operator would use them, without a cluster or a Docker
 * engine: every kustomization renders with `kubectl kustomize`; every rendered object validates
 * against the Kubernetes schemas (kubernetes-models, and the prometheus-operator models for the
 * PodMonitor) and has no field the API would reject as unknown (the field lists of
 * @kubernetes/client-node's generated models); the DaemonSet's args, expanded as the kubelet
 * expands them, parse with podiam's own parseConfig; the pod holds only NET_ADMIN; RBAC grants
 * exactly what podiam uses. The Dockerfile lints clean with two linters and keeps its structure.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { validate as dockerfileUtilsValidate } from 'dockerfile-utils';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ValidatingAdmissionPolicy } from 'kubernetes-models/admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy';
import { ValidatingAdmissionPolicyBinding } from 'kubernetes-models/admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { parseAllDocuments } from 'yaml';
import { parseConfig } from '../../src/config.js';
import type { Config } from '../../src/config.js';
import type { Kind, Obj } from '../support/manifests.js';
import { MANIFESTS, kustomize, kustomizeOwn, manifestChecks } from '../support/manifests.js';
import { nodeFlags, shebangEnv } from '../support/podiam-process.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const VERSION = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const NAMESPACE = 'kube-system';
const SAMPLE_HOST_IP = '10.0.1.23';
const SAMPLE_HOST_IP6 = 'fd00:10::23';
const SAMPLE_NODE = 'ip-10-0-1-23.ec2.internal';

/** The kustomizations an operator applies, and the --host-interface each must give. */
const TARGETS: ReadonlyArray<{ dir: string; hostInterface: string; podMonitor: boolean; startupTaint?: boolean }> = [
  { dir: 'manifests', hostInterface: 'docker0', podMonitor: false },
  { dir: 'manifests/overlays/calico', hostInterface: 'cali+', podMonitor: false },
  { dir: 'manifests/overlays/aws-vpc-cni', hostInterface: 'eni+', podMonitor: false },
  { dir: 'manifests/overlays/bridge', hostInterface: 'cni0', podMonitor: false },
  { dir: 'manifests/overlays/prometheus-operator', hostInterface: 'docker0', podMonitor: true },
  { dir: 'manifests/overlays/startup-taint', hostInterface: 'docker0', podMonitor: false, startupTaint: true },
];

// ---------------------------------------------------------------------------------------------
// Rendering and validation helpers

const KINDS: Record<string, Kind> = {
  'v1/ServiceAccount': { model: ServiceAccount as never, clientModel: 'V1ServiceAccount', namespaced: true },
  'rbac.authorization.k8s.io/v1/ClusterRole': { model: ClusterRole as never, clientModel: 'V1ClusterRole', namespaced: false },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': { model: ClusterRoleBinding as never, clientModel: 'V1ClusterRoleBinding', namespaced: false },
  'apps/v1/DaemonSet': { model: DaemonSet as never, clientModel: 'V1DaemonSet', namespaced: true },
  // The CRD's own schema; client-node has no model for it, so the unknown-field walk stops at
  // its ObjectMeta (a CRD's structural schema prunes unknown fields rather than refusing them).
  'monitoring.coreos.com/v1/PodMonitor': { model: PodMonitor as never, namespaced: true },
  'monitoring.coreos.com/v1/PrometheusRule': { model: PrometheusRule as never, namespaced: true },
  'v1/ConfigMap': { model: ConfigMap as never, clientModel: 'V1ConfigMap', namespaced: true },
  'apiextensions.k8s.io/v1/CustomResourceDefinition': { model: CustomResourceDefinition as never, clientModel: 'V1CustomResourceDefinition', namespaced: false },
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy': { model: ValidatingAdmissionPolicy as never, clientModel: 'V1ValidatingAdmissionPolicy', namespaced: false },
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding': { model: ValidatingAdmissionPolicyBinding as never, clientModel: 'V1ValidatingAdmissionPolicyBinding', namespaced: false },
};
const { kindOf, schemaErrors, strictErrors } = manifestChecks(KINDS);

function find(objs: readonly Obj[], kind: string): Obj {
  const found = objs.filter((o) => o.kind === kind);
  expect(found).toHaveLength(1);
  return found[0]!;
}

function podiamContainer(ds: Obj): Obj {
  const containers = ds.spec.template.spec.containers as Obj[];
  expect(containers.map((c) => c.name)).toEqual(['podiam']);
  return containers[0]!;
}

/** The container's environment as the kubelet would build it on a sample node. */
function containerEnv(container: Obj): Record<string, string> {
  const samples: Record<string, string> = { 'status.hostIP': SAMPLE_HOST_IP, 'status.hostIPs': `${SAMPLE_HOST_IP},${SAMPLE_HOST_IP6}`, 'spec.nodeName': SAMPLE_NODE };
  const env: Record<string, string> = {};
  for (const e of (container.env ?? []) as Obj[]) {
    if (typeof e.value === 'string') env[e.name] = expand(e.value, env);
    else if (e.valueFrom?.fieldRef?.fieldPath in samples) env[e.name] = samples[e.valueFrom.fieldRef.fieldPath]!;
    else throw new Error(`env ${e.name}: no sample value for ${JSON.stringify(e.valueFrom)}`);
  }
  return env;
}

/** Kubernetes' $(VAR) expansion in command, args and env values; $$ escapes. */
function expand(text: string, env: Record<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string | undefined) => {
    if (name === undefined) return '$';
    return env[name] ?? whole;
  });
}

/** The DaemonSet's args as podiam receives them, and the config podiam makes of them. */
function podiamConfig(ds: Obj): { args: string[]; config: Config } {
  const container = podiamContainer(ds);
  expect(container.command).toBeUndefined(); // the image's ENTRYPOINT runs podiam
  const env = containerEnv(container);
  const args = (container.args as string[]).map((a) => expand(a, env));
  for (const a of args) expect(a).not.toMatch(/\$\(/); // every $(VAR) names a variable of the container
  const request = parseConfig(args, env);
  if (request.kind !== 'run') throw new Error(`the args ask for ${request.kind}, not a run`);
  return { args, config: request.config };
}

function portNumber(container: Obj, port: number | string): number {
  if (typeof port === 'number') return port;
  const named = ((container.ports ?? []) as Obj[]).find((p) => p.name === port);
  if (named === undefined) throw new Error(`no container port named ${port}`);
  return named.containerPort as number;
}

// ---------------------------------------------------------------------------------------------

const rendered = new Map<string, Obj[]>();
beforeAll(() => {
  for (const t of TARGETS) rendered.set(t.dir, kustomize(path.join(ROOT, t.dir)));
});
const objsOf = (dir: string): Obj[] => rendered.get(dir)!;

describe('the checkers themselves', () => {
  test('schema validation rejects a wrong type and a missing required field', () => {
    const ds = structuredClone(find(kustomize(MANIFESTS), 'DaemonSet'));
    expect(schemaErrors(ds)).toBe('');
    ds.spec.template.spec.containers[0].readinessProbe.periodSeconds = '5';
    expect(schemaErrors(ds)).toMatch(/periodSeconds/);
    const sa = { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'x' }, automountServiceAccountToken: 'yes' };
    expect(schemaErrors(sa)).toMatch(/automountServiceAccountToken/);
    const pm = { apiVersion: 'monitoring.coreos.com/v1', kind: 'PodMonitor', metadata: { name: 'x' }, spec: { podMetricsEndpoints: [{ port: 8181 }] } };
    expect(schemaErrors(pm)).not.toBe('');
  });

  test('the unknown-field walk finds a misspelt field at any depth', () => {
    const ds = structuredClone(find(kustomize(MANIFESTS), 'DaemonSet'));
    expect(strictErrors(ds)).toEqual([]);
    ds.spec.template.spec.hostNetwrk = true;
    ds.spec.template.spec.containers[0].securityContext.capabilities.adds = ['NET_RAW'];
    ds.spec.template.spec.containers[0].env[1].valueFrom.fieldRef.path = 'x';
    expect(strictErrors(ds).sort()).toEqual([
      'DaemonSet.spec.template.spec.containers[0].env[1].valueFrom.fieldRef.path',
      'DaemonSet.spec.template.spec.containers[0].securityContext.capabilities.adds',
      'DaemonSet.spec.template.spec.hostNetwrk',
    ]);
  });

  test('$(VAR) expansion follows the kubelet: known names expand, $$ escapes, unknown names stay', () => {
    expect(expand('--a=$(X) $$(X) $(Y)', { X: '1' })).toBe('--a=1 $(X) $(Y)');
  });
});

describe.each(TARGETS)('kubectl kustomize $dir', ({ dir, hostInterface, podMonitor, startupTaint = false }) => {
  test('renders exactly the expected objects', () => {
    const kinds = objsOf(dir).map((o) => `${o.kind}/${o.metadata.name}`).sort();
    const expected = ['ClusterRole/podiam', 'ClusterRoleBinding/podiam', 'CustomResourceDefinition/podidentityassociations.podiam.io', 'DaemonSet/podiam', 'ServiceAccount/podiam'];
    if (podMonitor) expected.push('PodMonitor/podiam', 'PodMonitor/podiam-webhook', 'PrometheusRule/podiam', 'ConfigMap/podiam-grafana-dashboard');
    if (startupTaint) expected.push('ClusterRole/podiam-startup-taint', 'ClusterRoleBinding/podiam-startup-taint', 'ValidatingAdmissionPolicy/podiam-startup-taint', 'ValidatingAdmissionPolicyBinding/podiam-startup-taint');
    expect(kinds).toEqual(expected.sort());
  });

  test('every object validates against its schema and has no unknown fields', () => {
    for (const obj of objsOf(dir)) {
      expect({ object: `${obj.kind}/${obj.metadata.name}`, errors: schemaErrors(obj) }).toEqual({ object: `${obj.kind}/${obj.metadata.name}`, errors: '' });
      expect(strictErrors(obj)).toEqual([]);
    }
  });

  test(`namespaced objects are in ${NAMESPACE}, cluster-scoped ones have no namespace`, () => {
    for (const obj of objsOf(dir)) {
      expect([obj.kind, obj.metadata.namespace]).toEqual([obj.kind, kindOf(obj).namespaced ? NAMESPACE : undefined]);
    }
  });

  test(`the DaemonSet's args parse with podiam's parseConfig: --iptables, --host-interface=${hostInterface}`, () => {
    const { args, config } = podiamConfig(find(objsOf(dir), 'DaemonSet'));
    expect(args).toContain(`--host-interface=${hostInterface}`);
    expect(config).toMatchObject({
      iptables: true,
      hostIp: SAMPLE_HOST_IP,
      hostIp4: SAMPLE_HOST_IP,
      hostIp6: SAMPLE_HOST_IP6,
      iptablesGuard: true,
      node: SAMPLE_NODE,
      hostInterface,
      appPort: 8181,
      metricsPort: 8181,
      metadataHost: '169.254.169.254',
      metadataPort: 80,
      logFormat: 'json',
      events: true,
    });
  });

  test('probes and the metrics scrape point at podiam’s own routes on its app port', () => {
    const ds = find(objsOf(dir), 'DaemonSet');
    const { config } = podiamConfig(ds);
    const c = podiamContainer(ds);
    // No container port: with hostNetwork it would become a hostPort, and the scheduler would keep
    // the rollout's surge pod off the node.
    expect(c.ports).toBeUndefined();
    expect(c.livenessProbe.httpGet.path).toBe('/healthz');
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    for (const probe of [c.livenessProbe, c.readinessProbe]) {
      expect(portNumber(c, probe.httpGet.port)).toBe(config.appPort);
      expect(probe.httpGet.host).toBeUndefined(); // the pod IP, which is the node IP podiam listens on
      expect(probe.httpGet.scheme ?? 'HTTP').toBe('HTTP');
    }
    expect(ds.spec.template.metadata.annotations).toEqual({
      'prometheus.io/scrape': 'true',
      'prometheus.io/port': String(config.metricsPort),
      'prometheus.io/path': '/metrics',
    });
    if (podMonitor) {
      const pm = objsOf(dir).find((o) => o.kind === 'PodMonitor' && o.metadata.name === 'podiam')!;
      expect(pm.spec.selector.matchLabels).toEqual(ds.spec.selector.matchLabels);
      expect(pm.spec.podMetricsEndpoints).toHaveLength(1);
      const ep = pm.spec.podMetricsEndpoints[0];
      expect(ep.port).toBeUndefined();
      // <pod IP>:8181, an IPv6 pod IP in brackets.
      expect(ep.relabelings).toContainEqual({ sourceLabels: ['__meta_kubernetes_pod_ip'], targetLabel: '__address__', regex: '([^:]+)', replacement: `$1:${config.metricsPort}` });
      expect(ep.relabelings).toContainEqual({ sourceLabels: ['__meta_kubernetes_pod_ip'], targetLabel: '__address__', regex: '(.+:.+)', replacement: `[$1]:${config.metricsPort}` });
      expect(ep.path).toBe('/metrics');
      // The same job and locating labels as the plain scrape config: the alerts select on them.
      expect(ep.relabelings).toEqual(
        expect.arrayContaining([
          { sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node' },
          { targetLabel: 'job', replacement: 'podiam' },
        ]),
      );
    }
  });

  test('the pod: host network, not privileged, root with NET_ADMIN and nothing else', () => {
    const ds = find(objsOf(dir), 'DaemonSet');
    const pod = ds.spec.template.spec;
    const c = podiamContainer(ds);
    expect(pod.hostNetwork).toBe(true);
    expect(pod.dnsPolicy).toBe('ClusterFirstWithHostNet');
    expect(pod.hostPID).toBeUndefined();
    expect(pod.hostIPC).toBeUndefined();
    expect(pod.initContainers).toBeUndefined();
    expect(c.securityContext).toEqual({
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      runAsUser: 0,
      runAsNonRoot: false,
      capabilities: { drop: ['ALL'], add: ['NET_ADMIN'] },
    });
    expect(pod.securityContext).toEqual({ seccompProfile: { type: 'RuntimeDefault' } });
    // The only host path is the iptables lock: no runtime socket, no host filesystem.
    expect(pod.volumes).toEqual([{ name: 'xtables-lock', hostPath: { path: '/run/xtables.lock', type: 'FileOrCreate' } }]);
    expect(c.volumeMounts).toEqual([{ name: 'xtables-lock', mountPath: '/run/xtables.lock' }]);
  });

  test('the DaemonSet runs on every node, survives pressure and rolls with a surge pod (zero refusal)', () => {
    const ds = find(objsOf(dir), 'DaemonSet');
    const pod = ds.spec.template.spec;
    const c = podiamContainer(ds);
    expect(pod.priorityClassName).toBe('system-node-critical');
    expect(pod.tolerations).toContainEqual({ operator: 'Exists' });
    expect(pod.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' });
    expect(ds.spec.updateStrategy.type).toBe('RollingUpdate');
    // The new pod starts while the old one serves (both bind :8181 with SO_REUSEPORT): never a node without podiam.
    expect(ds.spec.updateStrategy.rollingUpdate).toEqual({ maxSurge: 1, maxUnavailable: 0 });
    const { config } = podiamConfig(ds);
    expect(config.shutdownHandoverMs).toBeGreaterThan(0);
    // podiam's shutdown waits for the handover, then drains for up to 10 s (its rules stay).
    expect(pod.terminationGracePeriodSeconds * 1000).toBeGreaterThanOrEqual(config.shutdownHandoverMs + 15_000);
    for (const kind of ['requests', 'limits']) {
      expect(Object.keys(c.resources[kind]).sort()).toEqual(['cpu', 'memory']);
    }
    expect(c.image).toBe(`ghcr.io/podiam/podiam:${VERSION}`);
    expect(ds.spec.selector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'podiam' });
    expect(ds.spec.template.metadata.labels).toMatchObject(ds.spec.selector.matchLabels);
  });

  test('RBAC: exactly pods, namespaces, serviceaccounts and podidentityassociations get/list/watch, their status patch, events create/patch, tokenreviews create, the token signing keys get, bound to the pod’s service account', () => {
    const objs = objsOf(dir).filter((o) => o.metadata.name === 'podiam');
    const role = find(objs, 'ClusterRole');
    const grants = (role.rules as Obj[]).flatMap((r) => {
      expect(r.resourceNames).toBeUndefined();
      if (r.nonResourceURLs !== undefined) return (r.nonResourceURLs as string[]).flatMap((u) => (r.verbs as string[]).map((v) => `url:${u}:${v}`));
      return (r.apiGroups as string[]).flatMap((g) => (r.resources as string[]).flatMap((res) => (r.verbs as string[]).map((v) => `${g}/${res}:${v}`)));
    });
    expect(grants.sort()).toEqual(
      ['/pods:get', '/pods:list', '/pods:watch', '/namespaces:get', '/namespaces:list', '/namespaces:watch', '/serviceaccounts:get', '/serviceaccounts:list', '/serviceaccounts:watch', '/events:create', '/events:patch', 'authentication.k8s.io/tokenreviews:create', 'podiam.io/podidentityassociations:get', 'podiam.io/podidentityassociations:list', 'podiam.io/podidentityassociations:watch', 'podiam.io/podidentityassociations/status:patch', 'url:/openid/v1/jwks:get'].sort(),
    );
    expect(grants.join(' ')).not.toMatch(/\*|secrets/);
    const sa = find(objs, 'ServiceAccount');
    const binding = find(objs, 'ClusterRoleBinding');
    expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
    expect(find(objs, 'DaemonSet').spec.template.spec.serviceAccountName).toBe(sa.metadata.name);
  });
});

test('the start-up taint component: nodes get/patch only (RBAC cannot say "own node"), the flag, and a policy that allows only removing that taint from podiam’s own node', () => {
  const objs = objsOf('manifests/overlays/startup-taint');
  const role = objs.find((o) => o.kind === 'ClusterRole' && o.metadata.name === 'podiam-startup-taint')!;
  expect(role.rules).toEqual([{ apiGroups: [''], resources: ['nodes'], verbs: ['get', 'patch'] }]);
  const binding = objs.find((o) => o.kind === 'ClusterRoleBinding' && o.metadata.name === 'podiam-startup-taint')!;
  expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'podiam', namespace: 'kube-system' }]);
  const { config } = podiamConfig(find(objs, 'DaemonSet'));
  expect(config.removeStartupTaint).toBe('podiam.io/agent-not-ready');
  const policy = objs.find((o) => o.kind === 'ValidatingAdmissionPolicy')!;
  expect(policy.spec.matchConditions).toEqual([{ name: 'podiam-service-account', expression: "request.userInfo.username == 'system:serviceaccount:kube-system:podiam'" }]);
  const rules = (policy.spec.validations as Obj[]).map((v) => v.expression as string).join('\n');
  expect(rules).toContain("request.userInfo.extra['authentication.kubernetes.io/node-name'] == [object.metadata.name]");
  expect(rules).toContain(`t.key == '${config.removeStartupTaint}' && t.effect == 'NoSchedule'`);
  const policyBinding = objs.find((o) => o.kind === 'ValidatingAdmissionPolicyBinding')!;
  expect(policyBinding.spec).toEqual({ policyName: policy.metadata.name, validationActions: ['Deny'] });
  // Everything else is the base, unchanged but for the flag.
  const base = objsOf('manifests');
  const ds = structuredClone(find(objs, 'DaemonSet'));
  ds.spec.template.spec.containers[0].args = (ds.spec.template.spec.containers[0].args as string[]).filter((a) => !a.startsWith('--remove-startup-taint='));
  expect(ds).toEqual(find(base, 'DaemonSet'));
});

test('the CNI overlays change nothing but HOST_INTERFACE', () => {
  const base = objsOf('manifests');
  for (const t of TARGETS.filter((x) => x.dir.includes('/overlays/') && !x.podMonitor && x.startupTaint !== true)) {
    const overlay = structuredClone(objsOf(t.dir));
    const env = podiamContainer(find(overlay, 'DaemonSet')).env as Obj[];
    env.find((e) => e.name === 'HOST_INTERFACE')!.value = 'docker0';
    expect(overlay).toEqual(base);
  }
});

test('an operator’s own kustomization (the README’s example): CNI overlay + PodMonitor component + extra flags', () => {
  const objs = kustomizeOwn((rel) => [
    'apiVersion: kustomize.config.k8s.io/v1beta1',
    'kind: Kustomization',
    'resources:',
    `  - ${rel('overlays/calico')}`,
    'components:',
    `  - ${rel('components/prometheus-operator')}`,
    'images:',
    '  - name: ghcr.io/podiam/podiam',
    '    newTag: 0.1.0-test',
    'patches:',
    '  - target: {kind: DaemonSet, name: podiam}',
    '    patch: |-',
    '      - op: add',
    '        path: /spec/template/spec/containers/0/args/-',
    '        value: --base-role-arn=arn:aws:iam::123456789012:role/',
    '      - op: add',
    '        path: /spec/template/spec/containers/0/args/-',
    '        value: --namespace-restrictions',
    '      - op: add',
    '        path: /spec/template/spec/containers/0/args/-',
    '        value: --sts-region=eu-west-1',
  ]);
  expect(objs.map((o) => o.kind).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'CustomResourceDefinition', 'DaemonSet', 'PodMonitor', 'PodMonitor', 'PrometheusRule', 'ServiceAccount']);
  expect(podiamConfig(find(objs, 'DaemonSet')).config).toMatchObject({
    hostInterface: 'cali+',
    iptables: true,
    baseRoleArn: 'arn:aws:iam::123456789012:role/',
    namespaceRestrictions: true,
    stsRegion: 'eu-west-1',
  });
  expect(podiamContainer(find(objs, 'DaemonSet')).image).toBe('ghcr.io/podiam/podiam:0.1.0-test');
  for (const obj of objs) {
    expect(schemaErrors(obj)).toBe('');
    expect(strictErrors(obj)).toEqual([]);
  }
  for (const pm of objs.filter((o) => o.kind === 'PodMonitor')) expect(pm.metadata.namespace).toBe(NAMESPACE);
});

test('the monitoring component: the PrometheusRule holds the rules file, the ConfigMap the dashboard, for Grafana’s sidecar', () => {
  const objs = objsOf('manifests/overlays/prometheus-operator');
  const rules = parseAllDocuments(readFileSync(path.join(MANIFESTS, 'monitoring/podiam.rules.yaml'), 'utf8'))[0]!.toJS() as Obj;
  expect(find(objs, 'PrometheusRule').spec.groups).toEqual(rules.groups);
  expect(find(objs, 'PrometheusRule').metadata.namespace).toBe(NAMESPACE);
  const cm = find(objs, 'ConfigMap');
  expect(cm.metadata.labels).toEqual({ 'app.kubernetes.io/name': 'podiam', grafana_dashboard: '1' });
  expect(Object.keys(cm.data)).toEqual(['podiam-dashboard.json']);
  expect(cm.data['podiam-dashboard.json']).toBe(readFileSync(path.join(MANIFESTS, 'components/prometheus-operator/podiam-dashboard.json'), 'utf8'));
  expect(JSON.parse(cm.data['podiam-dashboard.json']).uid).toBe('podiam');
});

// ---------------------------------------------------------------------------------------------
// The Dockerfile

interface Instruction {
  readonly keyword: string;
  readonly args: string;
  readonly line: number;
}

/** Instructions per stage: comments dropped, continuation lines joined. */
function dockerfileStages(text: string): Instruction[][] {
  const stages: Instruction[][] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (/^\s*(#|$)/.test(lines[i]!)) continue;
    const start = i;
    let full = lines[i]!;
    while (full.endsWith('\\') && i + 1 < lines.length) {
      i++;
      if (/^\s*#/.test(lines[i]!)) continue;
      full = full.slice(0, -1) + ' ' + lines[i]!.trim();
    }
    const m = /^\s*(\w+)\s+(.*)$/.exec(full);
    if (m === null) throw new Error(`Dockerfile line ${start + 1}: not an instruction`);
    const ins = { keyword: m[1]!.toUpperCase(), args: m[2]!.replace(/\s+/g, ' ').trim(), line: start + 1 };
    if (ins.keyword === 'FROM') stages.push([]);
    if (stages.length === 0) throw new Error(`Dockerfile line ${start + 1}: ${ins.keyword} before FROM`);
    stages[stages.length - 1]!.push(ins);
  }
  return stages;
}

describe('Dockerfile', () => {
  const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
  const stages = dockerfileStages(dockerfile);
  const build = stages[0]!;
  const runtime = stages[stages.length - 1]!;
  const runs = (stage: Instruction[]): string[] => stage.filter((i) => i.keyword === 'RUN').map((i) => i.args);

  test('lints clean with dockerfile-utils (the validator of the Docker language server)', () => {
    const problems = dockerfileUtilsValidate(dockerfile).map((d) => `line ${d.range.start.line + 1}: ${d.message}`);
    expect(problems).toEqual([]);
  });

  test('lints clean with dockerfilelint', () => {
    const bin = path.join(ROOT, 'node_modules/dockerfilelint/bin/dockerfilelint');
    let out: string;
    try {
      out = execFileSync(process.execPath, [bin, '-j', 'Dockerfile'], { cwd: ROOT, encoding: 'utf8' });
    } catch (err) {
      out = (err as { stdout?: string }).stdout ?? ''; // it exits with the issue count
    }
    const report = JSON.parse(out) as { totalIssues: number; files: Array<{ issues: Array<{ line: number; title: string }> }> };
    expect(report.files.flatMap((f) => f.issues.map((i) => `line ${i.line}: ${i.title}`))).toEqual([]);
    expect(report.totalIssues).toBe(0);
  });

  test('is multi-stage on node:22 slim: a build stage, and a runtime stage FROM the same base', () => {
    expect(stages.length).toBe(2);
    expect(build[0]!.args).toBe('node:22-bookworm-slim AS build');
    expect(runtime[0]!.args).toMatch(/^node:22[\w.-]*-slim$/);
  });

  test('the build stage installs all dependencies and builds', () => {
    expect(runs(build)).toEqual(['npm ci --no-audit --no-fund', 'npm run build']);
  });

  test('the runtime stage: iptables, nftables (the ruleset watch) and iproute2 from apt, the bundle and package.json only (no node_modules), no package manager', () => {
    const apt = runs(runtime).find((r) => r.includes('apt-get install'));
    expect(apt).toMatch(/^apt-get update && apt-get install -y --no-install-recommends iptables nftables conntrack iproute2 && /);
    expect(apt).toMatch(/rm -rf \/var\/lib\/apt\/lists\/\*$/);
    // Nothing is installed with npm: the bundle holds every dependency podiam loads.
    expect(runs(runtime).join(' ')).not.toMatch(/\bnpm (ci|install|i)\b/);
    const removal = runs(runtime).filter((r) => /\bnpm\b/.test(r));
    expect(removal).toHaveLength(1);
    expect(removal[0]).toMatch(/^rm -rf \/usr\/local\/lib\/node_modules\/npm\b/);
    expect(removal[0]).toMatch(/\/usr\/local\/bin\/npx\b/);
    expect(runs(runtime).join(' ')).not.toMatch(/npm run build|tsc|esbuild|apt-get install.*\b(gcc|g\+\+|make|python3?|build-essential|git|curl)\b/);
    const copies = runtime.filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD').map((i) => `${i.keyword} ${i.args}`);
    expect(copies).toEqual(['COPY --from=build /app/package.json ./package.json', 'COPY --from=build /app/dist/podiam.js ./dist/podiam.js', 'COPY --from=build /app/dist/chunks ./dist/chunks']);
    expect(runtime.find((i) => i.keyword === 'WORKDIR')?.args).toBe('/app');
  });

  test('ENTRYPOINT runs dist/podiam.js, which the build emits, with the V8 flags of its shebang, as root (iptables needs NET_ADMIN)', () => {
    const entrypoints = runtime.filter((i) => i.keyword === 'ENTRYPOINT');
    expect(entrypoints).toHaveLength(1);
    // scripts/build.mjs bundles src/cli.ts into dist/podiam.js and writes NODE_FLAGS into its shebang.
    const buildScript = readFileSync(path.join(ROOT, 'scripts/build.mjs'), 'utf8');
    expect(buildScript).toMatch(/export const ENTRY = path\.join\(ROOT, 'src\/cli\.ts'\);/);
    expect(buildScript).toMatch(/export const OUTFILE = path\.join\(ROOT, 'dist\/podiam\.js'\);/);
    const flags = JSON.parse(/export const NODE_FLAGS = (\[[^\]]*\]);/.exec(buildScript)![1]!.replace(/'/g, '"')) as string[];
    expect(flags.length).toBeGreaterThan(0);
    expect(JSON.parse(entrypoints[0]!.args)).toEqual(['node', ...flags, '/app/dist/podiam.js']);
    // The environment the shebang sets (PROCESS_ENV) is the image's ENV too; the built shebang has both.
    const processEnv = JSON.parse(/export const PROCESS_ENV = (\{[^}]*\});/.exec(buildScript)![1]!.replace(/'/g, '"').replace(/(\w+):/g, '"$1":')) as Record<string, string>;
    expect(Object.keys(processEnv).length).toBeGreaterThan(0);
    const imageEnv = runtime.filter((i) => i.keyword === 'ENV').map((i) => i.args).join(' ');
    for (const [k, v] of Object.entries(processEnv)) expect(imageEnv).toMatch(new RegExp(`(^|\\s)${k}=${v}(\\s|$)`));
    expect(shebangEnv()).toEqual(processEnv);
    expect(nodeFlags()).toEqual(flags);
    expect(runtime.find((i) => i.keyword === 'CMD')).toBeUndefined();
    expect(runtime.filter((i) => i.keyword === 'USER')).toEqual([]);
    expect(dockerfile).toMatch(/No USER: podiam runs as root/);
    expect(build.filter((i) => i.keyword === 'COPY').map((i) => i.args)).toContain('scripts/build.mjs ./scripts/build.mjs');
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string>; bin: Record<string, string> };
    expect(pkg.scripts['build']).toMatch(/node scripts\/build\.mjs/);
    expect(pkg.bin['podiam']).toBe('dist/podiam.js');
    expect(existsSync(path.join(ROOT, 'src/cli.ts'))).toBe(true);
    expect(runtime.find((i) => i.keyword === 'EXPOSE')?.args).toBe('8181');
  });

  test('no secrets: no .npmrc, .env or key files copied, no credentials in ARG or ENV', () => {
    for (const ins of stages.flat()) {
      if (ins.keyword === 'COPY' || ins.keyword === 'ADD') expect(ins.args).not.toMatch(/\.npmrc|\.env\b|\.pem|id_rsa|credentials|secret/i);
      if (ins.keyword === 'ARG' || ins.keyword === 'ENV') expect(ins.args).not.toMatch(/token|secret|password|key/i);
      expect(ins.keyword).not.toBe('ADD');
    }
  });

  test('.dockerignore is an allowlist holding exactly what the Dockerfile copies from the context', () => {
    const patterns = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(patterns[0]).toBe('*');
    const allowed = patterns.filter((p) => p.startsWith('!')).map((p) => p.slice(1).replace(/\/$/, ''));
    const copied = stages
      .flat()
      .filter((i) => i.keyword === 'COPY' && !i.args.startsWith('--from='))
      .flatMap((i) => i.args.split(' ').slice(0, -1));
    expect([...new Set(copied)].sort()).toEqual([...allowed].sort());
    for (const never of ['node_modules', 'dist', '.git', 'test', '.npmrc', '.env']) expect(allowed).not.toContain(never);
  });
});

test('the cleanup overlay: one DaemonSet whose init container runs podiam --cleanup with NET_ADMIN only, on every node', () => {
  const objs = kustomize(path.join(MANIFESTS, 'overlays/cleanup'));
  expect(objs.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual(['DaemonSet/podiam-cleanup']);
  const ds = objs[0]!;
  expect(schemaErrors(ds)).toBe('');
  expect(strictErrors(ds)).toEqual([]);
  expect(ds.metadata.namespace).toBe(NAMESPACE);
  const pod = ds.spec.template.spec;
  expect(pod.hostNetwork).toBe(true);
  expect(pod.tolerations).toContainEqual({ operator: 'Exists' });
  expect(pod.automountServiceAccountToken).toBe(false);
  const [init] = pod.initContainers as Obj[];
  expect(init!.image).toBe(`ghcr.io/podiam/podiam:${VERSION}`);
  expect(parseConfig(init!.args as string[], {})).toEqual({ kind: 'cleanup' });
  expect(init!.securityContext.capabilities).toEqual({ drop: ['ALL'], add: ['NET_ADMIN'] });
  expect(init!.securityContext.privileged).toBe(false);
  for (const c of pod.containers as Obj[]) expect(c.securityContext.capabilities).toEqual({ drop: ['ALL'] });
});
