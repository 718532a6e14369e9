/**
 * PodIdentityAssociations end to end on loopback: the real podiam CLI, the test API server
 * serving the custom resource (its schema from the shipped CRD), moto_server as STS behind the
 * counting proxy. Precedence (association > pod annotation > ServiceAccount annotation, podiam's
 * key then IRSA's > default role), --role-sources=associations, role chaining, the six EKS
 * session tags, and the status the agents write.
 */
import http from 'node:http';
import { freePort } from '../support/net.js';
import type { PodiamProcess } from '../support/podiam-process.js';
import type { StsCall } from '../support/sts-proxy.js';
import { waitFor } from '../support/wait.js';
import { ACCOUNT, BASE_ARN, World } from '../support/world.js';

const CREDS = '/latest/meta-data/iam/security-credentials/';
const CLUSTER_ARN = `arn:aws:eks:eu-west-1:${ACCOUNT}:cluster/lab-eu`;
const AUDIENCE = 'pods.eks.amazonaws.com';

let world: World;
let podiam: PodiamProcess;
let tokenPort: number;

function associate(name: string, spec: Record<string, unknown>): void {
  world.kube.associationApi.create({ metadata: { name }, spec: { namespace: 'default', ...spec } });
}

function tagsOf(call: StsCall): Record<string, string> {
  const tags: Record<string, string> = {};
  for (let i = 1; call.params[`Tags.member.${i}.Key`] !== undefined; i++) tags[call.params[`Tags.member.${i}.Key`]!] = call.params[`Tags.member.${i}.Value`]!;
  return tags;
}

function assumeCalls(roleArn: string): StsCall[] {
  return world.sts.calls.filter((c) => c.action === 'AssumeRole' && c.roleArn === roleArn);
}

async function imdsCreds(ip: string, p: PodiamProcess = podiam): Promise<{ role: string; creds: { AccessKeyId: string; SecretAccessKey: string; Token: string } }> {
  let role = '';
  await waitFor(async () => {
    const r = await p.get(CREDS, ip);
    role = r.status === 200 ? r.body : '';
    return role !== '';
  }, 10_000, `a role for ${ip}`);
  const r = await p.get(CREDS + role, ip);
  expect({ status: r.status, body: r.body.slice(0, 200) }).toMatchObject({ status: 200 });
  return { role, creds: JSON.parse(r.body) };
}

function tokenCreds(token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: tokenPort, path: '/v1/credentials', agent: false, headers: { Authorization: token } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

function condition(name: string): Record<string, unknown> | undefined {
  const conditions = (world.kube.associationApi.get(name)?.status?.['conditions'] ?? []) as Array<Record<string, unknown>>;
  return conditions.find((c) => c['type'] === 'Accepted');
}

beforeAll(async () => {
  world = await World.start();
  // Namespace restrictions apply to the role an association gives (the target's, when chaining: another account here).
  world.kube.updateNamespace('default', (ns) => (ns.metadata.annotations = { 'iam.amazonaws.com/allowed-roles': '["*","arn:aws:iam::210987654321:role/*"]' }));
  world.kube.createNamespace({ metadata: { name: 'locked', annotations: { 'iam.amazonaws.com/allowed-roles': '["web-*"]' } } });
  for (const sa of ['app', 'chained', 'untagged', 'annotated', 'other']) world.kube.createServiceAccount({ metadata: { name: sa, namespace: 'default' } });
  world.kube.createServiceAccount({ metadata: { name: 'irsa', namespace: 'default', annotations: { 'eks.amazonaws.com/role-arn': `${BASE_ARN}irsa-role` } } });
  world.kube.createServiceAccount({ metadata: { name: 'sa-annotated', namespace: 'default', annotations: { 'iam.amazonaws.com/role': 'sa-role' } } });
  world.kube.createServiceAccount({ metadata: { name: 'batch', namespace: 'locked' } });
  associate('app', { serviceAccount: 'app', roleArn: `${BASE_ARN}assoc-app` });
  associate('annotated', { serviceAccount: 'annotated', roleArn: `${BASE_ARN}assoc-wins` });
  associate('chained', { serviceAccount: 'chained', roleArn: `${BASE_ARN}hop-one`, targetRoleArn: 'arn:aws:iam::210987654321:role/cross-target' });
  associate('untagged', { serviceAccount: 'untagged', roleArn: `${BASE_ARN}assoc-untagged`, disableSessionTags: true });
  tokenPort = await freePort();
  podiam = await world.podiam(['--namespace-restrictions', `--cluster-arn=${CLUSTER_ARN}`, '--token-identity', `--token-addr=127.0.0.1:${tokenPort}`, `--token-audience=${AUDIENCE}`]);
  await waitFor(() => podiam.output().includes('token identity listening'), 10_000);
}, 60_000);

afterAll(async () => {
  await world?.stop();
});

test('an association gives a role where no annotation does, with all six EKS session tags', async () => {
  const ip = world.nextIp();
  const pod = world.pod('assoc-app', { ip, serviceAccount: 'app' });
  const { role, creds } = await imdsCreds(ip);
  expect(role).toBe('assoc-app');
  expect(await world.callerArn(creds)).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/assoc-app/default.assoc-app`);
  const calls = assumeCalls(`${BASE_ARN}assoc-app`);
  expect(calls).toHaveLength(1);
  expect(tagsOf(calls[0]!)).toEqual({
    'eks-cluster-arn': CLUSTER_ARN,
    'eks-cluster-name': 'lab-eu',
    'kubernetes-namespace': 'default',
    'kubernetes-service-account': 'app',
    'kubernetes-pod-name': 'assoc-app',
    'kubernetes-pod-uid': pod.metadata.uid,
  });
  const audit = podiam.logLines().find((l) => l['message'] === 'credentials issued' && l['roleArn'] === `${BASE_ARN}assoc-app`);
  expect(audit).toMatchObject({ pod: 'default/assoc-app', association: 'app' });
  // The token path resolves the same role (the same resolver, the same cache entry: no new call).
  const token = world.kube.tokenApi.issue({ namespace: 'default', serviceAccount: 'app', pod: 'assoc-app', audiences: [AUDIENCE], expirationSeconds: 86400 });
  const r = await tokenCreds(token);
  expect(r.status).toBe(200);
  expect(await world.callerArn(JSON.parse(r.body))).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/assoc-app/default.assoc-app`);
  expect(assumeCalls(`${BASE_ARN}assoc-app`)).toHaveLength(1);
});

test('disableSessionTags: the association’s AssumeRole carries no tags', async () => {
  const ip = world.nextIp();
  world.pod('assoc-untagged', { ip, serviceAccount: 'untagged' });
  expect((await imdsCreds(ip)).role).toBe('assoc-untagged');
  const calls = assumeCalls(`${BASE_ARN}assoc-untagged`);
  expect(calls).toHaveLength(1);
  expect(tagsOf(calls[0]!)).toEqual({});
  expect(Object.keys(calls[0]!.params).filter((k) => k.startsWith('Tags'))).toEqual([]);
});

test('precedence: the association wins over the pod’s own annotation', async () => {
  const ip = world.nextIp();
  world.pod('assoc-annotated', { ip, serviceAccount: 'annotated', role: 'pod-picked' });
  expect((await imdsCreds(ip)).role).toBe('assoc-wins');
  expect(assumeCalls(`${BASE_ARN}pod-picked`)).toHaveLength(0);
  // Delete the association: the annotation applies again (the informer follows).
  world.kube.associationApi.remove('annotated');
  await waitFor(async () => (await podiam.get(CREDS, ip)).body === 'pod-picked', 10_000, 'the pod annotation after the association went');
});

test('role chaining: roleArn, then targetRoleArn with its credentials; assumed-role/<target>; the audit line names both', async () => {
  const ip = world.nextIp();
  world.pod('assoc-chained', { ip, serviceAccount: 'chained' });
  const { role, creds } = await imdsCreds(ip).catch((err: Error) => {
    throw new Error(`${err.message}\n${podiam.output().split('\n').filter((l) => l.includes('chained') || l.includes('hop-one')).join('\n')}`);
  });
  expect(role).toBe('cross-target');
  expect(await world.callerArn(creds)).toBe('arn:aws:sts::210987654321:assumed-role/cross-target/default.assoc-chained');
  const first = assumeCalls(`${BASE_ARN}hop-one`);
  const second = assumeCalls('arn:aws:iam::210987654321:role/cross-target');
  expect([first.length, second.length]).toEqual([1, 1]);
  // The second call is signed with the first hop's credentials, not the node's; at most one hour.
  expect(second[0]!.accessKeyId).not.toBe(first[0]!.accessKeyId);
  expect(second[0]!.durationSeconds).toBeLessThanOrEqual(3600);
  expect(tagsOf(second[0]!)['kubernetes-pod-name']).toBe('assoc-chained');
  // Served again from memory: no more calls.
  await imdsCreds(ip);
  expect([assumeCalls(`${BASE_ARN}hop-one`).length, assumeCalls('arn:aws:iam::210987654321:role/cross-target').length]).toEqual([1, 1]);
  const audit = podiam.logLines().find((l) => l['message'] === 'credentials issued' && l['roleArn'] === 'arn:aws:iam::210987654321:role/cross-target');
  expect(audit).toMatchObject({ pod: 'default/assoc-chained', sourceRoleArn: `${BASE_ARN}hop-one`, association: 'chained' });
});

test('IRSA: eks.amazonaws.com/role-arn on the ServiceAccount is its role, on the IMDS and the token path', async () => {
  const ip = world.nextIp();
  world.pod('irsa-pod', { ip, serviceAccount: 'irsa' });
  const { role, creds } = await imdsCreds(ip);
  expect(role).toBe('irsa-role');
  expect(await world.callerArn(creds)).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/irsa-role/default.irsa-pod`);
  const token = world.kube.tokenApi.issue({ namespace: 'default', serviceAccount: 'irsa', pod: 'irsa-pod', audiences: [AUDIENCE], expirationSeconds: 86400 });
  const r = await tokenCreds(token);
  expect(r.status).toBe(200);
  expect(await world.callerArn(JSON.parse(r.body))).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/irsa-role/default.irsa-pod`);
  // podiam's own key on the same ServiceAccount comes first.
  world.kube.updateServiceAccount('default', 'irsa', (sa) => (sa.metadata.annotations = { ...sa.metadata.annotations, 'iam.amazonaws.com/role': 'podiam-key-role' }));
  await waitFor(async () => (await podiam.get(CREDS, ip)).body === 'podiam-key-role', 10_000, 'podiam’s key over IRSA’s');
});

test('status: Accepted, InvalidArn and DeniedByNamespaceRestrictions, written by the agent', async () => {
  await waitFor(() => condition('app')?.['status'] === 'True', 10_000, 'app Accepted');
  expect(condition('app')).toMatchObject({ reason: 'Accepted', observedGeneration: 1 });
  expect(world.kube.associationApi.get('app')!.status!['observedGeneration']).toBe(1);
  // A trailing slash passes the OpenAPI pattern (the CRD's CEL rule refuses it on a real server): the agent says InvalidArn.
  associate('trailing', { serviceAccount: 'other', roleArn: `${BASE_ARN}path/` });
  await waitFor(() => condition('trailing') !== undefined, 10_000, 'trailing status');
  expect(condition('trailing')).toMatchObject({ status: 'False', reason: 'InvalidArn' });
  // A node judges namespace restrictions only for namespaces it watches (those of its own pods):
  // a pod of 'locked' on this node makes this agent the one that decides.
  world.pod('locked-resident', { ip: world.nextIp(), namespace: 'locked' });
  world.kube.associationApi.create({ metadata: { name: 'locked-batch' }, spec: { namespace: 'locked', serviceAccount: 'batch', roleArn: `${BASE_ARN}batch-admin` } });
  await waitFor(() => condition('locked-batch') !== undefined, 10_000, 'locked-batch status');
  expect(condition('locked-batch')).toMatchObject({ status: 'False', reason: 'DeniedByNamespaceRestrictions' });
  // The namespace allows it now: the verdict follows, with a new transition time.
  world.kube.updateNamespace('locked', (ns) => (ns.metadata.annotations = { 'iam.amazonaws.com/allowed-roles': '["web-*","batch-*"]' }));
  await waitFor(() => condition('locked-batch')?.['status'] === 'True', 10_000, 'locked-batch Accepted');
  // A spec change: a new generation, observed.
  world.kube.associationApi.update('app', (spec) => (spec['roleArn'] = `${BASE_ARN}assoc-app-v2`));
  await waitFor(() => condition('app')?.['observedGeneration'] === 2, 10_000, 'generation 2 observed');
});

test('status is written only on change: a second agent finds nothing to write', async () => {
  await waitFor(() => condition('untagged') !== undefined && condition('chained') !== undefined, 10_000);
  const writes = world.kube.associationApi.statusWrites.length;
  const second = await world.podiam(['--namespace-restrictions', `--cluster-arn=${CLUSTER_ARN}`]);
  await new Promise((r) => setTimeout(r, 3000)); // past the writers' random delay (up to 2 s)
  expect(world.kube.associationApi.statusWrites.length).toBe(writes);
  await second.stop();
});

test('the CRD’s schema rejects a malformed role ARN at the API server (422 Invalid, naming the field)', async () => {
  const post = (spec: Record<string, unknown>) =>
    fetch(`${world.kube.url}/apis/podiam.io/v1alpha1/podidentityassociations`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ apiVersion: 'podiam.io/v1alpha1', kind: 'PodIdentityAssociation', metadata: { name: 'bad' }, spec }) });
  const bad = await post({ namespace: 'default', serviceAccount: 'app', roleArn: 'arn:aws:iam::12345:role/short-account' });
  expect(bad.status).toBe(422);
  const status = (await bad.json()) as { reason: string; message: string };
  expect(status.reason).toBe('Invalid');
  expect(status.message).toMatch(/spec\.roleArn: Invalid value/);
  const missing = await post({ namespace: 'default', roleArn: `${BASE_ARN}x` });
  expect(missing.status).toBe(422);
  expect(((await missing.json()) as { message: string }).message).toMatch(/spec\.serviceAccount: Required value/);
  expect(world.kube.associationApi.get('bad')).toBeUndefined();
});

describe('--role-sources=associations', () => {
  let strict: PodiamProcess;
  beforeAll(async () => {
    strict = await world.podiam(['--role-sources=associations', '--default-role=fallback']);
  });
  afterAll(async () => {
    await strict?.stop();
  });

  test('a pod annotation cannot override an association, and without one there is no role (no annotation, no default)', async () => {
    const ip = world.nextIp();
    world.pod('strict-app', { ip, serviceAccount: 'app', role: 'pod-override' });
    expect((await imdsCreds(ip, strict)).role).toBe('assoc-app-v2');
    const ip2 = world.nextIp();
    world.pod('strict-annotated', { ip: ip2, serviceAccount: 'sa-annotated', role: 'pod-picked-2' });
    await waitFor(async () => (await strict.get(CREDS, ip2)).status === 404, 10_000);
    const r = await strict.get(CREDS + 'pod-picked-2', ip2);
    expect(r.status).toBe(404);
    expect(r.body).toMatch(/NoRoleForPod.*--role-sources/);
    // (The other agent on this node, with every source, gives strict-annotated its annotation.)
    const issued = strict.logLines().filter((l) => l['message'] === 'credentials issued').map((l) => l['roleArn']);
    expect(issued).not.toContain(`${BASE_ARN}pod-picked-2`);
    expect(issued).not.toContain(`${BASE_ARN}pod-override`);
    expect(assumeCalls(`${BASE_ARN}pod-override`)).toHaveLength(0);
  });
});

test('without the CRD installed, podiam is ready and roles come from annotations', async () => {
  world.kube.associationApi.installed = false;
  try {
    const p = await world.podiam();
    expect(p.output()).toMatch(/PodIdentityAssociation CRD not installed/);
    const ip = world.nextIp();
    world.pod('no-crd', { ip, serviceAccount: 'app', role: 'annotated-role' });
    expect((await imdsCreds(ip, p)).role).toBe('annotated-role');
    await p.stop();
  } finally {
    world.kube.associationApi.installed = true;
  }
});

test('an agent that may not list associations (403) is not ready, and becomes ready once it may', async () => {
  world.kube.associationApi.forbidden = true;
  let p: PodiamProcess | undefined;
  try {
    p = await world.podiam([], { waitReady: false });
    await waitFor(() => p!.output().includes('podidentityassociations'), 10_000, 'the watch failure logged');
    expect((await p.get('/readyz')).status).toBe(503);
    expect(p.logLines().some((l) => l['message'] === 'kubernetes watch failed, retrying' && l['resource'] === 'podidentityassociations')).toBe(true);
  } finally {
    world.kube.associationApi.forbidden = false;
  }
  await waitFor(async () => (await p!.get('/readyz')).status === 200, 15_000, 'ready once allowed');
  await p.stop();
});
