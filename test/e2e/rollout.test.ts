/**
 * A rolling update on one node, for real, in the node lab (test/support/lab.ts): the DaemonSet's
 * `maxSurge: 1` starts a second podiam while the first serves, then the first gets SIGTERM. Pods
 * poll the metadata service every 50 ms (IPv4 and IPv6, a new connection each time and over
 * keep-alive connections) the whole time: nothing may be refused, fail, or get the node's role.
 *
 * The SIGTERM is sent as soon as the second podiam has started, before it is ready: with
 * hostNetwork the kubelet's readiness probe of the new pod can be answered by the old podiam, so
 * the old one must not rely on being told late (src/handover.ts).
 *
 * On a Node without `listen({ reusePort })` (< 22.12) the second podiam cannot share the port:
 * then the test checks today's behaviour instead (the warning, the wait, never the node's role).
 *
 * Needs root (it fails, with the reason, when not root).
 */
import path from 'node:path';
import type { LabPodiam, LabProcess } from '../support/lab.js';
import { Lab, METADATA_IP, METADATA_IP6, SYSTEM_PATH, sleep } from '../support/lab.js';
import { ROOT } from '../support/podiam-process.js';
import { reusePortSupported } from '../../src/listeners.js';

const CREDS = (host: string): string => `http://${host}/latest/meta-data/iam/security-credentials/app-role`;

let lab: Lab;
const started: LabPodiam[] = [];

beforeAll(async () => {
  lab = await Lab.create({ pods: [{ name: 'app', role: 'app-role' }] });
}, 60_000);

afterAll(async () => {
  await Promise.all(started.map((p) => p.stop('SIGKILL', 5_000)));
  await lab?.runCleanup();
  await lab?.destroy();
}, 30_000);

interface PollResult {
  url: string;
  mode: string;
  ok: number;
  nodeRole: number;
  refused: number;
  failed: number;
  failures: string[];
}

function poller(url: string, mode: 'fresh' | 'keepalive'): LabProcess {
  return lab.spawnIn(lab.pod('app').netns, `poller ${mode} ${url}`, [process.execPath, path.join(ROOT, 'dist/test/support/imds-poller.js'), url, '50', mode, '2000'], { PATH: SYSTEM_PATH });
}

async function results(pollers: LabProcess[]): Promise<PollResult[]> {
  for (const p of pollers) p.child.kill('SIGTERM');
  return Promise.all(pollers.map(async (p) => JSON.parse((await p.waitFor(/^result (.*)$/m, 10_000))[1]!) as PollResult));
}

async function startPodiam(): Promise<LabPodiam> {
  const p = await lab.startPodiam({ extraArgs: ['--log-format=json', '--shutdown-handover=20s'], wait: 'none' });
  started.push(p);
  return p;
}

function lines(p: LabPodiam, message: string): Array<Record<string, unknown>> {
  return p
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{') && l.includes(message))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

test(`a rollout (second podiam started while the first serves, SIGTERM to the first): pods polling every 50 ms see ${reusePortSupported() ? '0 refused, 0 failed' : 'the pre-22.12 behaviour'}, 0 node-role answers`, async () => {
  const first = await startPodiam();
  await first.waitReady(40_000);
  const pollers = [poller(CREDS(METADATA_IP), 'fresh'), poller(CREDS(METADATA_IP), 'keepalive'), poller(CREDS(`[${METADATA_IP6}]`), 'fresh'), poller(CREDS(`[${METADATA_IP6}]`), 'keepalive')];
  await Promise.all(pollers.map((p) => p.waitFor(/^polling$/m)));
  await sleep(1_000);

  const second = await startPodiam();
  let polled: PollResult[];
  try {
    if (reusePortSupported()) {
      await second.waitFor(/another process listens on the app port/, 20_000);
      // Told before the second is ready (see the header).
      const stopping = first.stop('SIGTERM', 40_000);
      await second.waitFor(/"message":"podiam listening"/, 40_000);
      expect(await stopping).toEqual({ code: 0, signal: null });
      expect(lines(first, 'handing over')).toHaveLength(1);
    } else {
      await second.waitFor(/app port is taken; waiting for it/, 20_000);
      expect(lines(second, 'cannot share the app port')).toHaveLength(1);
      expect(await first.stop('SIGTERM', 40_000)).toEqual({ code: 0, signal: null });
      await second.waitFor(/"message":"podiam listening"/, 40_000);
    }
    await second.waitReady(20_000);
    await sleep(2_000);
  } finally {
    polled = await results(pollers);
  }

  for (const r of polled) {
    expect({ url: r.url, mode: r.mode, nodeRole: r.nodeRole }).toEqual({ url: r.url, mode: r.mode, nodeRole: 0 });
    expect(r.ok).toBeGreaterThan(20);
    if (reusePortSupported()) expect({ url: r.url, mode: r.mode, refused: r.refused, failed: r.failed, failures: r.failures }).toEqual({ url: r.url, mode: r.mode, refused: 0, failed: 0, failures: [] });
  }
  // Adopted, not duplicated: one copy of each rule, none restored.
  for (const family of ['ipv4', 'ipv6'] as const) {
    const rules = await lab.podiamRules(family);
    expect({ family, jumps: rules.jumps.length, dnats: rules.dnats.length, guards: rules.guards.length }).toEqual({ family, jumps: 1, dnats: 1, guards: 1 });
  }
  expect(await second.metric('podiam_iptables_rule_restores_total')).toBe(0);
}, 180_000);
