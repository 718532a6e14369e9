/**
 * Broker mode end to end on loopback: `podiam broker` (real TLS, the real @kubernetes/client-node
 * against the test API server, TokenReview, moto_server as STS behind the counting proxy) and
 * node agents started with --broker, with no AWS credentials in their environment.
 * The node restriction is attacked directly at the broker's API with real tokens.
 */
import { copyFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import tls from 'node:tls';
import { BrokerLab, AGENT_AUDIENCE, AGENT_NAMESPACE, AGENT_SA } from '../support/broker.js';
import { freePort } from '../support/net.js';
import type { PodiamProcess } from '../support/podiam-process.js';
import { waitFor } from '../support/wait.js';
import { makeServingCertificate } from '../support/webhook.js';
import { ACCOUNT, World } from '../support/world.js';

const CREDS = '/latest/meta-data/iam/security-credentials/';
const NODE_A = 'node-1';
const NODE_B = 'node-2';
const POD_AUDIENCE = 'pods.eks.amazonaws.com';

interface Ec2Creds {
  AccessKeyId: string;
  SecretAccessKey: string;
  Token: string;
  Expiration: string;
}

let world: World;
let lab: BrokerLab;
let broker: { process: PodiamProcess; port: number; url: string };
let agentA: PodiamProcess;
let tokenA: string;
let tokenFileA: string;
let tokenPort: number;
/** Secrets handed out, to prove none reached a log line. */
const served: string[] = [];

function pod(name: string, opts: { node?: string; role?: string; ip?: string | null; serviceAccount?: string } = {}): { ip: string; uid: string } {
  const ip = opts.ip === null ? undefined : (opts.ip ?? world.nextIp());
  const created = world.kube.createPod({
    metadata: { name, namespace: 'default', annotations: opts.role === undefined ? {} : { 'iam.amazonaws.com/role': opts.role } },
    spec: { nodeName: opts.node ?? NODE_A, serviceAccountName: opts.serviceAccount ?? 'default', containers: [{ name: 'app', image: 'app' }] },
    status: ip === undefined ? { phase: 'Pending' } : { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
  });
  return { ip: ip ?? '', uid: created.metadata.uid! };
}

async function creds(agent: PodiamProcess, ip: string, role: string): Promise<Ec2Creds> {
  const r = await agent.get(CREDS + role, ip);
  expect({ status: r.status, body: r.body.slice(0, 300) }).toMatchObject({ status: 200 });
  const body = JSON.parse(r.body) as Ec2Creds;
  served.push(body.SecretAccessKey, body.Token);
  return body;
}

function tokenGet(token: string): Promise<{ status: number; body: string }> {
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

const assumeRoleCalls = (): number => world.sts.count('AssumeRole');

beforeAll(async () => {
  world = await World.start();
  lab = new BrokerLab(world);
  broker = await lab.broker([], { name: 'broker-main' });
  tokenA = lab.agentToken(NODE_A);
  tokenFileA = lab.tokenFile(tokenA);
  tokenPort = await freePort();
  agentA = await lab.agent([broker.url], tokenFileA, ['--token-identity', `--token-addr=127.0.0.1:${tokenPort}`], { name: 'agent-a' });
}, 60_000);

afterAll(async () => {
  await agentA?.stop();
  await broker?.process.stop();
  for (const p of [agentA, broker?.process]) {
    if (p === undefined) continue;
    for (const secret of served) expect(p.output()).not.toContain(secret);
    // The agent's token is never logged either.
    expect(p.output()).not.toContain(tokenA);
  }
  await world?.stop();
  lab?.cleanup();
});

test("an agent in broker mode serves its node's pod its own role over IMDS and the token path", async () => {
  const { ip } = pod('app-a', { role: 'app-a' });
  const list = await agentA.get(CREDS, ip);
  expect(list.status).toBe(200);
  expect(list.body).toBe('app-a');
  const body = await creds(agentA, ip, 'app-a');
  expect(Date.parse(body.Expiration) - Date.now()).toBeGreaterThan(15 * 60_000);
  expect(await world.callerArn(body)).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/app-a/default.app-a`);
  // Another role than its own: refused, as standalone.
  expect((await agentA.get(CREDS + 'other', ip)).status).toBe(403);

  // The token path: the pod's own ServiceAccount token, reviewed by the agent and again by the broker.
  pod('tok-a', { role: 'tok-a' });
  const podToken = world.kube.tokenApi.issue({ namespace: 'default', serviceAccount: 'default', pod: 'tok-a', audiences: [POD_AUDIENCE], expirationSeconds: 3600 });
  await waitFor(() => agentA.output().includes('token identity listening'), 10_000);
  const r = await tokenGet(podToken);
  expect({ status: r.status, body: r.body.slice(0, 300) }).toMatchObject({ status: 200 });
  const tok = JSON.parse(r.body) as Ec2Creds;
  served.push(tok.SecretAccessKey, tok.Token, podToken);
  expect(await world.callerArn(tok)).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/tok-a/default.tok-a`);
});

test('associations live in the broker: a PodIdentityAssociation gives a pod its role through the broker, and the broker writes its status', async () => {
  world.kube.associationApi.create({ metadata: { name: 'brokered' }, spec: { namespace: 'default', serviceAccount: 'brokered-sa', roleArn: `arn:aws:iam::${ACCOUNT}:role/assoc-brokered` } });
  const { ip } = pod('assoc-a', { serviceAccount: 'brokered-sa' });
  await waitFor(async () => (await agentA.get(CREDS, ip)).body === 'assoc-brokered', 10_000, 'the association reaches the agent through the broker');
  const body = await creds(agentA, ip, 'assoc-brokered');
  expect(await world.callerArn(body)).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/assoc-brokered/default.assoc-a`);
  const accepted = (): Record<string, unknown> | undefined => ((world.kube.associationApi.get('brokered')?.status?.['conditions'] ?? []) as Array<Record<string, unknown>>).find((c) => c['type'] === 'Accepted');
  await waitFor(() => accepted()?.['status'] === 'True', 10_000, 'the broker writes Accepted');
});

test('role chaining through the broker: targetRoleArn is assumed with the first hop\'s credentials, not the broker\'s own', async () => {
  world.kube.associationApi.create({ metadata: { name: 'brokered-chain' }, spec: { namespace: 'default', serviceAccount: 'chained-sa', roleArn: `arn:aws:iam::${ACCOUNT}:role/hop-one`, targetRoleArn: 'arn:aws:iam::210987654321:role/cross-target' } });
  const { ip } = pod('assoc-chained', { serviceAccount: 'chained-sa' });
  await waitFor(async () => (await agentA.get(CREDS, ip)).body === 'cross-target', 10_000, 'the chained association reaches the agent through the broker');
  const body = await creds(agentA, ip, 'cross-target');
  expect(await world.callerArn(body)).toBe('arn:aws:sts::210987654321:assumed-role/cross-target/default.assoc-chained');
  const calls = (roleArn: string) => world.sts.calls.filter((c) => c.action === 'AssumeRole' && c.roleArn === roleArn);
  const [first, second] = [calls(`arn:aws:iam::${ACCOUNT}:role/hop-one`), calls('arn:aws:iam::210987654321:role/cross-target')];
  expect([first.length, second.length]).toEqual([1, 1]);
  // Signed with the first hop's key (the broker's own would be 'testing'), for at most an hour.
  expect(second[0]!.accessKeyId).not.toBe(first[0]!.accessKeyId);
  expect(second[0]!.accessKeyId).not.toBe('testing');
  expect(second[0]!.durationSeconds).toBeLessThanOrEqual(3600);
});

test("a ServiceAccount's role changed, then removed: the agent follows within seconds through the broker's change feed, not at its next refresh", async () => {
  world.kube.createServiceAccount({ metadata: { name: 'feed-sa', namespace: 'default', annotations: { 'iam.amazonaws.com/role': 'feed-one' } } });
  const { ip } = pod('feed-a', { serviceAccount: 'feed-sa' });
  await waitFor(async () => (await agentA.get(CREDS, ip)).body === 'feed-one', 10_000, 'the ServiceAccount role reaches the agent');
  const one = await creds(agentA, ip, 'feed-one');
  expect(await world.callerArn(one)).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/feed-one/default.feed-a`);
  const changes = (): Promise<number> => broker.process.metric('podiam_broker_policy_changes_total', { kind: 'serviceaccount' });
  const before = await changes();

  // The agent watches no ServiceAccount: without the feed it would serve feed-one's credentials,
  // held in its memory, until their refresh some 45 minutes from now.
  world.kube.updateServiceAccount('default', 'feed-sa', (sa) => {
    sa.metadata.annotations = { 'iam.amazonaws.com/role': 'feed-two' };
  });
  await waitFor(async () => (await agentA.get(CREDS, ip)).body === 'feed-two', 5_000, 'the new role reaches the agent through the change feed');
  expect((await agentA.get(CREDS + 'feed-one', ip)).status).toBe(403);
  const two = await creds(agentA, ip, 'feed-two');
  expect(await world.callerArn(two)).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/feed-two/default.feed-a`);

  // No role any more: nothing is served, the credentials held included.
  world.kube.updateServiceAccount('default', 'feed-sa', (sa) => {
    sa.metadata.annotations = {};
  });
  await waitFor(async () => (await agentA.get(CREDS, ip)).status === 404, 5_000, 'the removal reaches the agent');
  expect((await agentA.get(CREDS + 'feed-two', ip)).status).not.toBe(200);
  expect(await changes()).toBeGreaterThanOrEqual(before + 2);
  expect(agentA.output()).toContain('policy changed, asking the broker again about the pods it touches');
  // Told only of its own node's namespaces: the agent's poll named default/feed-sa.
  expect(agentA.output()).toContain('default/feed-sa');
});

test("agent A's token asking for a pod of node B: 403, logged, counted, and no STS call", async () => {
  // No IP yet: the broker has not prefetched it, so any STS call would be this request's.
  const b = pod('app-b', { node: NODE_B, role: 'app-b', ip: null });
  await waitFor(async () => (await lab.ask(broker.url, '/v1/credentials', tokenA, { namespace: 'default', name: 'app-b', uid: b.uid, proof: { kind: 'ip' } })).status !== 404, 5000);
  const calls = assumeRoleCalls();
  const before = await broker.process.metric('podiam_broker_refusals_total', { code: 'PodNotOnAgentNode' });
  const r = await lab.ask(broker.url, '/v1/credentials', tokenA, { namespace: 'default', name: 'app-b', uid: b.uid, proof: { kind: 'ip' } });
  expect(r.status).toBe(403);
  expect(JSON.parse(r.body)).toMatchObject({ code: 'PodNotOnAgentNode' });
  expect(r.body).not.toMatch(/ASIA|SecretAccessKey/);
  // The role too: nothing of another node's pod.
  expect((await lab.ask(broker.url, '/v1/role', tokenA, { namespace: 'default', name: 'app-b', uid: b.uid })).status).toBe(403);
  expect(await broker.process.metric('podiam_broker_refusals_total', { code: 'PodNotOnAgentNode' })).toBe(before + 2);
  await waitFor(() => broker.process.logLines().some((l) => l['message'] === 'broker refused an agent request' && l['code'] === 'PodNotOnAgentNode' && l['node'] === NODE_A && l['pod'] === 'default/app-b'));
  expect(assumeRoleCalls()).toBe(calls);

  // Node B's own agent gets it (the same pod, the same broker): the refusal was the node, nothing else.
  const tokenB = lab.agentToken(NODE_B);
  const ok = await lab.ask(broker.url, '/v1/credentials', tokenB, { namespace: 'default', name: 'app-b', uid: b.uid, proof: { kind: 'ip' } });
  expect(ok.status).toBe(200);
  const answer = JSON.parse(ok.body) as { roleArn: string; credentials: Ec2Creds };
  served.push(answer.credentials.SecretAccessKey, answer.credentials.Token);
  expect(answer.roleArn).toMatch(/:role\/app-b$/);
  expect(assumeRoleCalls()).toBe(calls + 1);
});

test('a pod the agent saw before the broker did is waited for (up to 1 s), not refused', async () => {
  // The agent's informer (one node) can be ahead of the broker's (the cluster): ask first, create the pod 300 ms later.
  const uid = '11111111-2222-3333-4444-555555555555';
  const asked = lab.ask(broker.url, '/v1/credentials', tokenA, { namespace: 'default', name: 'late-pod', uid, proof: { kind: 'ip' } });
  await new Promise((resolve) => setTimeout(resolve, 300));
  world.kube.createPod({
    metadata: { name: 'late-pod', namespace: 'default', uid, annotations: { 'iam.amazonaws.com/role': 'late-role' } },
    spec: { nodeName: NODE_A, containers: [{ name: 'app', image: 'app' }] },
    status: { phase: 'Running', podIP: world.nextIp() },
  });
  const r = await asked;
  expect({ status: r.status, body: r.body.slice(0, 200) }).toMatchObject({ status: 200 });
  expect(JSON.parse(r.body)).toMatchObject({ roleName: 'late-role' });
  // A pod that never comes is still 404 once the wait is over.
  const never = await lab.ask(broker.url, '/v1/credentials', tokenA, { namespace: 'default', name: 'never-pod', uid, proof: { kind: 'ip' } });
  expect(never.status).toBe(404);
});

test('a wrong uid for a pod of its own node: 403', async () => {
  pod('app-uid', { role: 'app-uid' });
  const r = await lab.ask(broker.url, '/v1/credentials', tokenA, { namespace: 'default', name: 'app-uid', uid: '00000000-0000-0000-0000-000000000000', proof: { kind: 'ip' } });
  expect(r.status).toBe(403);
  expect(JSON.parse(r.body)).toMatchObject({ code: 'PodUidMismatch' });
});

test("an agent token bound to a pod that does not exist, or with a wrong pod uid: 403", async () => {
  const { uid } = pod('app-c', { role: 'app-c' });
  const ask = (token: string) => lab.ask(broker.url, '/v1/credentials', token, { namespace: 'default', name: 'app-c', uid, proof: { kind: 'ip' } });
  // The agent's pod deleted: its token no longer reviews (and the broker no longer sees the pod).
  const gone = lab.agentToken(NODE_A, { podName: 'podiam-gone' });
  world.kube.deletePod(AGENT_NAMESPACE, 'podiam-gone');
  const r1 = await ask(gone);
  expect(r1.status).toBe(403);
  expect(JSON.parse(r1.body)).toMatchObject({ code: 'AgentPodUnknown' });
  // A validly signed token whose pod uid is not that pod's: refused before any TokenReview (the
  // broker sees no agent pod with that uid running).
  const claims = JSON.parse(Buffer.from(tokenA.split('.')[1]!, 'base64url').toString()) as { 'kubernetes.io': { pod: { uid: string } } };
  claims['kubernetes.io'].pod.uid = '11111111-2222-3333-4444-555555555555';
  const reviews = world.kube.tokenApi.reviews;
  const r2 = await ask(world.kube.tokenApi.sign(claims));
  expect(r2.status).toBe(403);
  expect(JSON.parse(r2.body)).toMatchObject({ code: 'AgentPodUnknown' });
  expect(world.kube.tokenApi.reviews).toBe(reviews);
  // No token, a forged one.
  expect((await ask('')).status).toBe(403);
  expect((await ask(world.kube.tokenApi.sign(JSON.parse(Buffer.from(tokenA.split('.')[1]!, 'base64url').toString()) as object, world.kube.tokenApi.forgeKey()))).status).toBe(403);
});

test("a non-agent ServiceAccount's token with audience podiam-broker: 403 NotAnAgent, without even a TokenReview", async () => {
  const { uid } = pod('app-d', { role: 'app-d' });
  // Any pod can get a token of any audience for its own ServiceAccount.
  const impostor = world.kube.tokenApi.issue({ namespace: 'default', serviceAccount: 'default', pod: 'app-d', audiences: [AGENT_AUDIENCE], expirationSeconds: 3600 });
  const reviews = world.kube.tokenApi.reviews;
  const r = await lab.ask(broker.url, '/v1/credentials', impostor, { namespace: 'default', name: 'app-d', uid, proof: { kind: 'ip' } });
  expect(r.status).toBe(403);
  expect(JSON.parse(r.body)).toMatchObject({ code: 'NotAnAgent' });
  expect(world.kube.tokenApi.reviews).toBe(reviews);
  // A ServiceAccount named like the agents' in another namespace is not the agents' either.
  world.kube.createServiceAccount({ metadata: { name: AGENT_SA, namespace: 'default' } });
  pod('fake-agent', { serviceAccount: AGENT_SA });
  const lookalike = world.kube.tokenApi.issue({ namespace: 'default', serviceAccount: AGENT_SA, pod: 'fake-agent', audiences: [AGENT_AUDIENCE], expirationSeconds: 3600 });
  const r2 = await lab.ask(broker.url, '/v1/credentials', lookalike, { namespace: 'default', name: 'app-d', uid, proof: { kind: 'ip' } });
  expect(JSON.parse(r2.body)).toMatchObject({ code: 'NotAnAgent' });
});

test('the token path: the broker checks the pod token is that pod’s (another pod’s token is refused)', async () => {
  const { uid } = pod('tok-e', { role: 'tok-e' });
  pod('tok-f', { role: 'tok-f' });
  const otherToken = world.kube.tokenApi.issue({ namespace: 'default', serviceAccount: 'default', pod: 'tok-f', audiences: [POD_AUDIENCE], expirationSeconds: 3600 });
  const r = await lab.ask(broker.url, '/v1/credentials', tokenA, { namespace: 'default', name: 'tok-e', uid, proof: { kind: 'token', token: otherToken } });
  expect(r.status).toBe(403);
  expect(JSON.parse(r.body)).toMatchObject({ code: 'TokenNotForPod' });
});

test('restarting the agent makes 0 AssumeRole calls while the broker holds fresh credentials', async () => {
  const pods = ['rs-1', 'rs-2', 'rs-3'].map((name) => ({ name, ...pod(name, { role: name }) }));
  for (const p of pods) await creds(agentA, p.ip, p.name);
  const calls = assumeRoleCalls();
  await agentA.stop();
  agentA = await lab.agent([broker.url], tokenFileA, ['--token-identity', `--token-addr=127.0.0.1:${tokenPort}`], { name: 'agent-a2' });
  for (const p of pods) await creds(agentA, p.ip, p.name);
  await waitFor(async () => (await agentA.metric('podiam_broker_requests_total', { outcome: 'ok' })) >= pods.length);
  expect(assumeRoleCalls()).toBe(calls);
});

test('broker down: cached pods keep 200, new pods 503 BrokerUnavailable within --broker-timeout, recovery by itself', async () => {
  const cached = pod('down-cached', { role: 'down-cached' });
  await creds(agentA, cached.ip, 'down-cached');
  await broker.process.stop();
  const fresh = pod('down-new', { role: 'down-new' });
  await waitFor(async () => (await agentA.get('/healthz')).status === 200);
  expect((await agentA.get(CREDS + 'down-cached', cached.ip)).status).toBe(200);
  const started = Date.now();
  const r = await agentA.get(CREDS + 'down-new', fresh.ip);
  const tookMs = Date.now() - started;
  expect(r.status).toBe(503);
  expect(r.body).toMatch(/^BrokerUnavailable: /);
  // --broker-timeout=2s (and the pod wait, at most --pod-wait): never hangs.
  expect(tookMs).toBeLessThan(3500);
  expect(await agentA.metric('podiam_broker_up')).toBe(0);
  expect(r.body).not.toMatch(/ASIA/);

  broker = await lab.broker([], { port: broker.port, name: 'broker-main-2' });
  await waitFor(async () => (await agentA.get(CREDS + 'down-new', fresh.ip)).status === 200, 10_000);
  expect(await agentA.metric('podiam_broker_up')).toBe(1);
}, 30_000);

test('two broker replicas, one killed: the request is retried on the other', async () => {
  const second = await lab.broker([], { name: 'broker-second' });
  const agent = await lab.agent([broker.url, second.url], tokenFileA, [], { name: 'agent-failover' });
  try {
    const warm = pod('fo-warm', { role: 'fo-warm' });
    await creds(agent, warm.ip, 'fo-warm');
    // The first replica dies (no goodbye: SIGKILL) while the agent holds a pooled connection to it.
    await broker.process.stop('SIGKILL');
    const p = pod('fo-new', { role: 'fo-new' });
    const body = await creds(agent, p.ip, 'fo-new');
    expect(await world.callerArn(body)).toMatch(/assumed-role\/fo-new\//);
    expect(await second.process.metric('podiam_broker_served_total', { route: 'credentials', code: 'OK' })).toBeGreaterThanOrEqual(1);
  } finally {
    await agent.stop();
    await second.process.stop();
    broker = await lab.broker([], { port: broker.port, name: 'broker-main-3' });
  }
}, 40_000);

test('the agent in broker mode never loads the AWS SDK (the broker does) and has no AWS credentials', async () => {
  const sdk = lab.sdkChunks();
  expect(sdk.length).toBeGreaterThan(0);
  const agentFiles = lab.loaded('agent-a2');
  expect(agentFiles).toContain('podiam.js');
  expect(agentFiles.filter((f) => sdk.includes(f))).toEqual([]);
  // The check can fail: the broker, which calls STS, did load it.
  expect(lab.loaded('broker-main').filter((f) => sdk.includes(f)).length).toBeGreaterThan(0);
});

test('an agent whose --broker-ca-file holds no certificate refuses to start, naming the flag', async () => {
  const { runCli } = await import('../support/podiam-process.js');
  const file = path.join(lab.dir, 'not-a-ca.crt');
  writeFileSync(file, 'not a certificate\n');
  const r = await runCli(['--broker=https://127.0.0.1:1', `--broker-ca-file=${file}`, `--broker-token-file=${file}`, '--node=n', `--api-server=${world.kube.url}`, '--insecure', '--host-ip=127.0.0.1', `--app-port=${await freePort()}`, '--metadata-addr=127.0.0.1:1']);
  expect(r.code).not.toBe(0);
  expect(r.stderr + r.stdout).toMatch(/--broker-ca-file: .*not-a-ca\.crt holds no PEM CA certificate/);
});

test('role policy flags are refused on an agent in broker mode, naming them', async () => {
  const { runCli } = await import('../support/podiam-process.js');
  const r = await runCli(['--broker=https://127.0.0.1:1', `--broker-ca-file=${lab.caFile}`, '--base-role-arn=arn:aws:iam::123456789012:role/', '--namespace-restrictions']);
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/--base-role-arn.*belongs to the broker.*--namespace-restrictions/s);
});

test("a broker's cold start prefetches the cluster at --sts-qps, and an agent's request jumps the queue", async () => {
  const names = Array.from({ length: 24 }, (_, i) => `cold-${i}`);
  const uids = new Map(names.map((name) => [name, pod(name, { role: name }).uid]));
  // Let the running brokers prefetch these first: what follows counts only the cold broker's calls.
  await waitFor(() => names.every((n) => world.sts.countFor(`arn:aws:iam::${ACCOUNT}:role/${n}`) >= 1), 15_000);
  const from = world.sts.calls.length;
  const cold = await lab.broker(['--sts-qps=4'], { name: 'broker-cold' });
  try {
    // Roles prefetched: every pod with a role in the cluster (this file made dozens).
    await waitFor(async () => (await cold.process.metric('podiam_broker_prefetch_queued')) > 10, 5000);
    const last = names[names.length - 1]!;
    const started = Date.now();
    const r = await lab.ask(cold.url, '/v1/credentials', tokenA, { namespace: 'default', name: last, uid: uids.get(last)!, proof: { kind: 'ip' } });
    const tookMs = Date.now() - started;
    expect(r.status).toBe(200);
    served.push((JSON.parse(r.body) as { credentials: Ec2Creds }).credentials.SecretAccessKey);
    // Not behind the queue (dozens of calls at 4 a second would take many seconds).
    expect(tookMs).toBeLessThan(1500);
    expect(await cold.process.metric('podiam_broker_prefetch_queued')).toBeGreaterThan(5);
    // The rate: from the first call on, at most the burst (4) plus 4 a second, plus the pod's own call.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const calls = world.sts.calls.slice(from).filter((c) => c.action === 'AssumeRole');
    const spanS = (calls[calls.length - 1]!.time - calls[0]!.time) / 1000;
    expect(calls.length).toBeGreaterThan(8);
    expect(calls.length).toBeLessThanOrEqual(4 + Math.ceil(4 * spanS) + 1 + 1);
  } finally {
    await cold.process.stop();
  }
}, 40_000);

test('the broker reloads its serving certificate when the files change, without a restart', async () => {
  const one = makeServingCertificate(lab.dir, 'rot-one', 'broker-one');
  const two = makeServingCertificate(lab.dir, 'rot-two', 'broker-two');
  const certFile = path.join(lab.dir, 'rot.crt');
  const keyFile = path.join(lab.dir, 'rot.key');
  copyFileSync(one.certFile, certFile);
  copyFileSync(one.keyFile, keyFile);
  const b = await lab.broker([`--tls-cert-file=${certFile}`, `--tls-key-file=${keyFile}`, '--tls-reload-interval=200ms'], { name: 'broker-rotation' });
  const servedName = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port: b.port, ca: lab.ca, servername: 'localhost', minVersion: 'TLSv1.2' }, () => {
        const cn = socket.getPeerCertificate().subject.CN;
        socket.end();
        resolve(String(cn));
      });
      socket.on('error', reject);
    });
  try {
    expect(await servedName()).toBe('broker-one');
    copyFileSync(two.keyFile, keyFile);
    copyFileSync(two.certFile, certFile);
    await waitFor(async () => (await servedName()) === 'broker-two', 5000);
    expect(await b.process.metric('podiam_broker_certificate_reloads_total', { outcome: 'success' })).toBe(2);
    // TLS below 1.2 is refused.
    await expect(new Promise((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port: b.port, ca: lab.ca, servername: 'localhost', minVersion: 'TLSv1', maxVersion: 'TLSv1.1' }, () => resolve(socket.end()));
      socket.on('error', reject);
    })).rejects.toThrow();
  } finally {
    await b.process.stop();
  }
}, 30_000);
