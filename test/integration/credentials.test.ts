/**
 * The core, end to end on loopback: the real podiam CLI, the Kubernetes test API server,
 * moto_server as STS (behind a counting proxy) and a fake EC2 metadata service.
 * Pods are simulated by binding the client socket to 127.10.x.y.
 */
import { NODE_CREDENTIAL_STRINGS, INSTANCE_PROFILE_ID } from '../support/imds-server.js';
import type { PodiamProcess } from '../support/podiam-process.js';
import { waitFor } from '../support/wait.js';
import { ACCOUNT, BASE_ARN, World } from '../support/world.js';

const CREDS = '/latest/meta-data/iam/security-credentials/';
interface Ec2Creds {
  Code: string;
  LastUpdated: string;
  Type: string;
  AccessKeyId: string;
  SecretAccessKey: string;
  Token: string;
  Expiration: string;
}

let world: World;
let podiam: PodiamProcess;
/** Every secret podiam handed out, to prove none of them reached a log line. */
const served: string[] = [];

async function credsFor(ip: string, role: string, p: PodiamProcess = podiam): Promise<Ec2Creds> {
  const r = await p.get(CREDS + role, ip);
  expect(r.status).toBe(200);
  const body = JSON.parse(r.body) as Ec2Creds;
  served.push(body.SecretAccessKey, body.Token);
  return body;
}

beforeAll(async () => {
  world = await World.start();
  podiam = await world.podiam();
});

afterAll(async () => {
  await world?.stop();
});

test('an annotated pod gets its role, EC2-exact, and the credentials are real STS credentials', async () => {
  const ip = world.nextIp();
  world.pod('app-a', { ip, role: 'app-a' });
  const list = await podiam.get(CREDS, ip);
  expect(list.status).toBe(200);
  expect(list.body).toBe('app-a');
  expect(list.headers['content-type']).toBe('text/plain');
  // Without the trailing slash too, and on a dated version.
  expect((await podiam.get('/latest/meta-data/iam/security-credentials', ip)).body).toBe('app-a');
  expect((await podiam.get('/2021-03-23/meta-data/iam/security-credentials/', ip)).body).toBe('app-a');

  const r = await podiam.get(CREDS + 'app-a', ip);
  expect(r.status).toBe(200);
  const body = JSON.parse(r.body) as Ec2Creds;
  served.push(body.SecretAccessKey, body.Token);
  expect(Object.keys(body)).toEqual(['Code', 'LastUpdated', 'Type', 'AccessKeyId', 'SecretAccessKey', 'Token', 'Expiration']);
  expect(body.Code).toBe('Success');
  expect(body.Type).toBe('AWS-HMAC');
  expect(body.LastUpdated).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  expect(body.Expiration).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  // Exactly the session TTL (1 h), no hidden doubling (kube2iam #240).
  const lifetime = Date.parse(body.Expiration) - Date.parse(body.LastUpdated);
  expect(Math.abs(lifetime - 3600_000)).toBeLessThanOrEqual(2000);
  expect(await world.callerArn(body)).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/app-a/default.app-a`);
  const call = world.sts.calls.find((c) => c.action === 'AssumeRole' && c.roleArn === `${BASE_ARN}app-a`);
  expect(call?.durationSeconds).toBe(3600);
  expect(call?.sessionName).toBe('default.app-a');
});

test("a pod asking for another pod's role gets 403, never those credentials", async () => {
  const ipA = world.nextIp();
  const ipB = world.nextIp();
  world.pod('mismatch-a', { ip: ipA, role: 'role-a' });
  world.pod('mismatch-b', { ip: ipB, role: 'role-b' });
  await credsFor(ipB, 'role-b');
  const r = await podiam.get(CREDS + 'role-b', ipA);
  expect(r.status).toBe(403);
  expect(r.body).toContain('RoleMismatch');
  expect(r.body).not.toContain('SecretAccessKey');
  // A full ARN in the path is not a way around it either.
  expect((await podiam.get(CREDS + encodeURIComponent(`${BASE_ARN}role-b`), ipA)).status).toBeGreaterThanOrEqual(400);
});

test('X-Forwarded-For does not change who the caller is', async () => {
  const ipA = world.nextIp();
  const ipB = world.nextIp();
  world.pod('xff-a', { ip: ipA, role: 'xff-role-a' });
  world.pod('xff-b', { ip: ipB, role: 'xff-role-b' });
  await credsFor(ipB, 'xff-role-b');
  const r = await podiam.request(CREDS, { fromIp: ipA, headers: { 'x-forwarded-for': ipB, 'x-real-ip': ipB } });
  expect(r.body).toBe('xff-role-a');
  expect((await podiam.request(CREDS + 'xff-role-b', { fromIp: ipA, headers: { 'x-forwarded-for': ipB } })).status).toBe(403);
});

test("an unannotated pod gets 404 with the reason, never the node's credentials", async () => {
  const ip = world.nextIp();
  world.pod('plain', { ip });
  const list = await podiam.get(CREDS, ip);
  expect(list.status).toBe(404);
  expect(list.body).toContain('iam.amazonaws.com/role');
  const node = await podiam.get(CREDS + world.imds.nodeRole, ip);
  expect(node.status).toBe(404);
  for (const s of NODE_CREDENTIAL_STRINGS) expect(node.body).not.toContain(s);
  expect((await podiam.get('/latest/meta-data/iam/info', ip)).status).toBe(404);
});

test('an unknown IP gets 404 after --pod-wait', async () => {
  const t0 = Date.now();
  const r = await podiam.get(CREDS, world.nextIp());
  const waited = Date.now() - t0;
  expect(r.status).toBe(404);
  expect(r.body).toContain('PodNotFound');
  expect(waited).toBeGreaterThanOrEqual(850);
  expect(waited).toBeLessThan(1000);
});

test('iam/info answers for the pod role, never the node instance profile', async () => {
  const ip = world.nextIp();
  world.pod('info', { ip, role: 'info-role' });
  const r = await podiam.get('/latest/meta-data/iam/info', ip);
  expect(r.status).toBe(200);
  const info = JSON.parse(r.body) as { Code: string; InstanceProfileArn: string; InstanceProfileId: string };
  expect(info.Code).toBe('Success');
  expect(info.InstanceProfileArn).toBe(`arn:aws:iam::${ACCOUNT}:instance-profile/info-role`);
  expect(r.body).not.toContain(world.imds.nodeRole);
  expect(r.body).not.toContain(INSTANCE_PROFILE_ID);
});

test("the node's signed identity is refused; its unsigned document is served", async () => {
  const ip = world.nextIp();
  world.pod('signed', { ip, role: 'signed-role' });
  for (const kind of ['pkcs7', 'signature', 'rsa2048']) {
    expect((await podiam.get(`/latest/dynamic/instance-identity/${kind}`, ip)).status).toBe(403);
  }
  expect((await podiam.get('/latest/dynamic/instance-identity/document', ip)).status).toBe(200);
  expect((await podiam.get('/latest/meta-data/iam/info#/x', ip)).status).toBe(400);
});

test('node identity credentials are refused, in any spelling', async () => {
  const ip = world.nextIp();
  world.pod('ident', { ip, role: 'ident-role' });
  for (const path of [
    '/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance',
    '/latest/meta-data/Identity-Credentials/ec2/security-credentials/ec2-instance',
    '/latest/meta-data/%69dentity-credentials/ec2/security-credentials/ec2-instance',
    '/latest/meta-data/iam/../identity-credentials/ec2/security-credentials/ec2-instance',
    '/latest/meta-data/IAM/security-credentials/' + 'node-role',
  ]) {
    const r = await podiam.get(path, ip);
    expect([400, 403, 404]).toContain(r.status);
    for (const s of NODE_CREDENTIAL_STRINGS) expect(r.body).not.toContain(s);
  }
  expect(world.imds.requests.some((q) => /identity-credentials/i.test(q.path))).toBe(false);
});

test('a pod created 300 ms after its first request is answered within 1 s', async () => {
  const ip = world.nextIp();
  const t0 = Date.now();
  const pending = podiam.get(CREDS + 'late-role', ip);
  await new Promise((r) => setTimeout(r, 300));
  world.pod('late', { ip, role: 'late-role' });
  const r = await pending;
  const took = Date.now() - t0;
  expect(r.status).toBe(200);
  expect(took).toBeLessThan(1000);
  served.push((JSON.parse(r.body) as Ec2Creds).SecretAccessKey);
});

test('40 concurrent first requests for a new pod role make exactly one AssumeRole', async () => {
  const ip = world.nextIp();
  const roleArn = `${BASE_ARN}burst-role`;
  const pending = Array.from({ length: 40 }, () => podiam.get(CREDS + 'burst-role', ip));
  await new Promise((r) => setTimeout(r, 100));
  world.pod('burst', { ip, role: 'burst-role' });
  const answers = await Promise.all(pending);
  expect(answers.map((a) => a.status)).toEqual(Array(40).fill(200));
  const keys = new Set(answers.map((a) => (JSON.parse(a.body) as Ec2Creds).AccessKeyId));
  expect(keys.size).toBe(1);
  expect(world.sts.countFor(roleArn)).toBe(1);
});

test('a prefetched pod is answered from memory: its first request makes no STS call', async () => {
  const ip = world.nextIp();
  const roleArn = `${BASE_ARN}prefetch-role`;
  world.pod('prefetch', { ip, role: 'prefetch-role' });
  // Prefetch happens on the watch event; wait until it reached STS.
  for (let i = 0; i < 100 && world.sts.countFor(roleArn) === 0; i++) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 100));
  const before = world.sts.countFor(roleArn);
  expect(before).toBe(1);
  await credsFor(ip, 'prefetch-role');
  await credsFor(ip, 'prefetch-role');
  expect(world.sts.countFor(roleArn)).toBe(1);
  expect(await podiam.metric('podiam_credential_cache_lookups_total', { result: 'hit' })).toBeGreaterThanOrEqual(2);
});

test("a deleted pod's IP stops answering, and a reused IP answers the new pod's role", async () => {
  const ip = world.nextIp();
  world.pod('old', { ip, role: 'old-role' });
  await credsFor(ip, 'old-role');
  world.kube.deletePod('default', 'old');
  await waitFor(async () => (await podiam.get(CREDS, ip)).status === 404);
  world.pod('new', { ip, role: 'new-role' });
  const list = await podiam.get(CREDS, ip);
  expect(list.body).toBe('new-role');
  expect((await podiam.get(CREDS + 'old-role', ip)).status).toBe(403);
  const creds = await credsFor(ip, 'new-role');
  expect(await world.callerArn(creds)).toContain('assumed-role/new-role/');
});

test('a Succeeded pod that still carries the IP does not shadow the running pod', async () => {
  const ip = world.nextIp();
  world.pod('done', { ip, role: 'done-role', phase: 'Succeeded' });
  world.pod('live', { ip, role: 'live-role' });
  await waitFor(async () => (await podiam.get(CREDS, ip)).body === 'live-role');
});

test('a hostNetwork pod is never indexed (its IP is the node\'s)', async () => {
  const ip = world.nextIp();
  world.pod('hostnet', { ip, role: 'host-role', hostNetwork: true });
  expect((await podiam.get(CREDS, ip)).status).toBe(404);
});

test('other metadata paths and the IMDSv2 token flow reach the real metadata service', async () => {
  const ip = world.nextIp();
  world.pod('proxied', { ip, role: 'proxied-role' });
  expect((await podiam.get('/latest/meta-data/instance-id', ip)).body).toBe('i-0123456789abcdef0');
  const token = await podiam.request('/latest/api/token', { fromIp: ip, method: 'PUT', headers: { 'x-aws-ec2-metadata-token-ttl-seconds': '21600' } });
  expect(token.status).toBe(200);
  expect(token.headers['x-aws-ec2-metadata-token-ttl-seconds']).toBe('21600');
  const put = world.imds.requests.filter((q) => q.method === 'PUT').at(-1)!;
  expect(put.headers['x-forwarded-for']).toBeUndefined();
  const withToken = await podiam.request('/latest/meta-data/placement/region', { fromIp: ip, headers: { 'x-aws-ec2-metadata-token': token.body } });
  expect(withToken.status).toBe(200);
  const bad = await podiam.request('/latest/meta-data/placement/region', { fromIp: ip, headers: { 'x-aws-ec2-metadata-token': 'nope' } });
  expect(bad.status).toBe(401);
  // The pod holds podiam's token, not the metadata service's: useless against the real IMDS
  // (should the rule ever be missing), and useless from another pod.
  const upstreamSaw = world.imds.requests.filter((q) => q.method === 'GET' && q.path === '/latest/meta-data/placement/region').at(-1)!;
  expect(upstreamSaw.headers['x-aws-ec2-metadata-token']).toBeDefined();
  expect(upstreamSaw.headers['x-aws-ec2-metadata-token']).not.toBe(token.body);
  const direct = await fetch(`${world.imds.url}/latest/meta-data/placement/region`, { headers: { 'x-aws-ec2-metadata-token': token.body } });
  expect(direct.status).toBe(401);
  const otherPod = world.nextIp();
  world.pod('token-thief', { ip: otherPod, role: 'thief-role' });
  expect((await podiam.request('/latest/meta-data/placement/region', { fromIp: otherPod, headers: { 'x-aws-ec2-metadata-token': token.body } })).status).toBe(401);
  // Token errors pass through as EC2 gives them, so SDKs fall back as they would on EC2.
  expect((await podiam.request('/latest/api/token', { fromIp: ip, method: 'PUT' })).status).toBe(400);
  expect((await podiam.request('/2021-03-23/api/token', { fromIp: ip, method: 'PUT', headers: { 'x-aws-ec2-metadata-token-ttl-seconds': '60' } })).status).toBe(403);
  // A token PUT that carries X-Forwarded-For is refused, as EC2 does.
  const xff = await podiam.request('/latest/api/token', { fromIp: ip, method: 'PUT', headers: { 'x-aws-ec2-metadata-token-ttl-seconds': '60', 'x-forwarded-for': '1.2.3.4' } });
  expect(xff.status).toBe(403);
});

test('credential paths work with an IMDSv2 token header too', async () => {
  const ip = world.nextIp();
  world.pod('v2', { ip, role: 'v2-role' });
  const token = await podiam.request('/latest/api/token', { fromIp: ip, method: 'PUT', headers: { 'x-aws-ec2-metadata-token-ttl-seconds': '60' } });
  const r = await podiam.request(CREDS + 'v2-role', { fromIp: ip, headers: { 'x-aws-ec2-metadata-token': token.body } });
  expect(r.status).toBe(200);
  served.push((JSON.parse(r.body) as Ec2Creds).Token);
});

test('metrics, health and readiness', async () => {
  expect((await podiam.get('/healthz')).status).toBe(200);
  const ready = await podiam.get('/readyz');
  expect(ready.status).toBe(200);
  expect(JSON.parse(ready.body)).toMatchObject({ ready: true, pods: 'watching', namespaces: 'watching' });
  expect(await podiam.metric('podiam_sts_assume_role_total', { outcome: 'success' })).toBeGreaterThan(0);
  expect(await podiam.metric('podiam_http_requests_total', { route: 'credentials', code: '200' })).toBeGreaterThan(0);
  expect(await podiam.metric('podiam_pod_wait_total', { outcome: 'found' })).toBeGreaterThan(0);
  expect(await podiam.metric('podiam_informer_synced', { resource: 'pods' })).toBe(1);
  expect(await podiam.metric('podiam_pods_indexed')).toBeGreaterThan(0);
  // /debug/store only with --debug.
  expect((await podiam.get('/debug/store')).status).not.toBe(200);
});

test('the watch carries the node field selector (list and watch)', () => {
  const podRequests = world.kube.requests.filter((r) => r.path === '/api/v1/pods');
  expect(podRequests.some((r) => r.query.watch === 'true' && r.query.fieldSelector === 'spec.nodeName=node-1')).toBe(true);
  expect(podRequests.some((r) => r.query.watch === undefined && r.query.fieldSelector === 'spec.nodeName=node-1')).toBe(true);
  expect(podRequests.every((r) => r.query.fieldSelector === 'spec.nodeName=node-1')).toBe(true);
});

test('pods on other nodes are not served', async () => {
  const ip = world.nextIp();
  world.pod('elsewhere', { ip, role: 'other-node-role', node: 'node-2' });
  expect((await podiam.get(CREDS, ip)).status).toBe(404);
});

describe('default role', () => {
  let withDefault: PodiamProcess;
  beforeAll(async () => {
    withDefault = await world.podiam(['--default-role=fallback-role']);
  });
  test('an unannotated pod gets the default role', async () => {
    const ip = world.nextIp();
    world.pod('defaulted', { ip });
    await waitFor(async () => (await withDefault.get(CREDS, ip)).status === 200);
    expect((await withDefault.get(CREDS, ip)).body).toBe('fallback-role');
    const creds = await credsFor(ip, 'fallback-role', withDefault);
    expect(await world.callerArn(creds)).toContain('assumed-role/fallback-role/');
  });
});

describe('namespace restrictions', () => {
  let glob: PodiamProcess;
  let regexp: PodiamProcess;
  beforeAll(async () => {
    world.kube.createNamespace({ metadata: { name: 'team-a', annotations: { 'iam.amazonaws.com/allowed-roles': '["team-a-*"]' } } });
    world.kube.createNamespace({ metadata: { name: 'team-r', annotations: { 'iam.amazonaws.com/allowed-roles': '["arn:aws:iam::123456789012:role/team-r-(web|api)"]' } } });
    world.kube.createNamespace({ metadata: { name: 'broken', annotations: { 'iam.amazonaws.com/allowed-roles': '["team-a-*"' } } });
    glob = await world.podiam(['--namespace-restrictions']);
    regexp = await world.podiam(['--namespace-restrictions', '--namespace-restriction-format=regexp-anchored']);
  });

  test('glob: an allowed role is served, another is denied', async () => {
    const ok = world.nextIp();
    const no = world.nextIp();
    world.pod('glob-ok', { ip: ok, role: 'team-a-web', namespace: 'team-a' });
    world.pod('glob-no', { ip: no, role: 'team-b-web', namespace: 'team-a' });
    await credsFor(ok, 'team-a-web', glob);
    const denied = await glob.get(CREDS, no);
    expect(denied.status).toBe(403);
    expect(denied.body).toContain('RoleNotAllowed');
    expect(denied.body).toContain('iam.amazonaws.com/allowed-roles');
  });

  // --namespace-restriction-format=regexp (kube2iam's unanchored search) is in kube2iam-dropin.test.ts.
  test('regexp-anchored: anchored at both ends', async () => {
    const ok = world.nextIp();
    const no = world.nextIp();
    world.pod('re-ok', { ip: ok, role: 'team-r-api', namespace: 'team-r' });
    world.pod('re-no', { ip: no, role: 'team-r-apix', namespace: 'team-r' });
    await credsFor(ok, 'team-r-api', regexp);
    expect((await regexp.get(CREDS, no)).status).toBe(403);
  });

  test('invalid allowed-roles JSON denies and says why, in the answer and the log', async () => {
    const ip = world.nextIp();
    world.pod('broken-ns', { ip, role: 'team-a-web', namespace: 'broken' });
    const r = await glob.get(CREDS, ip);
    expect(r.status).toBe(403);
    expect(r.body).toContain('not valid JSON');
    expect(glob.output()).toContain('namespace broken: annotation iam.amazonaws.com/allowed-roles is invalid');
    // And an Event on the pod tells `kubectl describe pod` why.
    await waitFor(async () => world.kube.events().some((e) => (e as { involvedObject?: { name?: string } }).involvedObject?.name === 'broken-ns'));
  });
});

test('SIGTERM: in-flight requests finish, then podiam exits 0', async () => {
  const p = await world.podiam();
  const ip = world.nextIp();
  const pending = p.get(CREDS + 'drain-role', ip);
  await new Promise((r) => setTimeout(r, 150));
  const stopping = p.stop('SIGTERM');
  await new Promise((r) => setTimeout(r, 100));
  world.pod('drain', { ip, role: 'drain-role' });
  const answer = await pending;
  expect(answer.status).toBe(200);
  const exit = await stopping;
  expect(exit.code).toBe(0);
  expect(p.output()).toContain('podiam stopped');
});

test('no secret of any credentials, and no node credential, appears in any log', () => {
  expect(served.length).toBeGreaterThan(5);
  const logs = podiam.output();
  expect(logs).toContain('credentials issued');
  for (const secret of [...served, ...NODE_CREDENTIAL_STRINGS]) expect(logs).not.toContain(secret);
  const audit = podiam.logLines().filter((l) => l.message === 'credentials issued');
  expect(audit.length).toBeGreaterThan(3);
  for (const line of audit) {
    expect(Object.keys(line).sort()).toEqual(['accessKeyId', 'cause', 'expiration', 'level', 'message', 'pod', 'roleArn', 'sessionName', 'timestamp']);
  }
});
