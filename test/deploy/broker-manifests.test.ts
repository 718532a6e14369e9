/**
 * The broker component (manifests/components/broker, through manifests/overlays/broker), checked
 * as an operator would use it, without a cluster: it renders with `kubectl kustomize` on any
 * overlay; every object validates against its schema and has no field the API would reject; the
 * broker is highly available (two replicas never on one node, a PodDisruptionBudget, rolling
 * without losing one, system-cluster-critical) and unprivileged; the agents and the broker agree
 * on the address, the CA, the token audience and the agents' ServiceAccount; the agents hold no
 * AWS credentials and no STS flag in this mode; RBAC is exactly what the broker reads.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Certificate } from '@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate';
import { Issuer } from '@kubernetes-models/cert-manager/cert-manager.io/v1/Issuer';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { parseBrokerConfig } from '../../src/broker/config.js';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import type { Kind, Obj } from '../support/manifests.js';
import { MANIFESTS, kustomize, kustomizeOwn, manifestChecks } from '../support/manifests.js';
import { parseConfig } from '../../src/config.js';
import { ROOT } from '../support/podiam-process.js';

const KINDS: Record<string, Kind> = {
  'v1/ServiceAccount': { model: ServiceAccount as never, clientModel: 'V1ServiceAccount', namespaced: true },
  'v1/Service': { model: Service as never, clientModel: 'V1Service', namespaced: true },
  'rbac.authorization.k8s.io/v1/ClusterRole': { model: ClusterRole as never, clientModel: 'V1ClusterRole', namespaced: false },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': { model: ClusterRoleBinding as never, clientModel: 'V1ClusterRoleBinding', namespaced: false },
  'apps/v1/DaemonSet': { model: DaemonSet as never, clientModel: 'V1DaemonSet', namespaced: true },
  'apiextensions.k8s.io/v1/CustomResourceDefinition': { model: CustomResourceDefinition as never, clientModel: 'V1CustomResourceDefinition', namespaced: false },
  'apps/v1/Deployment': { model: Deployment as never, clientModel: 'V1Deployment', namespaced: true },
  'policy/v1/PodDisruptionBudget': { model: PodDisruptionBudget as never, clientModel: 'V1PodDisruptionBudget', namespaced: true },
  'cert-manager.io/v1/Certificate': { model: Certificate as never, namespaced: true },
  'cert-manager.io/v1/Issuer': { model: Issuer as never, namespaced: true },
};
const { kindOf, schemaErrors, strictErrors } = manifestChecks(KINDS);

const BROKER = 'podiam-broker';

function find(objs: readonly Obj[], kind: string, name = BROKER): Obj {
  const found = objs.filter((o) => o.kind === kind && o.metadata.name === name);
  expect(found).toHaveLength(1);
  return found[0]!;
}

function only<T>(items: readonly T[]): T {
  expect(items).toHaveLength(1);
  return items[0]!;
}

/** `--name=value` flags of an args list (the manifests write every flag in that form). */
function flags(args: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const a of args) {
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(a);
    if (m === null) continue;
    expect(out.has(m[1]!)).toBe(false); // no flag given twice
    out.set(m[1]!, m[2] ?? 'true');
  }
  return out;
}

function brokerContainer(objs: readonly Obj[]): Obj {
  return only(find(objs, 'Deployment').spec.template.spec.containers as Obj[]);
}

function agentContainer(objs: readonly Obj[]): Obj {
  return only(find(objs, 'DaemonSet', 'podiam').spec.template.spec.containers as Obj[]);
}

/** The Dockerfile's ENTRYPOINT, as a list. */
test('the replicas share one cache: --peers names their own ServiceAccount, each knows its pod name, verifies the others against the CA alone and the certificate\'s name, and proves itself with a projected token', () => {
  const f = brokerFlags(objs);
  const deployment = find(objs, 'Deployment');
  const spec = deployment.spec.template.spec;
  const c = brokerContainer(objs);
  expect(f.get('peers')).toBe(`${deployment.metadata.namespace}/${spec.serviceAccountName}`);
  expect(f.get('pod-name')).toBe('$(POD_NAME)');
  expect(only(((c.env ?? []) as Obj[]).filter((e) => e.name === 'POD_NAME')).valueFrom).toEqual({ fieldRef: { fieldPath: 'metadata.name' } });
  const cert = find(objs, 'Certificate');
  expect(cert.spec.dnsNames).toContain(f.get('peer-tls-name'));
  const ca = volumeOf(spec, c, f.get('peer-ca-file')!);
  expect(ca.mount.readOnly).toBe(true);
  expect(ca.volume.secret).toEqual({ secretName: cert.spec.secretName, items: [{ key: 'ca.crt', path: ca.rel }] });
  const token = volumeOf(spec, c, f.get('peer-token-file')!);
  expect(token.mount.readOnly).toBe(true);
  const source = only(token.volume.projected.sources as Obj[]).serviceAccountToken;
  expect(source).toEqual({ audience: f.get('agent-audience'), expirationSeconds: expect.any(Number), path: token.rel });
  expect(source.expirationSeconds).toBeGreaterThanOrEqual(600);
  // The kubelet expands $(POD_NAME); the broker's own parser takes the result.
  const args = (c.args as string[]).slice(1).map((a) => a.replace('$(POD_NAME)', 'podiam-broker-7d9f8b6c5-x2k4p'));
  const parsed = parseBrokerConfig(args, {});
  expect(parsed.kind === 'run' && parsed.config.peers).toEqual({ namespace: 'kube-system', serviceAccount: 'podiam-broker', podName: 'podiam-broker-7d9f8b6c5-x2k4p', tlsName: f.get('peer-tls-name'), caFile: f.get('peer-ca-file'), tokenFile: f.get('peer-token-file') });
});

function entrypoint(): string[] {
  const line = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8').split('\n').find((l) => l.startsWith('ENTRYPOINT '));
  return JSON.parse(line!.slice('ENTRYPOINT '.length)) as string[];
}

function brokerFlags(objs: readonly Obj[]): Map<string, string> {
  const c = brokerContainer(objs);
  // The image's ENTRYPOINT with a bigger V8 old space (and nothing else changed); the first arg picks the subcommand.
  const oldSpace = (argv: readonly string[]) => argv.map((a) => a.replace(/^--max-old-space-size=\d+$/, '--max-old-space-size=N'));
  expect(oldSpace(c.command as string[])).toEqual(oldSpace(entrypoint()));
  expect(c.args[0]).toBe('broker');
  return flags(c.args as string[]);
}

function portNumber(c: Obj, port: number | string): number {
  if (typeof port === 'number') return port;
  const named = ((c.ports ?? []) as Obj[]).find((p) => p.name === port);
  if (named === undefined) throw new Error(`no container port named ${port}`);
  return named.containerPort as number;
}

/** The volume (of `podSpec`) a file path lies in, through the container's mounts. */
function volumeOf(podSpec: Obj, c: Obj, file: string): { mount: Obj; volume: Obj; rel: string } {
  const mount = only(((c.volumeMounts ?? []) as Obj[]).filter((m) => file.startsWith(`${m.mountPath}/`)));
  const volume = only(((podSpec.volumes ?? []) as Obj[]).filter((v) => v.name === mount.name));
  return { mount, volume, rel: file.slice(mount.mountPath.length + 1) };
}

const OVERLAY = 'manifests/overlays/broker';
let objs: Obj[];
let base: Obj[];
beforeAll(() => {
  objs = kustomize(path.join(ROOT, OVERLAY));
  base = kustomize(MANIFESTS);
});

test(`kubectl kustomize ${OVERLAY}: the base, the broker's objects, and the DaemonSet switched to the broker (nothing else changed)`, () => {
  const ids = (list: readonly Obj[]) => list.map((o) => `${o.kind}/${o.metadata.name}`);
  const added = ids(objs).filter((k) => !ids(base).includes(k));
  expect(added.sort()).toEqual(
    [
      'Certificate/podiam-broker',
      'Certificate/podiam-broker-ca',
      'ClusterRole/podiam-broker',
      'ClusterRoleBinding/podiam-broker',
      'Deployment/podiam-broker',
      'Issuer/podiam-broker-ca',
      'Issuer/podiam-broker-selfsigned',
      'PodDisruptionBudget/podiam-broker',
      'Service/podiam-broker',
      'ServiceAccount/podiam-broker',
    ].sort(),
  );
  // Every base object but the DaemonSet and the agents' ClusterRole is untouched.
  for (const obj of base.filter((o) => o.kind !== 'DaemonSet' && o.kind !== 'ClusterRole')) expect(find(objs, obj.kind, obj.metadata.name)).toEqual(obj);
  const role = structuredClone(find(objs, 'ClusterRole', 'podiam'));
  role.rules[0].resources = ['pods', 'namespaces', 'serviceaccounts'];
  // The associations' rules are the broker's: back where the base has them.
  const baseRules = find(base, 'ClusterRole', 'podiam').rules as Obj[];
  role.rules.splice(3, 0, baseRules[3], baseRules[4]);
  expect(role).toEqual(find(base, 'ClusterRole', 'podiam'));
  // The DaemonSet: the same, plus four flags, two mounts and two volumes.
  const before = find(base, 'DaemonSet', 'podiam');
  const after = structuredClone(find(objs, 'DaemonSet', 'podiam'));
  const c = only(after.spec.template.spec.containers as Obj[]);
  const added4 = (c.args as string[]).splice(before.spec.template.spec.containers[0].args.length);
  expect(added4.map((a) => a.split('=')[0])).toEqual(['--broker', '--broker-ca-file', '--broker-token-file', '--broker-timeout']);
  expect((c.volumeMounts as Obj[]).splice(before.spec.template.spec.containers[0].volumeMounts.length).map((m) => m.name)).toEqual(['broker-ca', 'broker-token']);
  expect((after.spec.template.spec.volumes as Obj[]).splice(before.spec.template.spec.volumes.length).map((v) => v.name)).toEqual(['broker-ca', 'broker-token']);
  expect(after).toEqual(before);
});

test('the migration’s first step, `kubectl apply -k … -l app.kubernetes.io/name=podiam-broker`, selects exactly the broker’s objects, its second the DaemonSet alone', () => {
  const selected = objs.filter((o) => o.metadata.labels?.['app.kubernetes.io/name'] === BROKER);
  const baseIds = base.map((o) => `${o.kind}/${o.metadata.name}`);
  expect(selected.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(objs.map((o) => `${o.kind}/${o.metadata.name}`).filter((id) => !baseIds.includes(id)).sort());
  expect(selected.some((o) => o.kind === 'DaemonSet')).toBe(false);
  // Its second step, `-l app.kubernetes.io/component=node-agent`: the DaemonSet alone (not the agents' ClusterRole).
  expect(objs.filter((o) => o.metadata.labels?.['app.kubernetes.io/component'] === 'node-agent').map((o) => `${o.kind}/${o.metadata.name}`)).toEqual(['DaemonSet/podiam']);
});

test('every object validates against its schema, has no unknown fields, and sits in kube-system when namespaced', () => {
  for (const obj of objs) {
    const id = `${obj.kind}/${obj.metadata.name}`;
    expect({ id, errors: schemaErrors(obj), unknown: strictErrors(obj) }).toEqual({ id, errors: '', unknown: [] });
    expect([id, obj.metadata.namespace]).toEqual([id, kindOf(obj).namespaced ? 'kube-system' : undefined]);
  }
});

test('the checkers can fail: a wrong type, an unknown field in the DaemonSet patch, a bad cert-manager field', () => {
  const ds = structuredClone(find(objs, 'DaemonSet', 'podiam'));
  const volumes = ds.spec.template.spec.volumes as Obj[];
  const at = volumes.findIndex((v) => v.name === 'broker-token');
  const token = volumes[at]!;
  token.projected.sources[0].serviceAccountToken.expirationSeconds = '600';
  expect(schemaErrors(ds)).toMatch(/expirationSeconds/);
  token.projected.sources[0].serviceAccountToken.expirationSeconds = 600;
  token.projected.sources[0].serviceAccountToken.audiences = ['podiam-broker'];
  expect(strictErrors(ds)).toEqual([`DaemonSet.spec.template.spec.volumes[${at}].projected.sources[0].serviceAccountToken.audiences`]);
  const cert = structuredClone(find(objs, 'Certificate'));
  cert.spec.dnsNames = 'podiam-broker.kube-system.svc';
  expect(schemaErrors(cert)).toMatch(/dnsNames/);
});

test('the broker’s flags: the CLI contract, and its ports, probes and TLS files agree with the pod', () => {
  const f = brokerFlags(objs);
  expect([...f.keys()].sort()).toEqual(['agent-audience', 'agent-service-account', 'log-format', 'metrics-port', 'peer-ca-file', 'peer-tls-name', 'peer-token-file', 'peers', 'pod-name', 'port', 'sts-qps', 'tls-cert-file', 'tls-key-file'].sort());
  expect(Number(f.get('sts-qps'))).toBeGreaterThan(0);
  const c = brokerContainer(objs);
  const port = Number(f.get('port'));
  const metricsPort = Number(f.get('metrics-port'));
  expect(port).not.toBe(metricsPort);
  expect(c.ports).toEqual([
    { name: 'https', containerPort: port, protocol: 'TCP' },
    { name: 'metrics', containerPort: metricsPort, protocol: 'TCP' },
  ]);
  expect(c.livenessProbe.httpGet.path).toBe('/healthz');
  expect(c.readinessProbe.httpGet.path).toBe('/readyz');
  for (const probe of [c.livenessProbe, c.readinessProbe]) expect(portNumber(c, probe.httpGet.port)).toBe(metricsPort);
  const template = find(objs, 'Deployment').spec.template;
  expect(template.metadata.annotations['prometheus.io/port']).toBe(String(metricsPort));

  // The serving pair comes from the Secret cert-manager writes, and only the pair (not ca.crt).
  const cert = find(objs, 'Certificate');
  for (const file of [f.get('tls-cert-file')!, f.get('tls-key-file')!]) {
    const { mount, volume, rel } = volumeOf(template.spec, c, file);
    expect(mount.readOnly).toBe(true);
    expect(volume.secret.secretName).toBe(cert.spec.secretName);
    expect((volume.secret.items as Obj[]).map((i) => i.key)).toContain(rel);
  }
  expect((volumeOf(template.spec, c, f.get('tls-cert-file')!).volume.secret.items as Obj[]).map((i) => i.key).sort()).toEqual(['tls.crt', 'tls.key']);
});

test('agents and broker agree: the Service and certificate name, the CA (alone), the token’s audience and the agents’ ServiceAccount', () => {
  const bf = brokerFlags(objs);
  const ds = find(objs, 'DaemonSet', 'podiam');
  const agent = agentContainer(objs);
  const af = flags(agent.args as string[]);

  // --broker names the Service, on its port, and the serving certificate covers that name.
  const service = find(objs, 'Service');
  const url = new URL(af.get('broker')!);
  expect(url.protocol).toBe('https:');
  expect(url.hostname).toBe(`${service.metadata.name}.${service.metadata.namespace}.svc`);
  const servicePort = only(service.spec.ports as Obj[]);
  expect(Number(url.port)).toBe(servicePort.port);
  expect(portNumber(brokerContainer(objs), servicePort.targetPort)).toBe(Number(bf.get('port')));
  expect(service.spec.selector).toEqual(find(objs, 'Deployment').spec.selector.matchLabels);
  const cert = find(objs, 'Certificate');
  expect(cert.spec.dnsNames).toContain(url.hostname);
  expect(cert.spec.usages).toContain('server auth');

  // The CA file: ca.crt of the serving certificate's Secret, and nothing else of it (no key).
  const ca = volumeOf(ds.spec.template.spec, agent, af.get('broker-ca-file')!);
  expect(ca.mount.readOnly).toBe(true);
  expect(ca.volume.secret).toEqual({ secretName: cert.spec.secretName, items: [{ key: 'ca.crt', path: ca.rel }] });
  // Renewal keeps the CA the agents trust: the serving certificate comes from a long-lived CA Issuer.
  const caCert = find(objs, 'Certificate', 'podiam-broker-ca');
  expect(find(objs, 'Issuer', cert.spec.issuerRef.name).spec.ca.secretName).toBe(caCert.spec.secretName);
  expect(caCert.spec.isCA).toBe(true);
  expect(caCert.spec.secretName).not.toBe(cert.spec.secretName);

  // The token: projected, for the broker's audience, short-lived; the agents' ServiceAccount is the one the broker accepts.
  const token = volumeOf(ds.spec.template.spec, agent, af.get('broker-token-file')!);
  expect(token.mount.readOnly).toBe(true);
  const source = only(token.volume.projected.sources as Obj[]).serviceAccountToken;
  expect(source).toEqual({ audience: bf.get('agent-audience'), expirationSeconds: expect.any(Number), path: token.rel });
  expect(source.expirationSeconds).toBeGreaterThanOrEqual(600); // the API server's minimum
  expect(source.expirationSeconds).toBeLessThanOrEqual(3600);
  expect(bf.get('agent-service-account')).toBe(`${ds.metadata.namespace}/${ds.spec.template.spec.serviceAccountName}`);
  expect(ds.spec.template.spec.automountServiceAccountToken).not.toBe(false);

  // A pod without cached credentials gets its answer (503) before the SDKs give up retrying.
  expect(af.get('broker-timeout')).toMatch(/^[1-5]s$/);
});

test('the DaemonSet’s args in broker mode parse with the agent’s own parser (kubelet-expanded on a sample node), and its broker config is the component’s', () => {
  const agent = agentContainer(objs);
  const env: Record<string, string> = { HOST_INTERFACE: 'docker0', HOST_IP: '10.0.1.23', HOST_IPS: '10.0.1.23,fd00:10::23', NODE_NAME: 'ip-10-0-1-23.ec2.internal' };
  expect(((agent.env ?? []) as Obj[]).map((e) => e.name).sort()).toEqual(Object.keys(env).sort());
  const args = (agent.args as string[]).map((a) => a.replace(/\$\(([A-Z_]+)\)/g, (_, n: string) => env[n]!));
  const request = parseConfig(args, env);
  if (request.kind !== 'run') throw new Error(`the args ask for ${request.kind}, not a run`);
  const af = flags(agent.args as string[]);
  expect(request.config.broker).toEqual({ urls: [af.get('broker')], caFile: af.get('broker-ca-file'), tokenFile: af.get('broker-token-file'), timeoutMs: 2000 });
  expect(request.config).toMatchObject({ iptables: true, node: 'ip-10-0-1-23.ec2.internal' });
});

test('the agents in broker mode hold no AWS credentials and no STS or role-policy flag', () => {
  const agent = agentContainer(objs);
  expect(((agent.env ?? []) as Obj[]).map((e) => e.name).filter((n) => n.startsWith('AWS_'))).toEqual([]);
  const stsFlags = ['base-role-arn', 'auto-discover-base-arn', 'default-role', 'auto-discover-default-role', 'use-regional-sts-endpoint', 'iam-role-session-ttl', 'iam-external-id', 'namespace-restrictions'];
  const af = flags(agent.args as string[]);
  for (const f of stsFlags) expect([f, af.has(f)]).toEqual([f, false]);
  // The broker, not the agents, is where those would go.
  expect(find(objs, 'Deployment').spec.template.spec.hostNetwork).toBeUndefined();
});

test('two replicas never on one node, a PodDisruptionBudget, rolling without losing one, cluster-critical, pods distinct from the agents’', () => {
  const deployment = find(objs, 'Deployment');
  const pdb = find(objs, 'PodDisruptionBudget');
  const pod = deployment.spec.template.spec;
  expect(deployment.spec.replicas).toBeGreaterThanOrEqual(2);
  expect(deployment.spec.strategy.rollingUpdate).toEqual({ maxSurge: 1, maxUnavailable: 0 });
  expect(pdb.spec.selector.matchLabels).toEqual(deployment.spec.selector.matchLabels);
  expect(pdb.spec.minAvailable).toBe(1);
  expect(pod.priorityClassName).toBe('system-cluster-critical');
  expect(pod.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution).toEqual([{ topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: deployment.spec.selector.matchLabels } }]);
  expect(pod.topologySpreadConstraints[0]).toMatchObject({ labelSelector: { matchLabels: deployment.spec.selector.matchLabels } });
  const ds = find(objs, 'DaemonSet', 'podiam');
  const selects = (selector: Record<string, string>, labels: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v);
  expect(selects(ds.spec.selector.matchLabels, deployment.spec.template.metadata.labels)).toBe(false);
  expect(selects(deployment.spec.selector.matchLabels, ds.spec.template.metadata.labels)).toBe(false);
});

test('the broker pod: its own ServiceAccount, non-root, read-only, no capabilities, no host access', () => {
  const pod = find(objs, 'Deployment').spec.template.spec;
  const c = brokerContainer(objs);
  expect(pod.serviceAccountName).toBe(find(objs, 'ServiceAccount').metadata.name);
  expect(pod.serviceAccountName).not.toBe(find(objs, 'DaemonSet', 'podiam').spec.template.spec.serviceAccountName);
  expect(pod.hostNetwork).toBeUndefined();
  expect(pod.securityContext).toEqual({ runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } });
  expect(c.securityContext).toEqual({ privileged: false, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
  expect((pod.volumes as Obj[]).every((v) => v.hostPath === undefined)).toBe(true);
  for (const kind of ['requests', 'limits']) expect(Object.keys(c.resources[kind]).sort()).toEqual(['cpu', 'memory']);
  // V8 gives way (collects harder, at worst exits) before the kernel's OOM killer: the old space fits the limit.
  const oldSpaceMB = Number(/^--max-old-space-size=(\d+)$/.exec((c.command as string[]).find((a) => a.startsWith('--max-old-space-size='))!)![1]);
  const limitMB = Number(/^(\d+)Gi$/.exec(c.resources.limits.memory)![1]) * 1024;
  expect(oldSpaceMB).toBeGreaterThan(192);
  expect(oldSpaceMB).toBeLessThan(limitMB);
});

test('RBAC: exactly list/watch on pods, namespaces, serviceaccounts and podidentityassociations, their status patch, and create tokenreviews, bound to the broker’s ServiceAccount', () => {
  const role = find(objs, 'ClusterRole');
  const grants = (role.rules as Obj[]).flatMap((r) => {
    expect(r.resourceNames).toBeUndefined();
    return (r.apiGroups as string[]).flatMap((g) => (r.resources as string[]).flatMap((res) => (r.verbs as string[]).map((v) => `${g}/${res}:${v}`)));
  });
  expect(grants.sort()).toEqual(
    ['/pods:list', '/pods:watch', '/namespaces:list', '/namespaces:watch', '/serviceaccounts:list', '/serviceaccounts:watch', 'authentication.k8s.io/tokenreviews:create', 'podiam.io/podidentityassociations:list', 'podiam.io/podidentityassociations:watch', 'podiam.io/podidentityassociations/status:patch'].sort(),
  );
  const sa = find(objs, 'ServiceAccount');
  expect(find(objs, 'ClusterRoleBinding').roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name });
  expect(find(objs, 'ClusterRoleBinding').subjects).toEqual([{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
});

test('the agents’ ClusterRole in broker mode: their own pods, Events, TokenReviews and the token signing keys; no namespaces, ServiceAccounts or associations (the broker decides roles)', () => {
  const role = find(objs, 'ClusterRole', 'podiam');
  const grants = (role.rules as Obj[]).flatMap((r) => (r.nonResourceURLs !== undefined ? (r.nonResourceURLs as string[]).flatMap((u) => (r.verbs as string[]).map((v) => `url:${u}:${v}`)) : (r.apiGroups as string[]).flatMap((g) => (r.resources as string[]).flatMap((res) => (r.verbs as string[]).map((v) => `${g}/${res}:${v}`)))));
  expect(grants.sort()).toEqual(['/events:create', '/events:patch', '/pods:get', '/pods:list', '/pods:watch', 'authentication.k8s.io/tokenreviews:create', 'url:/openid/v1/jwks:get'].sort());
});

test('an operator’s own kustomization (the README’s example): a CNI overlay + the broker component + IRSA for the broker + a base role ARN', () => {
  const own = kustomizeOwn((rel) => [
    'apiVersion: kustomize.config.k8s.io/v1beta1',
    'kind: Kustomization',
    'resources:',
    `  - ${rel('overlays/calico')}`,
    'components:',
    `  - ${rel('components/broker')}`,
    'patches:',
    '  - target: {kind: ServiceAccount, name: podiam-broker}',
    '    patch: |-',
    '      - op: add',
    '        path: /metadata/annotations',
    '        value: {eks.amazonaws.com/role-arn: "arn:aws:iam::111122223333:role/podiam-broker"}',
    '  - target: {kind: Deployment, name: podiam-broker}',
    '    patch: |-',
    '      - op: add',
    '        path: /spec/template/spec/containers/0/args/-',
    '        value: --base-role-arn=arn:aws:iam::111122223333:role/',
  ]);
  expect(brokerFlags(own).get('base-role-arn')).toBe('arn:aws:iam::111122223333:role/');
  expect(find(own, 'ServiceAccount').metadata.annotations['eks.amazonaws.com/role-arn']).toMatch(/:role\/podiam-broker$/);
  const agent = agentContainer(own);
  expect(agent.env.find((e: Obj) => e.name === 'HOST_INTERFACE').value).toBe('cali+');
  expect(flags(agent.args as string[]).get('broker')).toBe('https://podiam-broker.kube-system.svc:8443');
  for (const obj of own) {
    expect(schemaErrors(obj)).toBe('');
    expect(strictErrors(obj)).toEqual([]);
  }
});
