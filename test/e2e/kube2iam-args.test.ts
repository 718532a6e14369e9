/**
 * kube2iam drop-in on a simulated node (test/support/lab.ts): podiam started with a kube2iam
 * DaemonSet's args list intercepts and serves; with the app port held by another process (as
 * kube2iam's terminating pod holds it during a migration) podiam says who, waits, and takes over
 * as soon as the port is free.
 *
 * Needs root (it fails, with the reason, when not root).
 */
import type { LabProcess } from '../support/lab.js';
import { ACCOUNT, APP_PORT, Lab, METADATA_IP, NODE_IP, NODE_NAME, labPrerequisites } from '../support/lab.js';
import { podiamArgv } from '../support/podiam-process.js';

const CREDS = `http://${METADATA_IP}/latest/meta-data/iam/security-credentials/`;

/** A kube2iam DaemonSet's args (its README's Calico example), $(HOST_IP) expanded by the kubelet. */
const KUBE2IAM_ARGS = ['--auto-discover-base-arn', '--iptables=true', `--host-ip=${NODE_IP}`, '--host-interface=cali+', '--verbose', '--debug'];

let lab: Lab;

beforeAll(async () => {
  const problem = labPrerequisites();
  if (problem) throw new Error(problem);
  lab = await Lab.create({ pods: [{ name: 'k2i-app', role: 'k2i-role' }, { name: 'k2i-plain' }] });
}, 60_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

/** podiam with exactly `args` (plus what the node needs to reach the lab's API server). */
function startPodiam(args: readonly string[]): LabProcess {
  const argv = [process.execPath, ...podiamArgv([...args, `--node=${NODE_NAME}`, `--api-server=${lab.kubeUrl}`, '--insecure', '--log-format=json'])];
  return lab.spawnIn(lab.nodeNs, 'podiam', argv, lab.podiamEnv());
}

async function readyz(): Promise<number> {
  return (await lab.curl(lab.nodeNs, `http://${NODE_IP}:${APP_PORT}/readyz`, { timeoutS: 2 })).status;
}

async function until(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} not within ${timeoutMs} ms`);
}

test('a kube2iam args list (--auto-discover-base-arn --iptables=true --host-ip --host-interface=cali+ --verbose --debug) starts and serves', async () => {
  const podiam = startPodiam(KUBE2IAM_ARGS);
  try {
    await until(async () => (await readyz()) === 200, 30_000, 'podiam ready');
    expect(podiam.output()).toContain(`"baseRoleArn":"arn:aws:iam::${ACCOUNT}:role/"`);
    const app = lab.pod('k2i-app');
    // Through the real DNAT rule: the pod gets its own role, from the discovered base ARN.
    const listing = await lab.curl(app.netns, CREDS);
    expect(listing).toEqual({ status: 200, body: 'k2i-role' });
    const creds = await lab.curl(app.netns, CREDS + 'k2i-role');
    expect(creds.status).toBe(200);
    const parsed = JSON.parse(creds.body) as { AccessKeyId: string; SecretAccessKey: string; Token: string };
    expect(await lab.callerArn(parsed)).toContain(`:assumed-role/k2i-role/`);
    // --debug: /debug/store from the node; --verbose: debug lines.
    expect((await lab.curl(lab.nodeNs, `http://${NODE_IP}:${APP_PORT}/debug/store`)).status).toBe(200);
    expect(podiam.output()).toContain('"level":"debug"');
    expect((await lab.curl(lab.pod('k2i-plain').netns, CREDS)).status).toBe(404);
  } finally {
    expect((await podiam.stop('SIGTERM', 10_000)).code).toBe(0);
  }
}, 90_000);

test('with the port held by another process podiam says who, waits, and takes over when it is freed', async () => {
  // Stands in for kube2iam: listening on every address of the node, port 8181, answering nothing.
  const holder = lab.spawnIn(lab.nodeNs, 'kube2iam-stand-in', [process.execPath, '-e', `require('net').createServer((s) => s.destroy()).listen(${APP_PORT}, '0.0.0.0', () => console.log('listening'))`], { PATH: process.env.PATH });
  await holder.waitFor(/listening/);
  const podiam = startPodiam(KUBE2IAM_ARGS);
  try {
    const line = await podiam.waitFor(/\{[^\n]*app port is taken[^\n]*\}/, 30_000);
    const warning = JSON.parse(line[0]) as { heldBy: string; port: number };
    expect(warning.port).toBe(APP_PORT);
    expect(warning.heldBy).toContain(`pid ${holder.pid}`);
    expect(warning.heldBy).toContain('node');
    // Waiting, not crash-looping.
    await new Promise((r) => setTimeout(r, 1500));
    expect(podiam.running).toBe(true);

    await holder.stop('SIGTERM');
    await until(async () => (await readyz()) === 200, 30_000, 'podiam ready after the port was freed');
    expect(podiam.output()).toContain('app port is free now');
    const app = lab.pod('k2i-app');
    expect(await lab.curl(app.netns, CREDS)).toEqual({ status: 200, body: 'k2i-role' });
  } finally {
    await holder.stop('SIGKILL');
    expect((await podiam.stop('SIGTERM', 10_000)).code).toBe(0);
  }
}, 90_000);
