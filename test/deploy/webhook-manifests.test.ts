/**
 * The webhook's kustomize component (manifests/components/webhook), checked as an operator would
 * apply it, without a cluster: it renders with `kubectl kustomize` (alone with the base, and in an
 * operator's own kustomization with a CNI overlay); every object validates against its schema
 * (kubernetes-models, @kubernetes-models/cert-manager) and has no field the API would reject;
 * the Deployment's args parse with `podiam webhook`'s own parser and agree with the Service,
 * probes, Secret, Certificate and MutatingWebhookConfiguration; the webhook can never block a pod;
 * RBAC is exactly what it reads.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { Certificate } from '@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate';
import { Issuer } from '@kubernetes-models/cert-manager/cert-manager.io/v1/Issuer';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition';
import { MutatingWebhookConfiguration } from 'kubernetes-models/admissionregistration.k8s.io/v1/MutatingWebhookConfiguration';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { parseConfig } from '../../src/config.js';
import { parseWebhookConfig } from '../../src/webhook/config.js';
import { CREDENTIALS_FULL_URI } from '../../src/webhook/mutate.js';
import type { WebhookConfig } from '../../src/webhook/config.js';
import type { Kind, Obj } from '../support/manifests.js';
import { MANIFESTS, kustomize, kustomizeOwn, manifestChecks } from '../support/manifests.js';
import { ROOT } from '../support/podiam-process.js';


const KINDS: Record<string, Kind> = {
  'v1/ServiceAccount': { model: ServiceAccount as never, clientModel: 'V1ServiceAccount', namespaced: true },
  'v1/Service': { model: Service as never, clientModel: 'V1Service', namespaced: true },
  'rbac.authorization.k8s.io/v1/ClusterRole': { model: ClusterRole as never, clientModel: 'V1ClusterRole', namespaced: false },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': { model: ClusterRoleBinding as never, clientModel: 'V1ClusterRoleBinding', namespaced: false },
  'apps/v1/DaemonSet': { model: DaemonSet as never, clientModel: 'V1DaemonSet', namespaced: true },
  'apps/v1/Deployment': { model: Deployment as never, clientModel: 'V1Deployment', namespaced: true },
  'policy/v1/PodDisruptionBudget': { model: PodDisruptionBudget as never, clientModel: 'V1PodDisruptionBudget', namespaced: true },
  'networking.k8s.io/v1/NetworkPolicy': { model: NetworkPolicy as never, clientModel: 'V1NetworkPolicy', namespaced: true },
  'admissionregistration.k8s.io/v1/MutatingWebhookConfiguration': { model: MutatingWebhookConfiguration as never, clientModel: 'V1MutatingWebhookConfiguration', namespaced: false },
  // CRDs: their own schemas; the unknown-field walk stops at ObjectMeta.
  'cert-manager.io/v1/Certificate': { model: Certificate as never, namespaced: true },
  'cert-manager.io/v1/Issuer': { model: Issuer as never, namespaced: true },
  'monitoring.coreos.com/v1/PodMonitor': { model: PodMonitor as never, namespaced: true },
  'apiextensions.k8s.io/v1/CustomResourceDefinition': { model: CustomResourceDefinition as never, clientModel: 'V1CustomResourceDefinition', namespaced: false },
};
const { kindOf, schemaErrors, strictErrors } = manifestChecks(KINDS);

function find(objs: readonly Obj[], kind: string, name = 'podiam-webhook'): Obj {
  const found = objs.filter((o) => o.kind === kind && o.metadata.name === name);
  expect(found).toHaveLength(1);
  return found[0]!;
}

function container(objs: readonly Obj[]): Obj {
  const containers = find(objs, 'Deployment').spec.template.spec.containers as Obj[];
  expect(containers).toHaveLength(1);
  return containers[0]!;
}

function webhookConfig(objs: readonly Obj[]): WebhookConfig {
  const c = container(objs);
  expect(c.command).toBeUndefined(); // the image's ENTRYPOINT is podiam; the first arg picks the subcommand
  expect(c.env).toBeUndefined();
  expect(c.args[0]).toBe('webhook');
  const request = parseWebhookConfig((c.args as string[]).slice(1), {});
  if (request.kind !== 'run') throw new Error('the args ask for help, not a run');
  return request.config;
}

function portNumber(c: Obj, port: number | string): number {
  if (typeof port === 'number') return port;
  const named = ((c.ports ?? []) as Obj[]).find((p) => p.name === port);
  if (named === undefined) throw new Error(`no container port named ${port}`);
  return named.containerPort as number;
}

const OVERLAY = 'manifests/overlays/webhook';
let objs: Obj[];
beforeAll(() => {
  objs = kustomize(path.join(ROOT, OVERLAY));
});

test(`kubectl kustomize ${OVERLAY}: the base and exactly the webhook's objects`, () => {
  const base = kustomize(MANIFESTS).map((o) => `${o.kind}/${o.metadata.name}`);
  const added = objs.map((o) => `${o.kind}/${o.metadata.name}`).filter((k) => !base.includes(k));
  expect(added.sort()).toEqual(
    [
      'Certificate/podiam-webhook',
      'Certificate/podiam-webhook-ca',
      'ClusterRole/podiam-webhook',
      'ClusterRoleBinding/podiam-webhook',
      'Deployment/podiam-webhook',
      'Issuer/podiam-webhook-ca',
      'Issuer/podiam-webhook-selfsigned',
      'MutatingWebhookConfiguration/podiam-webhook',
      'NetworkPolicy/podiam-webhook',
      'PodDisruptionBudget/podiam-webhook',
      'Service/podiam-webhook',
      'ServiceAccount/podiam-webhook',
    ].sort(),
  );
  // Of the base, the component changes exactly the agent's args: token identity on, its addresses on a dummy link.
  const expected = kustomize(MANIFESTS);
  const ds = expected.find((o) => o.kind === 'DaemonSet')!;
  ds.spec.template.spec.containers[0].args.push('--token-identity', '--token-interface=pod-id-link0');
  expect(objs.filter((o) => base.includes(`${o.kind}/${o.metadata.name}`))).toEqual(expected);
});

test('the agent serves what the webhook points pods at: --token-identity on 169.254.170.23:80 (the injected URI), the same audience', () => {
  const args = (find(objs, 'DaemonSet', 'podiam').spec.template.spec.containers[0].args as string[]).map((a) =>
    a.replace('$(HOST_IPS)', '10.0.1.23').replace('$(NODE_NAME)', 'node-1').replace('$(HOST_INTERFACE)', 'docker0'),
  );
  const request = parseConfig(args, {});
  if (request.kind !== 'run') throw new Error('the agent args do not run');
  const agent = request.config;
  expect(agent.tokenIdentity).toBe(true);
  expect(agent.tokenInterface).toBe('pod-id-link0');
  const injected = new URL(CREDENTIALS_FULL_URI);
  expect(agent.tokenAddrs).toContainEqual({ host: injected.hostname, port: Number(injected.port || 80) });
  expect(agent.tokenAudience).toBe(webhookConfig(objs).tokenAudience);
  // The component alone (no other overlay) is the same switch for any CNI overlay.
  const calico = kustomizeOwn((rel) => ['apiVersion: kustomize.config.k8s.io/v1beta1', 'kind: Kustomization', 'resources:', `  - ${rel('overlays/calico')}`, 'components:', `  - ${rel('components/token-identity')}`]);
  expect(find(calico, 'DaemonSet', 'podiam').spec.template.spec.containers[0].args).toEqual(expect.arrayContaining(['--token-identity', '--token-interface=pod-id-link0', '--host-interface=$(HOST_INTERFACE)']));
  expect(calico.filter((o) => o.kind === 'MutatingWebhookConfiguration')).toHaveLength(1);
});

test('every object validates against its schema, has no unknown fields, and sits in kube-system when namespaced', () => {
  for (const obj of objs) {
    const id = `${obj.kind}/${obj.metadata.name}`;
    expect({ id, errors: schemaErrors(obj), unknown: strictErrors(obj) }).toEqual({ id, errors: '', unknown: [] });
    expect([id, obj.metadata.namespace]).toEqual([id, kindOf(obj).namespaced ? 'kube-system' : undefined]);
  }
});

test('the checkers can fail: a wrong type, an unknown field, a bad cert-manager field', () => {
  const mwc = structuredClone(find(objs, 'MutatingWebhookConfiguration'));
  mwc.webhooks[0].timeoutSeconds = '3';
  expect(schemaErrors(mwc)).toMatch(/timeoutSeconds/);
  mwc.webhooks[0].timeoutSeconds = 3;
  mwc.webhooks[0].reinvocationPolcy = 'IfNeeded';
  expect(strictErrors(mwc)).toEqual(['MutatingWebhookConfiguration.webhooks[0].reinvocationPolcy']);
  const cert = structuredClone(find(objs, 'Certificate'));
  cert.spec.dnsNames = 'podiam-webhook.kube-system.svc';
  expect(schemaErrors(cert)).toMatch(/dnsNames/);
});

test('the Deployment’s args parse with podiam webhook’s own parser, and the ports, probes and TLS files agree', () => {
  const config = webhookConfig(objs);
  const c = container(objs);
  expect(config).toMatchObject({ port: 8443, metricsPort: 8080, tokenAudience: 'pods.eks.amazonaws.com', injectAllWithRole: false, logFormat: 'json' });
  expect(c.ports).toEqual([
    { name: 'https', containerPort: config.port, protocol: 'TCP' },
    { name: 'metrics', containerPort: config.metricsPort, protocol: 'TCP' },
  ]);
  expect(c.livenessProbe.httpGet.path).toBe('/healthz');
  expect(c.readinessProbe.httpGet.path).toBe('/readyz');
  for (const probe of [c.livenessProbe, c.readinessProbe]) expect(portNumber(c, probe.httpGet.port)).toBe(config.metricsPort);
  const template = find(objs, 'Deployment').spec.template;
  expect(template.metadata.annotations['prometheus.io/port']).toBe(String(config.metricsPort));

  // The certificate files are in the Secret volume cert-manager writes.
  const mount = (c.volumeMounts as Obj[]).find((m) => config.tlsCertFile.startsWith(`${m.mountPath}/`));
  expect(mount).toBeDefined();
  expect(mount!.readOnly).toBe(true);
  expect(path.dirname(config.tlsKeyFile)).toBe(mount!.mountPath);
  expect([path.basename(config.tlsCertFile), path.basename(config.tlsKeyFile)]).toEqual(['tls.crt', 'tls.key']);
  const volume = (template.spec.volumes as Obj[]).find((v) => v.name === mount!.name)!;
  expect(volume.secret.secretName).toBe(find(objs, 'Certificate').spec.secretName);
});

test('the Service reaches the https port, and the MutatingWebhookConfiguration calls it at /mutate, with the serving certificate’s CA', () => {
  const service = find(objs, 'Service');
  const c = container(objs);
  const deployment = find(objs, 'Deployment');
  expect(service.spec.selector).toEqual(deployment.spec.selector.matchLabels);
  expect(service.spec.ports).toHaveLength(1);
  expect(portNumber(c, service.spec.ports[0].targetPort)).toBe(webhookConfig(objs).port);
  const mwc = find(objs, 'MutatingWebhookConfiguration');
  expect(mwc.webhooks).toHaveLength(1);
  const hook = mwc.webhooks[0];
  expect(hook.clientConfig.service).toEqual({ name: service.metadata.name, namespace: service.metadata.namespace, path: '/mutate', port: service.spec.ports[0].port });
  // cert-manager's cainjector: the annotation names the serving Certificate, whose DNS names cover the Service.
  const cert = find(objs, 'Certificate');
  expect(mwc.metadata.annotations['cert-manager.io/inject-ca-from']).toBe(`${cert.metadata.namespace}/${cert.metadata.name}`);
  expect(cert.spec.dnsNames).toContain(`${service.metadata.name}.${service.metadata.namespace}.svc`);
  expect(cert.spec.usages).toContain('server auth');
  // Renewal keeps the CA: the serving certificate comes from a CA Issuer, whose CA outlives it.
  const caIssuer = find(objs, 'Issuer', cert.spec.issuerRef.name);
  const ca = find(objs, 'Certificate', 'podiam-webhook-ca');
  expect(caIssuer.spec.ca.secretName).toBe(ca.spec.secretName);
  expect(ca.spec.isCA).toBe(true);
  const hours = (d: string) => Number(/^(\d+)h$/.exec(d)![1]);
  expect(hours(ca.spec.duration)).toBeGreaterThan(hours(cert.spec.duration) * 10);
  expect(hours(cert.spec.renewBefore)).toBeLessThan(hours(cert.spec.duration));
  expect(cert.spec.privateKey.rotationPolicy).toBe('Always');
});

test('the webhook never blocks a pod: Ignore, a short timeout the lookups fit in, pod CREATE only, idempotent reinvocation, no side effects', () => {
  const hook = find(objs, 'MutatingWebhookConfiguration').webhooks[0];
  const config = webhookConfig(objs);
  expect(hook.failurePolicy).toBe('Ignore');
  expect(hook.sideEffects).toBe('None');
  expect(hook.admissionReviewVersions).toEqual(['v1']);
  expect(hook.reinvocationPolicy).toBe('IfNeeded');
  expect(hook.timeoutSeconds).toBeLessThanOrEqual(5);
  // Namespace then ServiceAccount, each up to --lookup-timeout, and still time to answer.
  expect(2 * config.lookupTimeoutMs).toBeLessThan(hook.timeoutSeconds * 1000);
  expect(hook.rules).toEqual([{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }]);
  // kube-system (where the webhook itself runs) and opted-out namespaces and pods are never sent.
  expect(hook.namespaceSelector.matchExpressions).toContainEqual({ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['kube-system'] });
  expect(hook.namespaceSelector.matchExpressions).toContainEqual({ key: config.optInKey, operator: 'NotIn', values: ['false'] });
  expect(hook.objectSelector.matchExpressions).toEqual([{ key: config.optInKey, operator: 'NotIn', values: ['false'] }]);
  expect(find(objs, 'Deployment').metadata.namespace).toBe('kube-system');
  // On SIGTERM it keeps answering for --shutdown-delay, then lets in-flight admissions finish.
  const grace = find(objs, 'Deployment').spec.template.spec.terminationGracePeriodSeconds * 1000;
  expect(grace).toBeGreaterThan(config.shutdownDelayMs + hook.timeoutSeconds * 1000);
});

test('two replicas on different nodes, a PodDisruptionBudget, rolling without losing one, pods distinct from the node agent’s', () => {
  const deployment = find(objs, 'Deployment');
  const pdb = find(objs, 'PodDisruptionBudget');
  expect(deployment.spec.replicas).toBe(2);
  expect(deployment.spec.strategy.rollingUpdate).toEqual({ maxSurge: 1, maxUnavailable: 0 });
  expect(pdb.spec.selector.matchLabels).toEqual(deployment.spec.selector.matchLabels);
  expect(pdb.spec.minAvailable).toBe(1);
  expect(deployment.spec.template.spec.topologySpreadConstraints[0]).toMatchObject({ topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: deployment.spec.selector.matchLabels } });
  // The DaemonSet's selector must not select the webhook's pods, nor the reverse.
  const ds = find(objs, 'DaemonSet', 'podiam');
  const selects = (selector: Record<string, string>, labels: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v);
  expect(selects(ds.spec.selector.matchLabels, deployment.spec.template.metadata.labels)).toBe(false);
  expect(selects(deployment.spec.selector.matchLabels, ds.spec.template.metadata.labels)).toBe(false);
});

test('the pod: non-root, read-only, no capabilities, no host access', () => {
  const pod = find(objs, 'Deployment').spec.template.spec;
  const c = container(objs);
  expect(pod.hostNetwork).toBeUndefined();
  expect(pod.securityContext).toEqual({ runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } });
  expect(c.securityContext).toEqual({ privileged: false, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
  expect((pod.volumes as Obj[]).every((v) => v.hostPath === undefined)).toBe(true);
  expect(pod.serviceAccountName).toBe(find(objs, 'ServiceAccount').metadata.name);
  for (const kind of ['requests', 'limits']) expect(Object.keys(c.resources[kind]).sort()).toEqual(['cpu', 'memory']);
});

test('RBAC: exactly get on namespaces and serviceaccounts, bound to the webhook’s service account', () => {
  const role = find(objs, 'ClusterRole');
  const grants = (role.rules as Obj[]).flatMap((r) => {
    expect(r.resourceNames).toBeUndefined();
    return (r.apiGroups as string[]).flatMap((g) => (r.resources as string[]).flatMap((res) => (r.verbs as string[]).map((v) => `${g}/${res}:${v}`)));
  });
  expect(grants.sort()).toEqual(['/namespaces:get', '/serviceaccounts:get']);
  const sa = find(objs, 'ServiceAccount');
  expect(find(objs, 'ClusterRoleBinding').roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name });
  expect(find(objs, 'ClusterRoleBinding').subjects).toEqual([{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
});

test('an operator’s own kustomization (the README’s example): a CNI overlay + the webhook component + inject-all-with-role', () => {
  const own = kustomizeOwn((rel) => [
    'apiVersion: kustomize.config.k8s.io/v1beta1',
    'kind: Kustomization',
    'resources:',
    `  - ${rel('overlays/calico')}`,
    'components:',
    `  - ${rel('components/token-identity')}`,
    'patches:',
    '  - target: {kind: Deployment, name: podiam-webhook}',
    '    patch: |-',
    '      - op: add',
    '        path: /spec/template/spec/containers/0/args/-',
    '        value: --inject-all-with-role',
  ]);
  expect(webhookConfig(own).injectAllWithRole).toBe(true);
  expect(find(own, 'DaemonSet', 'podiam').spec.template.spec.containers[0].env.find((e: Obj) => e.name === 'HOST_INTERFACE').value).toBe('cali+');
  for (const obj of own) {
    expect(schemaErrors(obj)).toBe('');
    expect(strictErrors(obj)).toEqual([]);
  }
});

/**
 * What a NetworkPolicy lets reach the webhook's pods on one container port: per ingress rule that
 * covers the port, its sources ('*' for a rule without `from`: every source).
 */
function sourcesOf(policy: Obj, c: Obj, port: number): string[] {
  const sources: string[] = [];
  for (const rule of (policy.spec.ingress ?? []) as Obj[]) {
    const ports = (rule.ports ?? []) as Obj[];
    if (ports.length > 0 && !ports.some((p) => portNumber(c, p.port) === port)) continue;
    if (rule.from === undefined || rule.from.length === 0) {
      sources.push('*');
      continue;
    }
    for (const peer of rule.from as Obj[]) {
      // Only ipBlocks: a pod or namespace selector would let pods call /mutate.
      expect(Object.keys(peer)).toEqual(['ipBlock']);
      sources.push(peer.ipBlock.cidr as string);
    }
  }
  return sources;
}

test('the NetworkPolicy: the webhook’s pods, ingress only; /mutate only from ipBlock sources, the metrics port for probes and Prometheus, nothing else', () => {
  const policy = find(objs, 'NetworkPolicy');
  const deployment = find(objs, 'Deployment');
  const c = container(objs);
  const config = webhookConfig(objs);
  expect(policy.metadata.namespace).toBe(deployment.metadata.namespace);
  expect(policy.spec.podSelector).toEqual({ matchLabels: deployment.spec.selector.matchLabels });
  expect(policy.spec.policyTypes).toEqual(['Ingress']);
  // The default is open on 8443 (a wrong CIDR would stall every pod creation for 3 s) until the
  // operator sets the API server's source; never by a pod or namespace selector.
  expect(sourcesOf(policy, c, config.port).sort()).toEqual(['0.0.0.0/0', '::/0']);
  expect(sourcesOf(policy, c, config.metricsPort)).toEqual(['*']);
  // Every rule names its ports: no port of the pod is open by a rule without ports.
  for (const rule of policy.spec.ingress as Obj[]) expect((rule.ports as Obj[]).length).toBeGreaterThan(0);
  expect(sourcesOf(policy, c, 9999)).toEqual([]);
});

test('an operator sets the API server’s source (the README’s patch): only that CIDR reaches /mutate', () => {
  const own = kustomizeOwn((rel) => [
    'apiVersion: kustomize.config.k8s.io/v1beta1',
    'kind: Kustomization',
    'resources:',
    `  - ${rel('base')}`,
    'components:',
    `  - ${rel('components/webhook')}`,
    'patches:',
    '  - target: {kind: NetworkPolicy, name: podiam-webhook}',
    '    patch: |-',
    '      - op: replace',
    '        path: /spec/ingress/0/from',
    '        value: [{ipBlock: {cidr: 10.0.0.0/28}}, {ipBlock: {cidr: 10.0.0.16/28}}]',
  ]);
  const policy = find(own, 'NetworkPolicy');
  const c = container(own);
  expect(sourcesOf(policy, c, webhookConfig(own).port)).toEqual(['10.0.0.0/28', '10.0.0.16/28']);
  expect(schemaErrors(policy)).toBe('');
  expect(strictErrors(policy)).toEqual([]);
});

test('the webhook’s metrics are scraped: by the PodMonitor podiam-webhook and by the plain scrape job, as job="podiam-webhook", which the certificate alert selects', () => {
  const own = kustomizeOwn((rel) => ['apiVersion: kustomize.config.k8s.io/v1beta1', 'kind: Kustomization', 'resources:', `  - ${rel('overlays/calico')}`, 'components:', `  - ${rel('components/token-identity')}`, `  - ${rel('components/prometheus-operator')}`]);
  const deployment = find(own, 'Deployment');
  const c = container(own);
  const podLabels = deployment.spec.template.metadata.labels as Record<string, string>;
  const config = webhookConfig(own);
  // The PodMonitor.
  const pm = find(own, 'PodMonitor');
  for (const [k, v] of Object.entries(pm.spec.selector.matchLabels as Record<string, string>)) expect(podLabels[k]).toBe(v);
  // It selects no agent pod (those are job="podiam").
  const agentLabels = find(own, 'DaemonSet', 'podiam').spec.template.metadata.labels as Record<string, string>;
  expect(Object.entries(pm.spec.selector.matchLabels as Record<string, string>).every(([k, v]) => agentLabels[k] === v)).toBe(false);
  expect(pm.spec.podMetricsEndpoints).toHaveLength(1);
  expect(portNumber(c, pm.spec.podMetricsEndpoints[0].port)).toBe(config.metricsPort);
  expect(pm.spec.podMetricsEndpoints[0].relabelings).toEqual(expect.arrayContaining([{ targetLabel: 'job', replacement: 'podiam-webhook' }, { sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node' }]));
  // The plain scrape job: the same pods, the same port, the same job name.
  const scrape = parse(readFileSync(path.join(MANIFESTS, 'monitoring/prometheus-scrape.yaml'), 'utf8')) as Obj;
  const job = (scrape.scrape_configs as Obj[]).find((j) => j.job_name === 'podiam-webhook')!;
  const [key, value] = (job.kubernetes_sd_configs[0].selectors[0].label as string).split('=');
  expect(podLabels[key!]).toBe(value);
  const keepPort = (job.relabel_configs as Obj[]).find((r) => (r.source_labels as string[]).includes('__meta_kubernetes_pod_container_port_name'))!;
  expect((c.ports as Obj[]).filter((p) => new RegExp(`^(?:${keepPort.regex})$`).test(p.name)).map((p) => p.containerPort)).toEqual([config.metricsPort]);
  expect(deployment.spec.template.metadata.annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/path': '/metrics' });
  // The alert on the certificate selects that job, and ships in the PrometheusRule.
  const rule = find(own, 'PrometheusRule', 'podiam');
  const alert = (rule.spec.groups as Obj[]).flatMap((g) => g.rules as Obj[]).find((r) => r.alert === 'PodiamWebhookCertificateExpiringSoon')!;
  expect(alert.expr).toContain('podiam_webhook_certificate_expiry_timestamp_seconds{job="podiam-webhook"}');
});
