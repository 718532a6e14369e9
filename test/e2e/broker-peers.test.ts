/**
 * The broker component as it ships (--peers on), end to end in the node lab with two nodes: two
 * `podiam broker` replicas, each its own process with its own AWS key and its own address (as two
 * pods have), sharing one cache; one agent per node in broker mode, holding only the node's key.
 *
 * STS is the lab's STS proxy in front of moto, refusing every AssumeRole signed with a node key and
 * recording which key asked and which credentials it issued. So the run shows what --peers is
 * for, on the wire: each pod's role is assumed once for the cluster (not once per replica), by
 * one replica or the other (each owns a share), and an agent asking the replica that does not own
 * a pod gets the same credentials, fetched from the owner, not from STS. Needs root.
 */
import path from 'node:path';
import { BROKER_KEYS, NODE_KEYS, brokerAgentEnv, brokerEnv, brokerTls } from '../support/lab-broker.js';
import type { LabProcess } from '../support/lab.js';
import { AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, BASE_ROLE_ARN, BROKER_AUDIENCE, Lab, METADATA_IP, sleep } from '../support/lab.js';
import { metricSum } from '../support/metrics-text.js';
import { podiamArgv, shebangEnv } from '../support/podiam-process.js';
import type { StsCall } from '../support/sts-proxy.js';
import { LabKubeletPod } from '../support/lab-kubelet.js';
import { makeServingCertificate } from '../support/webhook.js';

const NODE_A = 'lab-node';
const NODE_B = 'lab-node-b';
const BROKER_SA = 'podiam-broker';
const TLS_NAME = 'podiam-broker.kube-system.svc';
/** The replicas' pod addresses, on the first node's namespace (where the test API server and STS proxy are). */
const REPLICAS = [
  { name: 'podiam-broker-0', ip: '192.0.2.121', metricsPort: 9191 },
  { name: 'podiam-broker-1', ip: '192.0.2.122', metricsPort: 9192 },
];
const PORT = 8443;
const PODS = [
  ...['a1', 'a2', 'a3', 'a4'].map((name) => ({ name, role: `peer-role-${name}` })),
  ...['b1', 'b2', 'b3', 'b4'].map((name) => ({ name, role: `peer-role-${name}`, node: NODE_B })),
];
/** Created through the API once replica 1 is dead (the test plays their kubelet). */
const LATE = [
  ...['a-late-1', 'a-late-2', 'a-late-3'].map((name) => ({ name, role: `peer-role-${name}`, node: NODE_A, fixture: false })),
  ...['b-late-1', 'b-late-2', 'b-late-3'].map((name) => ({ name, role: `peer-role-${name}`, node: NODE_B, fixture: false })),
];

let lab: Lab;
const brokers: LabProcess[] = [];

const roleArn = (role: string): string => `${BASE_ROLE_ARN}${role}`;
const metricsUrl = (i: number): string => `http://${REPLICAS[i]!.ip}:${REPLICAS[i]!.metricsPort}`;
async function metric(i: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricSum((await lab.curl(lab.nodeNs, `${metricsUrl(i)}/metrics`)).body, name, labels);
}
const assumes = (calls: readonly StsCall[]): StsCall[] => calls.filter((c) => c.action === 'AssumeRole' && c.outcome !== 'refused');

beforeAll(async () => {
  lab = await Lab.create({
    nodes: [NODE_A, NODE_B],
    pods: [...PODS, ...LATE],
    agentPods: true,
    serviceAccounts: [{ namespace: AGENT_NAMESPACE, name: BROKER_SA }],
    namespaceLabels: { [AGENT_NAMESPACE]: {} },
    stsProxy: { refuseAccessKeyIds: NODE_KEYS },
  });
  // Each replica has an address of its own (its pod's), on the first node: not one the lab gave a pod.
  for (const r of REPLICAS) expect(lab.pods.filter((p) => p.ip === r.ip)).toEqual([]);
  for (const r of REPLICAS) await lab.exec(lab.nodeNs, ['ip', 'addr', 'add', `${r.ip}/32`, 'dev', 'lo']);
  // A serving certificate for the replicas' addresses and the Service's name, from the lab's broker CA.
  const tls = brokerTls(lab);
  const { certFile, keyFile } = makeServingCertificate(path.dirname(tls.caFile), 'peers', 'podiam-broker', [...REPLICAS.map((r) => `IP:${r.ip}`), `DNS:${TLS_NAME}`]);
  // The replicas' pods, as the Deployment's would be (the brokers' ServiceAccount, ready).
  for (const r of REPLICAS) {
    const created = await lab.kube('POST', `/api/v1/namespaces/${AGENT_NAMESPACE}/pods`, {
      metadata: { name: r.name, namespace: AGENT_NAMESPACE, labels: { 'app.kubernetes.io/name': 'podiam-broker' } },
      spec: { nodeName: NODE_A, serviceAccountName: BROKER_SA, containers: [{ name: 'broker', image: 'podiam' }] },
    });
    expect(created.status).toBe(201);
    // Its status, as its kubelet reports it (the API server takes no status on create).
    const status = { phase: 'Running', podIP: r.ip, podIPs: [{ ip: r.ip }], conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: new Date().toISOString() }] };
    expect((await lab.kube('PATCH', `/api/v1/namespaces/${AGENT_NAMESPACE}/pods/${r.name}/status`, { status }, 'application/merge-patch+json')).status).toBe(200);
  }
  for (const [i, r] of REPLICAS.entries()) {
    const peerToken = await lab.podTokenFile(r.name, { namespace: AGENT_NAMESPACE, serviceAccount: BROKER_SA, audience: BROKER_AUDIENCE, expirationSeconds: 3600 });
    const args = [
      'broker',
      `--host=${r.ip}`,
      `--port=${PORT}`,
      `--metrics-port=${r.metricsPort}`,
      `--tls-cert-file=${certFile}`,
      `--tls-key-file=${keyFile}`,
      `--agent-service-account=${AGENT_NAMESPACE}/${AGENT_SERVICE_ACCOUNT}`,
      `--agent-audience=${BROKER_AUDIENCE}`,
      '--sts-qps=10',
      `--api-server=${lab.kubeUrl}`,
      '--insecure',
      `--base-role-arn=${BASE_ROLE_ARN}`,
      '--log-format=json',
      // The component's --peers flags.
      `--peers=${AGENT_NAMESPACE}/${BROKER_SA}`,
      `--pod-name=${r.name}`,
      `--peer-tls-name=${TLS_NAME}`,
      `--peer-ca-file=${tls.caFile}`,
      `--peer-token-file=${peerToken}`,
    ];
    brokers.push(lab.spawnIn(lab.nodeNs, `peer-broker-${i}`, [process.execPath, ...podiamArgv(args)], { ...brokerEnv(lab, i), ...shebangEnv() }));
  }
  for (const [i, b] of brokers.entries()) {
    const deadline = Date.now() + 30_000;
    while ((await lab.curl(lab.nodeNs, `${metricsUrl(i)}/readyz`).catch(() => undefined))?.status !== 200) {
      if (!b.running || Date.now() > deadline) throw new Error(`broker ${i} not ready:\n${b.output()}`);
      await sleep(200);
    }
  }
  // One agent a node, asking replica 0 first (the DaemonSet's order), then replica 1.
  for (const node of [NODE_A, NODE_B]) {
    const extraArgs = [`--broker=${REPLICAS.map((r) => `https://${r.ip}:${PORT}`).join(',')}`, `--broker-ca-file=${tls.caFile}`, `--broker-token-file=${await lab.agentTokenFile(node)}`, '--broker-timeout=2s', '--log-format=json'];
    await lab.startPodiam({ node, env: brokerAgentEnv(lab), extraArgs });
  }
}, 150_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

test('each pod on both nodes gets its own role, assumed once for the cluster by the replica that owns it; the other replica fetches it from the owner, not from STS', async () => {
  // Every pod prefetched by its owner, and only by it: one AssumeRole a pod.
  const prefetched = async (): Promise<number[]> => Promise.all(REPLICAS.map((_, i) => metric(i, 'podiam_credentials_issued_total', { cause: 'prefetch' })));
  const deadline = Date.now() + 30_000;
  while ((await prefetched()).reduce((a, b) => a + b, 0) < PODS.length) {
    if (Date.now() > deadline) throw new Error(`not every pod was prefetched: ${JSON.stringify(await prefetched())}`);
    await sleep(200);
  }
  await sleep(1_000);
  expect((await prefetched()).every((n) => n > 0)).toBe(true);
  expect(await metric(0, 'podiam_broker_peers')).toBe(1);

  // Each pod asks its node's agent, which asks replica 0: for the pods replica 1 owns, replica 0
  // asks replica 1. Every answer traced to its AssumeRole: the pod's role, a broker's key.
  const ownerOf = new Map<string, number>();
  for (const p of PODS) {
    const r = await lab.curl(lab.pod(p.name).netns, `http://${METADATA_IP}/latest/meta-data/iam/security-credentials/${p.role}`);
    expect({ pod: p.name, status: r.status, body: r.status === 200 ? '' : r.body }).toEqual({ pod: p.name, status: 200, body: '' });
    const key = (JSON.parse(r.body) as { AccessKeyId: string }).AccessKeyId;
    const call = (await lab.stsCalls()).find((c) => c.issuedAccessKeyId === key);
    expect({ pod: p.name, roleArn: call?.roleArn }).toEqual({ pod: p.name, roleArn: roleArn(p.role) });
    const replica = BROKER_KEYS.indexOf(call?.accessKeyId ?? '');
    expect({ pod: p.name, replica: replica >= 0 }).toEqual({ pod: p.name, replica: true });
    ownerOf.set(p.name, replica);
  }
  const calls = await lab.stsCalls();
  // One AssumeRole a pod for the cluster (two replicas each prefetching every pod made two).
  expect(assumes(calls).map((c) => c.roleArn).sort()).toEqual(PODS.map((p) => roleArn(p.role)).sort());
  // No AssumeRole passed with a node's key: the agents never call STS.
  expect(calls.filter((c) => c.action === 'AssumeRole' && NODE_KEYS.includes(c.accessKeyId ?? '') && c.outcome !== 'refused')).toEqual([]);
  // Both replicas own a share, and replica 0 fetched replica 1's share from it (one forward each).
  const ofReplica1 = [...ownerOf.values()].filter((r) => r === 1).length;
  expect(ofReplica1).toBeGreaterThan(0);
  expect(ofReplica1).toBeLessThan(PODS.length);
  expect(await metric(0, 'podiam_broker_peer_fetches_total', { outcome: 'ok' })).toBe(ofReplica1);
  expect(await metric(0, 'podiam_broker_peer_fetches_total', { outcome: 'unreachable' })).toBe(0);
}, 90_000);

test('the owner killed without a word: the other replica calls STS itself for the pods it owned, once each, and every pod is answered', async () => {
  // Replica 1 dies; its pod still looks Running and Ready (a node lost, before the node controller knows).
  await brokers[1]!.stop('SIGKILL');
  const before = assumes(await lab.stsCalls()).length;
  // Pods already answered: from their agent's memory, no STS call.
  for (const p of PODS) {
    const r = await lab.curl(lab.pod(p.name).netns, `http://${METADATA_IP}/latest/meta-data/iam/security-credentials/${p.role}`);
    expect({ pod: p.name, status: r.status }).toEqual({ pod: p.name, status: 200 });
  }
  expect(assumes(await lab.stsCalls()).length).toBe(before);
  // New pods on both nodes: replica 0 answers each, the ones replica 1 would own after a failed forward.
  for (const p of LATE) {
    const created = await lab.kube('POST', '/api/v1/namespaces/default/pods', { metadata: { name: p.name, namespace: 'default', annotations: { 'iam.amazonaws.com/role': p.role } }, spec: { nodeName: p.node, containers: [{ name: 'app', image: 'app' }] } });
    expect(created.status).toBe(201);
    await LabKubeletPod.start(lab, created.body);
  }
  for (const p of LATE) {
    const r = await lab.curl(lab.pod(p.name).netns, `http://${METADATA_IP}/latest/meta-data/iam/security-credentials/${p.role}`, { timeoutS: 10 });
    expect({ pod: p.name, status: r.status }).toEqual({ pod: p.name, status: 200 });
  }
  const late = assumes(await lab.stsCalls()).slice(before);
  // Once each, all by replica 0 (whose key signed them).
  expect(late.map((c) => c.roleArn).sort()).toEqual(LATE.map((p) => roleArn(p.role)).sort());
  expect(late.every((c) => c.accessKeyId === BROKER_KEYS[0])).toBe(true);
  // Those replica 1 owns were asked of it first, found unreachable, then assumed here (and replica 1 set aside for 10 s).
  expect(await metric(0, 'podiam_broker_peer_fetches_total', { outcome: 'unreachable' })).toBeGreaterThan(0);
}, 90_000);
