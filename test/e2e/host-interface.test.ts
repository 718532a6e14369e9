/**
 * The --host-interface check, for real, in the node lab: the lab's pods sit behind cali-* veths
 * (routes in the node namespace), as on a Calico node. With --host-interface=docker0 podiam
 * intercepts none of them: it says so in /readyz, in its metrics and with a warning Event on the
 * node. With cali+ (the right pattern) it reports every pod IP as matching and records no Event.
 *
 * Needs root (it fails, with the reason, when not root).
 */
import type { LabPodiam } from '../support/lab.js';
import { Lab, NODE_NAME, sleep } from '../support/lab.js';

let lab: Lab;
let running: LabPodiam | undefined;

beforeAll(async () => {
  lab = await Lab.create({ pods: [{ name: 'app', role: 'app-role' }, { name: 'web' }] });
}, 60_000);

afterEach(async () => {
  await running?.stop('SIGTERM', 5_000);
  running = undefined;
  await lab.runCleanup();
}, 30_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

async function readyz(p: LabPodiam): Promise<{ status: number; body: Record<string, any> }> {
  const r = await p.get('/readyz');
  return { status: r.status, body: JSON.parse(r.body) as Record<string, any> };
}

async function nodeEvents(): Promise<Array<Record<string, any>>> {
  const r = await lab.kube('GET', '/api/v1/namespaces/default/events');
  expect(r.status).toBe(200);
  return (r.body.items as Array<Record<string, any>>).filter((e) => e.involvedObject?.kind === 'Node');
}

async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let v = await read();
  while (!ok(v) && Date.now() < deadline) {
    await sleep(100);
    v = await read();
  }
  return v;
}

test('--host-interface matching no pod (docker0 on a cali* node): /readyz detail, the metrics, one warning Event on the node; still ready', async () => {
  // 500 ms rounds: the check's own period is ten of them (5 s).
  running = await lab.startPodiam({ extraArgs: ['--log-format=json', '--host-interface=docker0', '--iptables-reconcile-interval=500ms'], wait: 'none' });
  await running.waitReady(40_000);
  const r = await until(() => readyz(running!), (x) => x.body.hostInterface !== undefined);
  expect(r.status).toBe(200);
  // Two pods, an IPv4 and an IPv6 address each, all four behind cali-* interfaces.
  expect(r.body.hostInterface).toMatchObject({ pattern: 'docker0', interfacesMatching: 0, podIps: { matching: 0, other: 4 } });
  expect(r.body.hostInterface.notIntercepted).toContainEqual({ ip: lab.pod('app').ip, iface: lab.pod('app').hostIface });
  expect(await running.metric('podiam_host_interfaces_matching')).toBe(0);
  expect(await running.metric('podiam_host_interface_pod_ips', { via: 'other' })).toBe(4);
  expect(await running.metric('podiam_host_interface_pod_ips', { via: 'matching' })).toBe(0);

  const events = await until(nodeEvents, (e) => e.length > 0);
  expect(events).toHaveLength(1);
  expect(events[0]).toMatchObject({ type: 'Warning', reason: 'PodiamHostInterfaceMatchesNoPod', involvedObject: { kind: 'Node', name: NODE_NAME } });
  expect(events[0]!.message).toMatch(/--host-interface=docker0 matches 0 interface\(s\) on this node, and none of this node's 4 pod IP\(s\) is routed through one/);
  // Checks go on (every 5 s): no second Event for the same finding.
  await sleep(6_000);
  expect(await nodeEvents()).toHaveLength(1);
  expect(running.output().match(/"message":"--host-interface matches no pod"/g)).toHaveLength(1);
}, 90_000);

test('the right pattern (cali+): every pod IP matching, no Event', async () => {
  const before = (await nodeEvents()).length;
  running = await lab.startPodiam({ extraArgs: ['--log-format=json', '--iptables-reconcile-interval=1s'], wait: 'none' });
  await running.waitReady(40_000);
  const r = await until(() => readyz(running!), (x) => x.body.hostInterface !== undefined);
  // The two pods' veths (cali-app, cali-web); the outsider's veth-out0 and veth-imds do not match.
  expect(r.body.hostInterface).toEqual({ pattern: 'cali+', interfacesMatching: 2, podIps: { matching: 4, other: 0 } });
  expect(await running.metric('podiam_host_interface_pod_ips', { via: 'matching' })).toBe(4);
  await sleep(1_500);
  expect(await nodeEvents()).toHaveLength(before);
}, 90_000);
