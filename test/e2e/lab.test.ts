/**
 * The lab cleans up after itself: destroy() leaves no namespace and no process behind, and a lab
 * whose process died without cleaning up is removed by the next one, while a live lab of
 * another process is left alone.
 *
 * Needs root (it fails, with the reason, when not root).
 */
import { spawnSync } from 'node:child_process';
import { AWS_CLI, BASE_ROLE_ARN, LAB_PREFIX, Lab, METADATA_IP, labNamespaces, labPrerequisites, removeLeftovers } from '../support/lab.js';
import { NODE_ACCESS_KEY_ID } from '../support/imds-server.js';
import { NODE_KEYS } from '../support/lab-broker.js';

beforeAll(() => {
  const problem = labPrerequisites();
  if (problem) throw new Error(problem);
});

function ip(...args: string[]): string {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** A pid that is certainly not running any more. */
function deadPid(): number {
  const r = spawnSync('sh', ['-c', 'echo $$']);
  return Number(r.stdout.toString().trim());
}

test('destroy() removes every namespace and process of the lab', async () => {
  const lab = await Lab.create({ pods: [{ name: 'one', role: 'r' }] });
  const namespaces = lab.namespaces;
  expect(namespaces).toHaveLength(4); // node, the pod, the outsider, the metadata service
  for (const ns of namespaces) expect(labNamespaces()).toContain(ns);
  const pids = [lab.nodeNs, lab.imdsNs].flatMap((ns) => ip('netns', 'pids', ns).trim().split('\n').filter(Boolean).map(Number));
  expect(pids.length).toBeGreaterThanOrEqual(3); // fake IMDS (in its namespace), Kubernetes test API, moto
  await lab.destroy();
  for (const ns of namespaces) expect(labNamespaces()).not.toContain(ns);
  for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
}, 60_000);

test("leftovers of a dead lab process are removed; a live process's lab is not", () => {
  const dead = `${LAB_PREFIX}-${deadPid()}-zz1-node`;
  // A "live" lab: pid 1 always exists and is never this process.
  const live = `${LAB_PREFIX}-1-zz1-node`;
  ip('netns', 'add', dead);
  ip('netns', 'add', live);
  try {
    const removed = removeLeftovers();
    expect(removed).toContain(dead);
    expect(removed).not.toContain(live);
    expect(labNamespaces()).not.toContain(dead);
    expect(labNamespaces()).toContain(live);
  } finally {
    spawnSync('ip', ['netns', 'del', dead]);
    spawnSync('ip', ['netns', 'del', live]);
  }
});

test('two nodes: each node’s pods are its own agent’s; the STS proxy refuses AssumeRole signed with a node key, and counts it', async () => {
  const lab = await Lab.create({
    nodes: ['lab-node', 'lab-node-b'],
    pods: [
      { name: 'pa', role: 'role-pa' },
      { name: 'pb', role: 'role-pb', node: 'lab-node-b' },
    ],
    agentPods: true,
    stsProxy: { refuseAccessKeyIds: NODE_KEYS },
  });
  try {
    expect(lab.namespaces).toHaveLength(6); // two nodes, two pods, the outsider, the metadata service
    const [a, b] = lab.nodes;
    expect([a!.name, b!.name]).toEqual(['lab-node', 'lab-node-b']);
    // The fixture puts each pod, and each node's agent pod, on its node.
    const onB = await lab.kube('GET', '/api/v1/pods?fieldSelector=spec.nodeName%3Dlab-node-b');
    expect(onB.body.items.map((p: { metadata: { namespace: string; name: string } }) => `${p.metadata.namespace}/${p.metadata.name}`).sort()).toEqual(['default/pb', 'kube-system/podiam-lab-node-b']);

    // Standalone agents (as today: STS with the node's own key, straight at moto), one per node.
    const env = { ...lab.podiamEnv(), AWS_ENDPOINT_URL_STS: lab.motoUrl };
    const agentA = await lab.startPodiam({ env });
    const agentB = await lab.startPodiam({ env, node: 'lab-node-b' });
    for (const pod of ['pa', 'pb']) {
      const creds = await lab.curl(lab.pod(pod).netns, `http://${METADATA_IP}/latest/meta-data/iam/security-credentials/role-${pod}`);
      expect([pod, creds.status]).toEqual([pod, 200]);
      expect(await lab.callerArn(JSON.parse(creds.body) as { AccessKeyId: string; SecretAccessKey: string; Token: string })).toMatch(new RegExp(`:assumed-role/role-${pod}/`));
    }
    // Each agent assumed its own node's pod role only (once: the prefetch and the request share it).
    expect(await agentA.metric('podiam_sts_assume_role_total', { outcome: 'success' })).toBe(1);
    expect(await agentB.metric('podiam_sts_assume_role_total', { outcome: 'success' })).toBe(1);

    // A hostNetwork process on node B takes the node role from the metadata service (routed through
    // the first node, as on EC2) and tries a pod role at the proxy: refused, and counted.
    const cli = await lab.exec(b!.netns, [AWS_CLI, 'sts', 'assume-role', '--role-arn', `${BASE_ROLE_ARN}role-pb`, '--role-session-name', 'stolen', '--endpoint-url', lab.stsUrl, '--region', 'us-east-1'], { env: lab.cleanClientEnv(), timeoutMs: 30_000 });
    expect(cli.code).not.toBe(0);
    expect(cli.stderr).toMatch(/AccessDenied/);
    const calls = await lab.stsCalls();
    expect(calls).toEqual([expect.objectContaining({ action: 'AssumeRole', roleArn: `${BASE_ROLE_ARN}role-pb`, accessKeyId: NODE_ACCESS_KEY_ID, outcome: 'refused', status: 403 })]);
  } finally {
    await lab.destroy();
  }
  for (const ns of lab.namespaces) expect(labNamespaces()).not.toContain(ns);
}, 120_000);
