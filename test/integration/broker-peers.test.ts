/**
 * Two `podiam broker` replicas with --peers share one cache: every pod's credentials are assumed
 * once for the cluster, not once per replica, and both replicas answer the same credentials. A
 * replica that cannot reach the owner calls STS itself (one call, never a refusal), and one not
 * ready for a while is not asked at all. The peer route answers only the brokers' own ServiceAccount, bound to a running broker pod.
 *
 * Real processes (dist/podiam.js), real TLS (each replica verifies the other against the CA and
 * --peer-tls-name), the test API server's TokenRequest and TokenReview, moto behind the counting
 * STS proxy. The replicas listen on 127.0.0.2 and 127.0.0.3, the IPs of their pods.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { BrokerLab, AGENT_NAMESPACE } from '../support/broker.js';
import { metricSum } from '../support/metrics-text.js';
import { freePort } from '../support/net.js';
import { PodiamProcess, awsTestEnv, runCli } from '../support/podiam-process.js';
import { waitFor } from '../support/wait.js';
import { makeServingCertificate } from '../support/webhook.js';
import { BASE_ARN, NODE, World } from '../support/world.js';

const BROKER_SA = 'podiam-broker';
const REPLICAS = [
  { name: 'podiam-broker-a', ip: '127.0.0.2' },
  { name: 'podiam-broker-b', ip: '127.0.0.3' },
];

let world: World;
let lab: BrokerLab;
let port: number;
let cert: { certFile: string; keyFile: string };
const replicas: Array<{ process: PodiamProcess; url: string; metricsPort: number; ip: string }> = [];
let agentToken: string;
const pods: Array<{ name: string; uid: string; role: string }> = [];

const assumeRoleCalls = (): number => world.sts.count('AssumeRole');

function peerToken(pod: string): string {
  return world.kube.tokenApi.issue({ namespace: AGENT_NAMESPACE, serviceAccount: BROKER_SA, pod, audiences: ['podiam-broker'], expirationSeconds: 3600 });
}

async function startReplica(r: { name: string; ip: string }): Promise<(typeof replicas)[number]> {
  const metricsPort = await freePort();
  const tokenFile = path.join(lab.dir, `peer-token-${r.name}`);
  writeFileSync(tokenFile, peerToken(r.name));
  const args = [
    'broker',
    `--port=${port}`,
    `--metrics-port=${metricsPort}`,
    `--host=${r.ip}`,
    `--tls-cert-file=${cert.certFile}`,
    `--tls-key-file=${cert.keyFile}`,
    `--api-server=${world.kube.url}`,
    '--insecure',
    `--base-role-arn=${BASE_ARN}`,
    '--shutdown-delay=0s',
    '--log-format=json',
    `--peers=${AGENT_NAMESPACE}/${BROKER_SA}`,
    `--pod-name=${r.name}`,
    '--peer-tls-name=podiam-broker.kube-system.svc',
    `--peer-ca-file=${lab.caFile}`,
    `--peer-token-file=${tokenFile}`,
  ];
  const process = await PodiamProcess.start(args, awsTestEnv(world.sts.url), { port: metricsPort, host: r.ip, timeoutMs: 20_000 });
  return { process, url: `https://${r.ip}:${port}`, metricsPort, ip: r.ip };
}

async function metric(replica: (typeof replicas)[number], name: string, labels: Record<string, string> = {}): Promise<number> {
  const r = await replica.process.get('/metrics');
  return metricSum(r.body, name, labels);
}

function rolePod(name: string, role: string): void {
  const ip = world.nextIp();
  const created = world.kube.createPod({
    metadata: { name, namespace: 'default', annotations: { 'iam.amazonaws.com/role': role } },
    spec: { nodeName: NODE, serviceAccountName: 'default', containers: [{ name: 'app', image: 'app' }] },
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
  });
  pods.push({ name, uid: created.metadata.uid!, role });
}

async function askCredentials(replica: (typeof replicas)[number], p: (typeof pods)[number]): Promise<{ status: number; accessKeyId?: string; body: string }> {
  const r = await lab.ask(replica.url, '/v1/credentials', agentToken, { namespace: 'default', name: p.name, uid: p.uid, proof: { kind: 'ip' } });
  if (r.status !== 200) return { status: r.status, body: r.body };
  const body = JSON.parse(r.body) as { credentials: { AccessKeyId: string } };
  return { status: 200, accessKeyId: body.credentials.AccessKeyId, body: '' };
}

beforeAll(async () => {
  world = await World.start();
  lab = new BrokerLab(world);
  cert = makeServingCertificate(lab.dir, 'peers', 'podiam-broker', ['DNS:podiam-broker.kube-system.svc', ...REPLICAS.map((r) => `IP:${r.ip}`)]);
  port = await freePort();
  world.kube.createServiceAccount({ metadata: { name: BROKER_SA, namespace: AGENT_NAMESPACE } });
  for (const r of REPLICAS) {
    world.kube.createPod({
      metadata: { name: r.name, namespace: AGENT_NAMESPACE, labels: { 'app.kubernetes.io/name': 'podiam-broker' } },
      spec: { nodeName: `broker-node-${r.name}`, serviceAccountName: BROKER_SA, containers: [{ name: 'broker', image: 'podiam' }] },
      status: { phase: 'Running', podIP: r.ip, podIPs: [{ ip: r.ip }] },
    });
  }
  agentToken = lab.agentToken(NODE);
  for (const r of REPLICAS) replicas.push(await startReplica(r));
}, 90_000);

afterAll(async () => {
  await Promise.all(replicas.map((r) => r.process.stop()));
  await world?.stop();
});

test('each pod is assumed once for the cluster: its owner prefetches it, and the other replica, asked by an agent, gets it from the owner', async () => {
  world.sts.reset();
  for (let i = 0; i < 12; i++) rolePod(`app-${i}`, `peer-role-${i}`);
  // Each pod prefetched by one replica: 12 AssumeRole calls in all, and both replicas own some.
  const issued = async () => Promise.all(replicas.map((r) => metric(r, 'podiam_credentials_issued_total', { cause: 'prefetch' })));
  await waitFor(async () => (await issued()).reduce((a, b) => a + b, 0) >= pods.length, 20_000, 'every pod prefetched by its owner');
  expect((await issued()).every((n) => n > 0)).toBe(true);
  expect(await metric(replicas[0]!, 'podiam_broker_peers')).toBe(1);

  // An agent asking either replica gets the same credentials, each replica answering from its
  // memory or the owner's, and STS is not called again: 12 calls, where two replicas each
  // prefetching every pod made 24.
  for (const p of pods) {
    const [a, b] = await Promise.all(replicas.map((r) => askCredentials(r, p)));
    expect([a!.status, b!.status]).toEqual([200, 200]);
    expect(a!.accessKeyId).toBe(b!.accessKeyId);
  }
  expect(assumeRoleCalls()).toBe(pods.length);
  const forwarded = (await Promise.all(replicas.map((r) => metric(r, 'podiam_broker_peer_fetches_total', { outcome: 'ok' })))).reduce((a, b) => a + b, 0);
  expect(forwarded).toBe(pods.length);
}, 60_000);

test('the peer route answers only another replica: an agent token, a pod token and no token are refused', async () => {
  const replica = replicas[0]!;
  const body = { request: { roleArn: `${BASE_ARN}peer-role-0`, roleName: 'peer-role-0', sessionName: 'x', pod: 'default/app-0' }, urgent: true, minValidMs: 0 };
  const asAgent = await lab.ask(replica.url, '/v1/peer/credentials', agentToken, body);
  expect({ status: asAgent.status, code: (JSON.parse(asAgent.body) as { code: string }).code }).toEqual({ status: 403, code: 'NotAPeer' });
  const none = await lab.ask(replica.url, '/v1/peer/credentials', undefined, body);
  expect(none.status).toBe(403);
  // A token of the brokers' ServiceAccount bound to a pod that is not a running replica.
  world.kube.createPod({ metadata: { name: 'impostor', namespace: AGENT_NAMESPACE }, spec: { nodeName: NODE, serviceAccountName: BROKER_SA, containers: [{ name: 'x', image: 'x' }] }, status: { phase: 'Succeeded' } });
  const ended = await lab.ask(replica.url, '/v1/peer/credentials', peerToken('impostor'), body);
  expect({ status: ended.status, code: (JSON.parse(ended.body) as { code: string }).code }).toEqual({ status: 403, code: 'PeerPodUnknown' });
  // The other replica's own token is answered (with the credentials: never logged).
  const asPeer = await lab.ask(replica.url, '/v1/peer/credentials', peerToken(REPLICAS[1]!.name), { ...body, request: { ...body.request, sessionName: 'default.app-0' } });
  expect(asPeer.status).toBe(200);
  expect(Object.keys(JSON.parse(asPeer.body) as object).sort()).toEqual(['AccessKeyId', 'Expiration', 'IssuedMs', 'SecretAccessKey', 'SessionToken']);
  expect(replica.process.output()).not.toContain((JSON.parse(asPeer.body) as { SecretAccessKey: string }).SecretAccessKey);
}, 30_000);

test('the owner down: the other replica calls STS itself, once per new pod, and every agent request is answered', async () => {
  const [a, b] = replicas;
  // b stops; its pod still looks Running to a (a node lost without a word), so a keeps asking it first.
  await b!.process.stop();
  const errorsBefore = await metric(a!, 'podiam_broker_peer_fetches_total', { outcome: 'unreachable' });
  const fresh = pods.length;
  for (let i = 0; i < 8; i++) rolePod(`late-${i}`, `late-role-${i}`);
  const before = assumeRoleCalls();
  for (const p of pods.slice(fresh)) {
    const r = await askCredentials(a!, p);
    expect({ pod: p.name, status: r.status, body: r.body }).toEqual({ pod: p.name, status: 200, body: '' });
  }
  // One STS call per new pod, whichever replica owned it; those b owned went through a failed forward first.
  expect(assumeRoleCalls() - before).toBe(8);
  expect(await metric(a!, 'podiam_broker_peer_fetches_total', { outcome: 'unreachable' })).toBeGreaterThan(errorsBefore);
}, 60_000);

test('a replica not ready for longer than the grace (its node lost) is asked no more: no forward waits on it, one STS call per new pod', async () => {
  const [a] = replicas;
  // b is still down (the test above), and now the node controller has marked its pod not ready a minute ago.
  const setReady = (ready: boolean, sinceMs: number) =>
    world.kube.updatePod(AGENT_NAMESPACE, REPLICAS[1]!.name, (pod) => {
      (pod.status as Record<string, unknown>).conditions = [{ type: 'Ready', status: ready ? 'True' : 'False', lastTransitionTime: new Date(sinceMs).toISOString() }];
    });
  setReady(false, Date.now() - 60_000);
  await waitFor(async () => (await metric(a!, 'podiam_broker_peers')) === 0, 10_000, 'a leaves b out');
  // Past the 10 s for which the failed forwards above put b aside: only the membership keeps a from asking it.
  await new Promise((resolve) => setTimeout(resolve, 10_500));
  const unreachableBefore = await metric(a!, 'podiam_broker_peer_fetches_total', { outcome: 'unreachable' });
  const fresh = pods.length;
  for (let i = 0; i < 8; i++) rolePod(`after-loss-${i}`, `after-loss-role-${i}`);
  const before = assumeRoleCalls();
  for (const p of pods.slice(fresh)) expect((await askCredentials(a!, p)).status).toBe(200);
  expect(assumeRoleCalls() - before).toBe(8);
  expect(await metric(a!, 'podiam_broker_peer_fetches_total', { outcome: 'unreachable' })).toBe(unreachableBefore);
  // Ready again, for the test below.
  setReady(true, Date.now());
}, 60_000);

test('both replicas restarted with every pod already there (the pod list reaches the brokers\' own pods last): still one AssumeRole per pod', async () => {
  await Promise.all(replicas.map((r) => r.process.stop()));
  world.sts.reset();
  replicas.length = 0;
  for (const r of REPLICAS) replicas.push(await startReplica(r));
  const issued = async () => (await Promise.all(replicas.map((r) => metric(r, 'podiam_credentials_issued_total', { cause: 'prefetch' })))).reduce((a, b) => a + b, 0);
  await waitFor(async () => (await issued()) >= pods.length, 20_000, 'every pod prefetched by its owner');
  await new Promise((resolve) => setTimeout(resolve, 500));
  expect(assumeRoleCalls()).toBe(pods.length);
  for (const p of pods) for (const r of replicas) expect((await askCredentials(r, p)).status).toBe(200);
  expect(assumeRoleCalls()).toBe(pods.length);
}, 60_000);

test('a replica whose --peer-token-file is not its own refuses to start, naming the flag', async () => {
  const metricsPort = await freePort();
  const tokenFile = path.join(lab.dir, 'peer-token-wrong');
  // The other replica's token: a forward shown it would be refused, every call would go to STS.
  writeFileSync(tokenFile, peerToken(REPLICAS[0]!.name));
  const args = ['broker', `--port=${await freePort()}`, `--metrics-port=${metricsPort}`, '--host=127.0.0.1', `--tls-cert-file=${cert.certFile}`, `--tls-key-file=${cert.keyFile}`, `--api-server=${world.kube.url}`, '--insecure', `--base-role-arn=${BASE_ARN}`, `--peers=${AGENT_NAMESPACE}/${BROKER_SA}`, '--pod-name=podiam-broker-c', '--peer-tls-name=podiam-broker.kube-system.svc', `--peer-ca-file=${lab.caFile}`, `--peer-token-file=${tokenFile}`];
  const r = await runCli(args, awsTestEnv(world.sts.url));
  expect(r.code).not.toBe(0);
  expect(r.stdout + r.stderr).toMatch(/--peer-token-file .* bound to pod podiam-broker-a: .*--pod-name=podiam-broker-c/);
}, 30_000);
