/**
 * Broker mode end to end, in the node lab with two nodes (test/support/lab.ts, lab-broker.ts):
 * two `podiam broker` replicas as their own processes with their own AWS key, one agent per node
 * in broker mode (holding only the node's key, which STS refuses), real AWS clients in pods.
 *
 * STS is the lab's STS proxy in front of moto, refusing every AssumeRole signed with a node key
 * (NODE_KEYS) and recording the access key id of every credential STS issued, so every answer a
 * pod gets can be traced to the AssumeRole it came from: which role, which session, whose key.
 *
 * Each broker replica signs with a key of its own (as IRSA gives each replica its own session), so
 * the STS proxy's records also say which replica answered a pod.
 *
 * The load of first-time pods (test/support/pod-load-cli.ts, PODIAM_BROKER_LOAD_RPS a second,
 * default 200, each pod created then asking from its own address) asks STS for that many new
 * sessions a second, which moto
 * cannot take (about 35 AssumeRole a second on the 2-CPU reference machine): the proxy answers
 * those roles (load-role-*) itself, in STS's format, and records every credential it issued, so
 * the same tracing holds. Every other role goes to moto.
 *
 * The broker outage lasts PODIAM_BROKER_OUTAGE_S seconds (default 60, the figure). Needs root.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { LabBroker } from '../support/lab-broker.js';
import { BROKER_KEYS, NODE_KEYS, brokerAgentArgs, brokerAgentEnv, brokerTls, startBroker } from '../support/lab-broker.js';
import { LabKubeletPod } from '../support/lab-kubelet.js';
import type { LabPodiam } from '../support/lab.js';
import { APP_PORT, AWS_CLI, BASE_ROLE_ARN, Lab, METADATA_IP, pythonWithBotocore, sleep } from '../support/lab.js';
import { NODE_ACCESS_KEY_ID } from '../support/imds-server.js';
import { ROOT } from '../support/podiam-process.js';
import type { StsCall } from '../support/sts-proxy.js';
import type { LoadResult } from '../support/pod-load-cli.js';

const NODE_A = 'lab-node';
const NODE_B = 'lab-node-b';
const TOKEN_URI = 'http://169.254.170.23/v1/credentials';
const BROKER_TIMEOUT_MS = 2000;
const OUTAGE_MS = Number(process.env.PODIAM_BROKER_OUTAGE_S ?? 60) * 1000;
const LOAD_RATE = Number(process.env.PODIAM_BROKER_LOAD_RPS ?? 200);

let lab: Lab;
const brokers: LabBroker[] = [];
const agents = new Map<string, LabPodiam>();

type Creds = { AccessKeyId: string; SecretAccessKey: string; Token: string };

async function startAgent(node: string): Promise<LabPodiam> {
  const extraArgs = [...(await brokerAgentArgs(lab, node, brokers, { timeout: `${BROKER_TIMEOUT_MS / 1000}s` })), '--log-format=json', '--token-identity', '--token-addr=169.254.170.23:80', '--token-interface=lo'];
  const agent = await lab.startPodiam({ node, env: brokerAgentEnv(lab), extraArgs });
  agents.set(node, agent);
  return agent;
}

async function imdsCreds(pod: string, role: string): Promise<{ status: number; body: string; ms: number }> {
  const t0 = Date.now();
  const r = await lab.curl(lab.pod(pod).netns, `http://${METADATA_IP}/latest/meta-data/iam/security-credentials/${role}`);
  return { ...r, ms: Date.now() - t0 };
}

/** The AssumeRole call (seen by the STS proxy) whose credentials carry this access key id. */
function issuing(calls: readonly StsCall[], accessKeyId: string): StsCall | undefined {
  return calls.find((c) => c.issuedAccessKeyId === accessKeyId);
}

const roleArn = (role: string): string => `${BASE_ROLE_ARN}${role}`;
const nodeKeyCalls = (calls: readonly StsCall[]): StsCall[] => calls.filter((c) => c.accessKeyId !== undefined && NODE_KEYS.includes(c.accessKeyId));

beforeAll(async () => {
  lab = await Lab.create({
    nodes: [NODE_A, NODE_B],
    pods: [
      { name: 'a1', role: 'role-a1' },
      { name: 'a2', role: 'role-a2' },
      { name: 'b1', role: 'role-b1', node: NODE_B },
      { name: 'b2', role: 'role-b2', node: NODE_B },
      // Created through the API while the brokers are down (the test plays their kubelet).
      { name: 'a-new', fixture: false },
      { name: 'b-new', fixture: false, node: NODE_B },
    ],
    hostNetworkPods: [{ name: 'host-b', role: 'role-host-b', namespace: 'kube-system', node: NODE_B }],
    agentPods: true,
    stsProxy: { refuseAccessKeyIds: NODE_KEYS, answerRoles: ':role/load-role-' },
  });
  brokers.push(await startBroker(lab, { replica: 0, extraArgs: ['--log-format=json'] }), await startBroker(lab, { replica: 1, extraArgs: ['--log-format=json'] }));
  await Promise.all([startAgent(NODE_A), startAgent(NODE_B)]);
}, 120_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

test('botocore, the SDK for JavaScript v3 and curl in pods on both nodes get their own role, assumed with the broker’s key only', async () => {
  const botocoreA = JSON.parse((await lab.botocoreWhoami(lab.pod('a1').netns)).stdout.trim()) as { arn?: string; method?: string };
  const botocoreB = JSON.parse((await lab.botocoreWhoami(lab.pod('b1').netns)).stdout.trim()) as { arn?: string; method?: string };
  expect(botocoreA).toMatchObject({ arn: expect.stringMatching(/:assumed-role\/role-a1\//), method: 'iam-role' });
  expect(botocoreB).toMatchObject({ arn: expect.stringMatching(/:assumed-role\/role-b1\//), method: 'iam-role' });
  for (const pod of ['a2', 'b2']) {
    const sdk = JSON.parse((await lab.sdkWhoami(lab.pod(pod).netns)).stdout.trim().split('\n').pop()!) as { arn?: string };
    expect([pod, sdk.arn]).toEqual([pod, expect.stringMatching(new RegExp(`:assumed-role/role-${pod}/`))]);
  }
  const served: Array<[string, Creds]> = [];
  for (const pod of ['a1', 'b2']) {
    const r = await imdsCreds(pod, `role-${pod}`);
    expect([pod, r.status]).toEqual([pod, 200]);
    const creds = JSON.parse(r.body) as Creds;
    expect(await lab.callerArn(creds)).toMatch(new RegExp(`:assumed-role/role-${pod}/`));
    served.push([pod, creds]);
  }
  // Traced back: each credential came from an AssumeRole of that pod's role, signed with the broker's key.
  const calls = await lab.stsCalls();
  for (const [pod, creds] of served) {
    const call = issuing(calls, creds.AccessKeyId);
    expect(call).toMatchObject({ action: 'AssumeRole', roleArn: roleArn(`role-${pod}`), outcome: 'forwarded' });
    expect(BROKER_KEYS).toContain(call!.accessKeyId);
  }
  const assumes = calls.filter((c) => c.action === 'AssumeRole');
  expect(assumes.length).toBeGreaterThanOrEqual(4);
  expect(assumes.filter((c) => !BROKER_KEYS.includes(c.accessKeyId ?? ''))).toEqual([]);
  // The agents never called STS (they hold the node's key, which would have been refused and counted).
  for (const agent of agents.values()) expect(await agent.metric('podiam_sts_assume_role_total')).toBe(0);
}, 120_000);

test('the node namespaces’ own role cannot assume any pod role: the STS proxy refuses it, counted', async () => {
  for (const [node, role] of [[NODE_A, 'role-b1'], [NODE_B, 'role-a1']] as const) {
    // What a hostNetwork pod or root on the node has: the node role, from the metadata service.
    const r = await lab.exec(lab.node(node).netns, [AWS_CLI, 'sts', 'assume-role', '--role-arn', roleArn(role), '--role-session-name', 'stolen', '--endpoint-url', lab.stsUrl, '--region', 'us-east-1'], { env: lab.cleanClientEnv(), timeoutMs: 30_000 });
    expect([node, r.code === 0, r.stderr]).toEqual([node, false, expect.stringMatching(/AccessDenied/)]);
  }
  const refused = nodeKeyCalls(await lab.stsCalls());
  expect(refused).toEqual([
    expect.objectContaining({ roleArn: roleArn('role-b1'), accessKeyId: NODE_ACCESS_KEY_ID, outcome: 'refused', status: 403 }),
    expect.objectContaining({ roleArn: roleArn('role-a1'), accessKeyId: NODE_ACCESS_KEY_ID, outcome: 'refused', status: 403 }),
  ]);
}, 60_000);

test('agent A’s token asking for a pod of node B: 403 PodNotOnAgentNode, logged, counted, no STS call; agent B’s token gets it', async () => {
  const b2 = await lab.kube('GET', '/api/v1/namespaces/default/pods/b2');
  const body = JSON.stringify({ namespace: 'default', name: 'b2', uid: b2.body.metadata.uid, proof: { kind: 'ip' } });
  const ask = async (node: string): Promise<{ status: number; body: string }> => {
    const token = readFileSync(await lab.agentTokenFile(node), 'utf8');
    const r = await lab.exec(lab.node(node).netns, ['curl', '-sS', '--max-time', '10', '--cacert', brokerTls(lab).caFile, '-o', '-', '-w', '\n%{http_code}', '-X', 'POST', '-H', `Authorization: Bearer ${token}`, '-H', 'Content-Type: application/json', '--data-binary', body, `${brokers[0]!.url}/v1/credentials`]);
    const cut = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(cut + 1)), body: r.stdout.slice(0, cut) };
  };
  const refusals0 = await brokers[0]!.metric('podiam_broker_refusals_total', { code: 'PodNotOnAgentNode' });
  const calls0 = (await lab.stsCalls()).length;
  const denied = await ask(NODE_A);
  expect(denied.status).toBe(403);
  expect(JSON.parse(denied.body)).toMatchObject({ code: 'PodNotOnAgentNode' });
  expect(denied.body).not.toMatch(/AccessKeyId|SecretAccessKey/);
  expect(await brokers[0]!.metric('podiam_broker_refusals_total', { code: 'PodNotOnAgentNode' })).toBe(refusals0 + 1);
  expect(brokers[0]!.output()).toMatch(/PodNotOnAgentNode/);
  expect((await lab.stsCalls()).length).toBe(calls0);
  // The same request with the right node's token: the refusal was the node, nothing else.
  const allowed = await ask(NODE_B);
  expect(allowed.status).toBe(200);
  expect(JSON.parse(allowed.body)).toMatchObject({ roleArn: roleArn('role-b2') });
}, 60_000);

test('the token path works through the broker: a hostNetwork client and a pod on node B; a token of node A’s pod is refused there', async () => {
  const py = pythonWithBotocore()!;
  const tokenEnv = (file: string): NodeJS.ProcessEnv => ({ ...lab.cleanClientEnv(), AWS_CONTAINER_CREDENTIALS_FULL_URI: TOKEN_URI, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: file });
  const whoami = async (ns: string, file: string): Promise<{ arn?: string; method?: string; error?: string }> => {
    const r = await lab.exec(ns, [py, path.join(ROOT, 'scripts/lab/whoami-botocore.py'), lab.motoUrl], { env: tokenEnv(file), timeoutMs: 30_000 });
    return r.stdout.trim() === '' ? { error: r.stderr.trim().split('\n').pop() } : (JSON.parse(r.stdout.trim().split('\n').pop()!) as { arn?: string });
  };
  const hostToken = await lab.podTokenFile('host-b', { namespace: 'kube-system' });
  expect(await whoami(lab.node(NODE_B).netns, hostToken)).toMatchObject({ arn: expect.stringMatching(/:assumed-role\/role-host-b\//), method: 'container-role' });
  expect(await whoami(lab.pod('b1').netns, await lab.podTokenFile('b1'))).toMatchObject({ arn: expect.stringMatching(/:assumed-role\/role-b1\//) });
  // node A's pod's token, presented on node B: not this node's pod.
  const token = readFileSync(await lab.podTokenFile('a2'), 'utf8');
  const r = await lab.curl(lab.node(NODE_B).netns, TOKEN_URI, { headers: { Authorization: token } });
  expect(r.status).toBe(403);
  expect(r.body).not.toMatch(/SecretAccessKey/);
  const calls = await lab.stsCalls();
  expect(calls.filter((c) => c.action === 'AssumeRole' && c.outcome !== 'refused' && !BROKER_KEYS.includes(c.accessKeyId ?? ''))).toEqual([]);
}, 90_000);

test('restarting every agent costs no AssumeRole call: the broker’s cache answers', async () => {
  const before = (await lab.stsCalls()).filter((c) => c.action === 'AssumeRole').length;
  for (const node of [NODE_A, NODE_B]) await agents.get(node)!.stop();
  await Promise.all([startAgent(NODE_A), startAgent(NODE_B)]);
  for (const pod of ['a1', 'a2', 'b1', 'b2']) {
    const r = await imdsCreds(pod, `role-${pod}`);
    expect([pod, r.status]).toEqual([pod, 200]);
  }
  await sleep(1000); // any prefetch the restart started has gone out by now
  expect((await lab.stsCalls()).filter((c) => c.action === 'AssumeRole').length).toBe(before);
}, 90_000);

test(`one broker replica killed under ${LOAD_RATE} req/s of first-time pods: every pod its own role from the broker’s key, none the node’s, at most the in-flight ones asked again`, async () => {
  const out = path.join(lab.dir, 'load.json');
  const seconds = 10;
  const nodeKeyBefore = nodeKeyCalls(await lab.stsCalls()).length;
  // The pods' addresses (10.99.x.y) are local to node A's namespace, so the load generator there
  // can ask from each pod's own address, as the pod would through the DNAT.
  expect((await lab.exec(lab.nodeNs, ['ip', 'route', 'add', 'local', '10.99.0.0/16', 'dev', 'lo'])).code).toBe(0);
  const spec = { mode: 'imds', kubeUrl: lab.kubeUrl, imdsUrl: `http://${lab.node(NODE_A).ip}:${APP_PORT}`, node: NODE_A, namespace: 'default', prefix: 'load', count: LOAD_RATE * seconds, ratePerSec: LOAD_RATE, out };
  const load = lab.exec(lab.nodeNs, [process.execPath, path.join(ROOT, 'dist/test/support/pod-load-cli.js'), JSON.stringify(spec)], { timeoutMs: 120_000 });
  await sleep((seconds * 1000) / 2);
  const killedAt = Date.now();
  await brokers[0]!.stop('SIGKILL');
  const done = await load;
  expect(done.stderr).toBe('');
  const results = JSON.parse(readFileSync(out, 'utf8')) as LoadResult[];
  expect(results).toHaveLength(spec.count);
  const calls = await lab.stsCalls();
  const statuses: Record<number, number> = {};
  for (const r of results) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
  const span = Math.max(...results.map((r) => r.createdMs)) - Math.min(...results.map((r) => r.createdMs));
  const errors: Record<string, number> = {};
  for (const r of results) if (r.error !== undefined) errors[r.error.slice(0, 90)] = (errors[r.error.slice(0, 90)] ?? 0) + 1;
  if (Object.keys(errors).length > 0) console.log(`errors: ${JSON.stringify(errors, null, 1)}`);
  console.log(`broker kill under load: ${results.length} first-time pods over ${span} ms (${Math.round((results.length / span) * 1000)}/s), statuses ${JSON.stringify(statuses)}, p99 ${[...results].map((r) => r.answeredMs - r.askedMs).sort((a, b) => a - b)[Math.floor(results.length * 0.99)]} ms`);

  // 0 wrong answers: every 200 carries credentials STS issued for that pod's role and session, to a broker's key.
  const ok = results.filter((r) => r.status === 200);
  const wrong = ok.filter((r) => {
    const call = r.accessKeyId === undefined ? undefined : issuing(calls, r.accessKeyId);
    return call === undefined || call.roleArn !== roleArn(r.role) || !BROKER_KEYS.includes(call.accessKeyId ?? '') || call.outcome !== 'answered' || !(call.sessionName ?? '').includes(r.name);
  });
  expect(wrong.slice(0, 5)).toEqual([]);
  // 0 node-role answers, and no AssumeRole with the node's key meanwhile.
  expect(results.filter((r) => r.accessKeyId === NODE_ACCESS_KEY_ID)).toEqual([]);
  expect(nodeKeyCalls(calls)).toHaveLength(nodeKeyBefore);
  // Which replica answered: each signs with its own key. Agents ask replica 0 first, so a pod
  // answered by replica 1 although created before the kill was retried there: only pods in flight
  // at the kill (created before, answered after) may be, and only they may get a 503 (which the
  // SDKs retry). Both replicas prefetch every pod with a role, so each pod is assumed once a replica.
  const replicaOf = (r: LoadResult): number => BROKER_KEYS.indexOf(issuing(calls, r.accessKeyId ?? '')?.accessKeyId ?? '');
  const inFlight = new Set(results.filter((r) => r.createdMs <= killedAt && r.answeredMs >= killedAt));
  const retried = results.filter((r) => r.status !== 200 || (r.createdMs <= killedAt && replicaOf(r) === 1));
  const notInFlight = results.filter((r) => !inFlight.has(r));
  console.log(`  in flight when the replica was killed: ${inFlight.size}; retried: ${retried.length} (${retried.filter((r) => r.status !== 200).length} answered 503); answered by replica 0/1: ${ok.filter((r) => replicaOf(r) === 0).length}/${ok.filter((r) => replicaOf(r) === 1).length}`);
  expect(retried.filter((r) => !inFlight.has(r)).map((r) => ({ name: r.name, status: r.status, error: r.error, createdAfterKillMs: r.createdMs - killedAt }))).toEqual([]);
  expect(notInFlight.filter((r) => r.answeredMs < killedAt && replicaOf(r) !== 0).map((r) => r.name)).toEqual([]);
  expect(notInFlight.filter((r) => r.createdMs > killedAt && replicaOf(r) !== 1).map((r) => r.name)).toEqual([]);
  const perPod = new Map<string, number>();
  for (const c of calls) if (c.action === 'AssumeRole' && c.outcome === 'answered' && c.roleArn !== undefined) perPod.set(c.roleArn, (perPod.get(c.roleArn) ?? 0) + 1);
  expect(results.filter((r) => (perPod.get(roleArn(r.role)) ?? 0) > 2).map((r) => r.name)).toEqual([]);

  // The replica comes back for what follows.
  brokers[0] = await startBroker(lab, { replica: 0, extraArgs: ['--log-format=json'] });
}, 180_000);

test(`every broker down for ${OUTAGE_MS / 1000} s: cached pods keep getting 200, new pods 503 within --broker-timeout, and all recovers by itself`, async () => {
  for (const [pod, role] of [['a1', 'role-a1'], ['b1', 'role-b1']]) expect((await imdsCreds(pod!, role!)).status).toBe(200);
  for (const b of brokers) await b.stop('SIGKILL');
  const downAt = Date.now();

  const create = async (name: string, node: string): Promise<void> => {
    const created = await lab.kube('POST', '/api/v1/namespaces/default/pods', { metadata: { name, namespace: 'default', annotations: { 'iam.amazonaws.com/role': `role-${name}` } }, spec: { nodeName: node, containers: [{ name: 'app', image: 'app' }] } });
    expect(created.status).toBe(201);
    await LabKubeletPod.start(lab, created.body);
  };
  const newPods: Array<{ pod: string; status: number; ms: number; body: string }> = [];
  let cachedAnswers = 0;
  while (Date.now() - downAt < OUTAGE_MS) {
    for (const [pod, role] of [['a1', 'role-a1'], ['b1', 'role-b1']] as const) {
      const r = await imdsCreds(pod, role);
      expect([pod, r.status, Date.now() - downAt < OUTAGE_MS + 5000]).toEqual([pod, 200, true]);
      cachedAnswers++;
    }
    const elapsed = Date.now() - downAt;
    if (newPods.length === 0 && elapsed > 3000) {
      await create('a-new', NODE_A);
      await sleep(500); // the agent's informer has it
      newPods.push({ pod: 'a-new', ...(await imdsCreds('a-new', 'role-a-new')) });
    }
    if (newPods.length === 1 && elapsed > OUTAGE_MS / 2) {
      await create('b-new', NODE_B);
      await sleep(500);
      newPods.push({ pod: 'b-new', ...(await imdsCreds('b-new', 'role-b-new')) });
    }
    await sleep(2000);
  }
  expect(cachedAnswers).toBeGreaterThanOrEqual(OUTAGE_MS / 3000);
  expect(newPods.map((p) => [p.pod, p.status, /BrokerUnavailable/.test(p.body)])).toEqual([
    ['a-new', 503, true],
    ['b-new', 503, true],
  ]);
  for (const p of newPods) expect(p.ms).toBeLessThan(BROKER_TIMEOUT_MS + 1500);
  for (const agent of agents.values()) expect(await agent.metric('podiam_broker_up')).toBe(0);

  // The brokers return; nothing else is touched.
  brokers[0] = await startBroker(lab, { replica: 0, extraArgs: ['--log-format=json'] });
  brokers[1] = await startBroker(lab, { replica: 1, extraArgs: ['--log-format=json'] });
  for (const [pod, node] of [['a-new', NODE_A], ['b-new', NODE_B]] as const) {
    const deadline = Date.now() + 40_000;
    let r = await imdsCreds(pod, `role-${pod}`);
    while (r.status !== 200 && Date.now() < deadline) {
      await sleep(500);
      r = await imdsCreds(pod, `role-${pod}`);
    }
    expect([pod, r.status]).toEqual([pod, 200]);
    expect(await lab.callerArn(JSON.parse(r.body) as Creds)).toMatch(new RegExp(`:assumed-role/role-${pod}/`));
    expect(await agents.get(node)!.metric('podiam_broker_up')).toBe(1);
  }
}, OUTAGE_MS + 120_000);
