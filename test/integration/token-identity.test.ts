/**
 * Token identity end to end on loopback: the real podiam CLI with --token-identity, tokens from
 * the test API server's TokenRequest, validated by its TokenReview, moto_server as STS behind
 * the counting proxy. The caller's IP plays no part: every request comes from 127.0.0.1.
 */
import http from 'node:http';
import { freePort } from '../support/net.js';
import type { PodiamProcess } from '../support/podiam-process.js';
import { waitFor } from '../support/wait.js';
import { ACCOUNT, BASE_ARN, World } from '../support/world.js';

const AUDIENCE = 'pods.eks.amazonaws.com';
const ROLE_KEY = 'iam.amazonaws.com/role';

let world: World;
let podiam: PodiamProcess;
let tokenPort: number;
const served: string[] = [];

interface ContainerCreds {
  AccessKeyId: string;
  SecretAccessKey: string;
  Token: string;
  AccountId: string;
  Expiration: string;
}

function get(authorization: string | undefined, path = '/v1/credentials', agent: http.Agent | false = false): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: tokenPort, path, agent, headers: authorization === undefined ? {} : { Authorization: authorization } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function creds(token: string): Promise<ContainerCreds> {
  const r = await get(token);
  expect({ status: r.status, body: r.body.slice(0, 300) }).toMatchObject({ status: 200 });
  const body = JSON.parse(r.body) as ContainerCreds;
  served.push(body.SecretAccessKey, body.Token, token);
  return body;
}

async function refused(token: string | undefined, status: number, code: string): Promise<void> {
  const r = await get(token);
  expect(r.status).toBe(status);
  expect(r.headers['content-type']).toBe('application/json');
  const body = JSON.parse(r.body) as { code: string; message: string };
  expect(Object.keys(body)).toEqual(['code', 'message']);
  expect(body.code).toBe(code);
  expect(r.body).not.toMatch(/ASIA|SecretAccessKey/);
}

/** A pod with its ServiceAccount, and the token its projected volume would hold. */
function podWithToken(name: string, opts: { role?: string; serviceAccount?: string; namespace?: string; hostNetwork?: boolean; audience?: string } = {}): string {
  const namespace = opts.namespace ?? 'default';
  const serviceAccount = opts.serviceAccount ?? 'default';
  world.pod(name, { ip: opts.hostNetwork ? '127.0.0.1' : world.nextIp(), role: opts.role, namespace, serviceAccount, hostNetwork: opts.hostNetwork });
  return world.kube.tokenApi.issue({ namespace, serviceAccount, pod: name, audiences: [opts.audience ?? AUDIENCE], expirationSeconds: 86400 });
}

async function podiamReady(p: PodiamProcess): Promise<void> {
  await waitFor(() => p.output().includes('token identity listening'), 10_000);
}

beforeAll(async () => {
  world = await World.start();
  world.kube.updateNamespace('default', (ns) => (ns.metadata.annotations = { 'iam.amazonaws.com/allowed-roles': '["*"]' }));
  world.kube.createNamespace({ metadata: { name: 'locked', annotations: { 'iam.amazonaws.com/allowed-roles': '["web-*"]' } } });
  world.kube.createServiceAccount({ metadata: { name: 'default', namespace: 'locked' } });
  world.kube.createServiceAccount({ metadata: { name: 'reports', namespace: 'default', annotations: { [ROLE_KEY]: 'reports-sa' } } });
  world.kube.createServiceAccount({ metadata: { name: 'reports', namespace: 'locked', annotations: { [ROLE_KEY]: 'reports-sa' } } });
  tokenPort = await freePort();
  podiam = await world.podiam(['--token-identity', `--token-addr=127.0.0.1:${tokenPort}`, '--namespace-restrictions', '--session-tags', '--cluster-name=lab-cluster']);
  await podiamReady(podiam);
});

afterAll(async () => {
  await world?.stop();
});

test("a pod's token gets its role's credentials in the container-credentials format, real at STS", async () => {
  const token = podWithToken('tok-app', { role: 'tok-app' });
  const body = await creds(token);
  expect(Object.keys(body)).toEqual(['AccessKeyId', 'SecretAccessKey', 'Token', 'AccountId', 'Expiration']);
  expect(body.AccountId).toBe(ACCOUNT);
  expect(body.Expiration).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  expect(Date.parse(body.Expiration) - Date.now()).toBeGreaterThan(15 * 60_000);
  expect(await world.callerArn(body)).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/tok-app/default.tok-app`);
  // The same credentials as the IMDS path for that pod: one cache.
  const pod = world.kube.getPod('default', 'tok-app')!;
  const imds = JSON.parse((await podiam.get('/latest/meta-data/iam/security-credentials/tok-app', (pod.status as { podIP: string }).podIP)).body) as { AccessKeyId: string };
  expect(imds.AccessKeyId).toBe(body.AccessKeyId);
  // The audit line says which path served, and never a secret.
  await waitFor(() => podiam.logLines().some((l) => l['message'] === 'credentials served' && l['path'] === 'token' && l['pod'] === 'default/tok-app' && l['accessKeyId'] === body.AccessKeyId));
});

test('refused: missing or malformed header (400), other audience, expired, forged (401), no role (404)', async () => {
  await refused(undefined, 400, 'BadRequest');
  await refused('not a token', 400, 'BadRequest');
  podWithToken('tok-refused', { role: 'tok-refused' });
  const api = world.kube.tokenApi;
  const reviewsBefore = api.reviews;
  await refused(api.issue({ namespace: 'default', serviceAccount: 'default', pod: 'tok-refused', audiences: ['sts.amazonaws.com'] }), 401, 'InvalidToken');
  await refused(api.issue({ namespace: 'default', serviceAccount: 'default', pod: 'tok-refused', audiences: [AUDIENCE], expirationSeconds: 600, issuedAtOffsetSeconds: -601 }), 401, 'InvalidToken');
  // Audience and expiry are refused before any API call; so is a forged signature (checked against the API server's keys).
  expect(api.reviews).toBe(reviewsBefore);
  const good = api.issue({ namespace: 'default', serviceAccount: 'default', pod: 'tok-refused', audiences: [AUDIENCE] });
  const forged = api.sign(JSON.parse(Buffer.from(good.split('.')[1]!, 'base64url').toString()) as object, api.forgeKey());
  await refused(forged, 401, 'InvalidToken');
  await refused(forged, 401, 'InvalidToken');
  expect(api.reviews).toBe(reviewsBefore);
  // A token that is not bound to a pod.
  await refused(api.issue({ namespace: 'default', serviceAccount: 'default', audiences: [AUDIENCE] }), 401, 'InvalidToken');
  const noRole = podWithToken('tok-norole');
  await refused(noRole, 404, 'NoRoleForPod');
  expect(podiam.logLines().some((l) => l['message'] === 'token credentials refused' && l['code'] === 'BadRequest')).toBe(true);
});

test("a deleted pod's token gets nothing, even after it was served", async () => {
  const token = podWithToken('tok-doomed', { role: 'tok-doomed' });
  await creds(token);
  const reviews = world.kube.tokenApi.reviews;
  world.kube.deletePod('default', 'tok-doomed');
  await waitFor(async () => (await get(token)).status !== 200);
  await refused(token, 403, 'PodNotOnNode');
  // Recreated under the same name: a new uid, the old token stays refused.
  const ip = world.nextIp();
  world.pod('tok-doomed', { ip, role: 'tok-doomed' });
  await waitFor(async () => (await podiam.get('/latest/meta-data/iam/security-credentials/', ip)).body === 'tok-doomed');
  await refused(token, 403, 'PodNotOnNode');
  // Judged against the informer: no API call for a token whose pod is gone.
  expect(world.kube.tokenApi.reviews).toBe(reviews);
});

test("a keep-alive connection that keeps sending a deleted pod's token is refused too", async () => {
  const token = podWithToken('tok-keepalive', { role: 'tok-keepalive' });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < 3; i++) expect((await get(token, undefined, agent)).status).toBe(200);
    world.kube.deletePod('default', 'tok-keepalive');
    await waitFor(async () => (await get(token, undefined, agent)).status === 403);
    const again = await get(token, undefined, agent);
    expect(JSON.parse(again.body)).toMatchObject({ code: 'PodNotOnNode' });
  } finally {
    agent.destroy();
  }
});

test("a pod on another node, or a hostNetwork pod's token, is judged by its token, not its IP", async () => {
  // hostNetwork: shares the node's IP, which the IMDS path cannot tell apart; its token can.
  const hostToken = podWithToken('tok-host', { role: 'tok-host', hostNetwork: true });
  expect(await world.callerArn(await creds(hostToken))).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/tok-host/default.tok-host`);
  world.kube.createPod({ metadata: { name: 'tok-elsewhere', namespace: 'default', annotations: { [ROLE_KEY]: 'tok-elsewhere' } }, spec: { nodeName: 'node-2', containers: [] }, status: { phase: 'Running', podIP: world.nextIp() } });
  const elsewhere = world.kube.tokenApi.issue({ namespace: 'default', serviceAccount: 'default', pod: 'tok-elsewhere', audiences: [AUDIENCE] });
  await refused(elsewhere, 403, 'PodNotOnNode');
});

test("roles per ServiceAccount: the SA's role, the pod's own annotation wins, namespace restrictions apply to both, IMDS too", async () => {
  const saToken = podWithToken('tok-sa', { serviceAccount: 'reports' });
  expect(await world.callerArn(await creds(saToken))).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/reports-sa/default.tok-sa`);
  const ownToken = podWithToken('tok-own', { serviceAccount: 'reports', role: 'own-role' });
  expect(await world.callerArn(await creds(ownToken))).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/own-role/default.tok-own`);
  // locked allows web-*: the SA's reports-sa is denied there, on both paths.
  const lockedSa = podWithToken('tok-locked', { serviceAccount: 'reports', namespace: 'locked' });
  await refused(lockedSa, 403, 'RoleNotAllowed');
  const lockedOwn = podWithToken('tok-locked-web', { serviceAccount: 'reports', namespace: 'locked', role: 'web-frontend' });
  expect(await world.callerArn(await creds(lockedOwn))).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/web-frontend/locked.tok-locked-web`);
  // IMDS: an unannotated pod gets its ServiceAccount's role.
  const ip = world.nextIp();
  world.pod('imds-sa', { ip, serviceAccount: 'reports' });
  await waitFor(async () => (await podiam.get('/latest/meta-data/iam/security-credentials/', ip)).body === 'reports-sa');
  const lockedIp = world.nextIp();
  world.pod('imds-locked', { ip: lockedIp, serviceAccount: 'reports', namespace: 'locked' });
  await waitFor(async () => (await podiam.get('/latest/meta-data/iam/security-credentials/', lockedIp)).status === 403);
  // The ServiceAccount's annotation changes: its pods follow.
  world.kube.updateServiceAccount('default', 'reports', (sa) => (sa.metadata.annotations = { [ROLE_KEY]: 'reports-v2' }));
  await waitFor(async () => (await podiam.get('/latest/meta-data/iam/security-credentials/', ip)).body === 'reports-v2');
  expect(await world.callerArn(await creds(saToken))).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/reports-v2/default.tok-sa`);
  // A Kubernetes Event on the denied pod, as on the IMDS path.
  await waitFor(() => world.kube.events().some((e) => (e['involvedObject'] as { name: string }).name === 'tok-locked' && e['reason'] === 'PodiamRoleNotAllowed'));
});

test('session tags reach STS on both paths', async () => {
  const token = podWithToken('tok-tags', { role: 'tok-tags', serviceAccount: 'reports' });
  await creds(token);
  const pod = world.kube.getPod('default', 'tok-tags')!;
  const call = world.sts.calls.find((c) => c.action === 'AssumeRole' && c.roleArn === `${BASE_ARN}tok-tags`)!;
  const tags: Record<string, string> = {};
  for (let i = 1; call.params[`Tags.member.${i}.Key`] !== undefined; i++) tags[call.params[`Tags.member.${i}.Key`]!] = call.params[`Tags.member.${i}.Value`]!;
  expect(tags).toEqual({ 'eks-cluster-name': 'lab-cluster', 'kubernetes-namespace': 'default', 'kubernetes-service-account': 'reports', 'kubernetes-pod-name': 'tok-tags', 'kubernetes-pod-uid': pod.metadata.uid });
  // IMDS path: a pod that only ever asks there is tagged the same way.
  const ip = world.nextIp();
  const imdsPod = world.pod('imds-tags', { ip, role: 'imds-tags' });
  await waitFor(async () => (await podiam.get('/latest/meta-data/iam/security-credentials/imds-tags', ip)).status === 200);
  const imdsCall = world.sts.calls.find((c) => c.action === 'AssumeRole' && c.roleArn === `${BASE_ARN}imds-tags`)!;
  expect(Object.values(imdsCall.params)).toEqual(expect.arrayContaining(['kubernetes-pod-uid', imdsPod.metadata.uid!, 'kubernetes-pod-name', 'imds-tags']));
});

test('40 concurrent first requests: one AssumeRole, at most one TokenReview', async () => {
  // hostNetwork: no prefetch on the IMDS side, so the first token request really is first.
  const token = podWithToken('tok-burst', { role: 'tok-burst', hostNetwork: true });
  const reviewsBefore = world.kube.tokenApi.reviews;
  const answers = await Promise.all(Array.from({ length: 40 }, () => get(token)));
  expect(answers.map((a) => a.status)).toEqual(Array(40).fill(200));
  expect(new Set(answers.map((a) => (JSON.parse(a.body) as ContainerCreds).AccessKeyId)).size).toBe(1);
  expect(world.sts.countFor(`${BASE_ARN}tok-burst`)).toBe(1);
  expect(world.kube.tokenApi.reviews - reviewsBefore).toBeLessThanOrEqual(1);
  // Cached afterwards: more requests, no more reviews.
  for (let i = 0; i < 20; i++) expect((await get(token)).status).toBe(200);
  expect(world.kube.tokenApi.reviews - reviewsBefore).toBeLessThanOrEqual(1);
  expect(await podiam.metric('podiam_token_reviews_total', { outcome: 'authenticated' })).toBeGreaterThan(0);
  expect(await podiam.metric('podiam_http_requests_total', { route: 'container-credentials', code: '200' })).toBeGreaterThanOrEqual(60);
});

test('STS down: 5xx with a JSON error; the token path only on its own listener', async () => {
  world.sts.setDown(true);
  try {
    const token = podWithToken('tok-stsdown', { role: 'tok-stsdown', hostNetwork: true });
    const r = await get(token);
    expect(r.status).toBeGreaterThanOrEqual(500);
    expect((JSON.parse(r.body) as { code: string }).code).toBe('StsUnavailable');
  } finally {
    world.sts.setDown(false);
  }
  expect((await get(undefined, '/latest/meta-data/')).status).toBe(404);
  expect((await podiam.get('/v1/credentials')).status).not.toBe(200);
});

test('no token, secret or key ever reaches a log line', () => {
  const logs = podiam.output();
  expect(served.length).toBeGreaterThan(10);
  for (const secret of served) expect(logs).not.toContain(secret);
});
