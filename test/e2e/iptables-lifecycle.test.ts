/**
 * The DNAT rule's life, for real, in the lab's node namespace (test/support/lab.ts): removed on
 * SIGTERM, restored after someone deletes it, never duplicated by a restart, and a clear failure
 * when podiam cannot run iptables. Each check looks at `iptables-save -t nat` and at what a pod
 * actually reaches.
 *
 * Needs root (it fails, with the reason, when not root).
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { LabPodiam } from '../support/lab.js';
import { Lab, METADATA_IP, SYSTEM_PATH, sleep, which } from '../support/lab.js';

const CREDS = `http://${METADATA_IP}/latest/meta-data/iam/security-credentials/`;

let lab: Lab;
/** The podiam a test started; stopped (SIGKILL if need be) after each test. */
let running: LabPodiam[] = [];

beforeAll(async () => {
  lab = await Lab.create({ pods: [{ name: 'app', role: 'app-role' }] });
}, 60_000);

afterEach(async () => {
  await Promise.all(running.map((p) => p.stop('SIGTERM', 5_000)));
  running = [];
  // Every test starts from a node with no podiam rule (a SIGKILLed podiam leaves one behind).
  await lab.iptables(['-t', 'nat', '-D', 'PREROUTING', '-d', `${METADATA_IP}/32`, '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-m', 'comment', '--comment', 'podiam: pod metadata requests', '-j', 'PODIAM']);
  await lab.iptables(['-t', 'nat', '-F', 'PODIAM']);
  await lab.iptables(['-t', 'nat', '-X', 'PODIAM']);
}, 30_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

async function start(extraArgs: readonly string[] = []): Promise<LabPodiam> {
  const p = await lab.startPodiam({ extraArgs: ['--log-format=json', ...extraArgs] });
  running.push(p);
  return p;
}

/** What the pod gets for its role listing: its role through podiam, or node-role straight from the metadata service. */
async function podSees(): Promise<string> {
  const r = await lab.curl(lab.pod('app').netns, CREDS, { timeoutS: 3 });
  return r.status === 200 ? r.body : `${r.status} ${r.body}`;
}

/** Polls until the rule is complete again; returns how long it took (ms), or throws after timeoutMs. */
async function waitForRule(timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const rules = await lab.podiamRules();
    if (rules.jumps.length === 1 && rules.dnats.length === 1) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) throw new Error(`rule not restored within ${timeoutMs} ms:\n${rules.all.join('\n')}`);
    await sleep(100);
  }
}

test('SIGTERM removes the chain and the jump, podiam exits 0, and pods reach the metadata service directly again', async () => {
  const p = await start();
  expect(await lab.podiamRules()).toMatchObject({ chain: true, jumps: [expect.any(String)], dnats: [expect.any(String)] });
  expect(await podSees()).toBe('app-role');

  const exit = await p.stop('SIGTERM');
  expect(exit).toEqual({ code: 0, signal: null });
  const nat = await lab.natTable();
  expect(nat).not.toMatch(/PODIAM|podiam/);
  expect(p.output()).toContain('iptables rule removed');
  // Nothing intercepts any more: the pod's request goes to the node's metadata service.
  expect(await podSees()).toBe('node-role');
}, 30_000);

test('a rule deleted by hand is back within 5 s, and podiam_iptables_rule_restores_total counts it', async () => {
  const p = await start();
  expect(await p.metric('podiam_iptables_rule_restores_total')).toBe(0);
  const jumpFirst = (await lab.natTable()).split('\n').find((l) => l.startsWith('-A PREROUTING'));
  expect(jumpFirst).toContain('-j PODIAM');

  // 1. The jump, deleted the way an operator would: by position.
  expect((await lab.iptables(['-t', 'nat', '-D', 'PREROUTING', '1'])).code).toBe(0);
  expect((await lab.podiamRules()).jumps).toEqual([]);
  expect(await waitForRule(5_000)).toBeLessThan(5_000);
  expect(await p.metric('podiam_iptables_rule_restores_total')).toBe(1);
  expect(await p.metric('podiam_iptables_rule_present')).toBe(1);
  expect(await podSees()).toBe('app-role');

  // 2. The DNAT rule: the PODIAM chain flushed.
  expect((await lab.iptables(['-t', 'nat', '-F', 'PODIAM'])).code).toBe(0);
  expect((await lab.podiamRules()).dnats).toEqual([]);
  expect(await waitForRule(5_000)).toBeLessThan(5_000);
  expect(await p.metric('podiam_iptables_rule_restores_total')).toBe(2);

  // 3. All of it: PREROUTING flushed and the chain deleted.
  expect((await lab.iptables(['-t', 'nat', '-F', 'PREROUTING'])).code).toBe(0);
  expect((await lab.iptables(['-t', 'nat', '-F', 'PODIAM'])).code).toBe(0);
  expect((await lab.iptables(['-t', 'nat', '-X', 'PODIAM'])).code).toBe(0);
  expect((await lab.podiamRules()).all).toEqual([]);
  expect(await waitForRule(5_000)).toBeLessThan(5_000);
  expect(await p.metric('podiam_iptables_rule_restores_total')).toBe(3);
  expect(await podSees()).toBe('app-role');
  expect(p.output()).toContain('iptables rule missing, restoring it');
}, 40_000);

test('restarting podiam does not duplicate the rule: exactly one jump and one DNAT rule', async () => {
  // After a crash (SIGKILL: no chance to clean up) the rule stays behind ...
  const crashed = await start();
  expect((await crashed.stop('SIGKILL')).signal).toBe('SIGKILL');
  const left = await lab.podiamRules();
  expect([left.jumps.length, left.dnats.length]).toEqual([1, 1]);

  // ... and the next podiam adopts it rather than adding a second copy.
  const second = await start();
  let rules = await lab.podiamRules();
  expect([rules.jumps.length, rules.dnats.length]).toEqual([1, 1]);
  expect(await podSees()).toBe('app-role');

  // A clean restart too, and a few reconcile rounds later still exactly one of each.
  expect((await second.stop('SIGTERM')).code).toBe(0);
  const third = await start(['--iptables-reconcile-interval=500ms']);
  await sleep(1_200);
  rules = await lab.podiamRules();
  expect([rules.jumps.length, rules.dnats.length]).toEqual([1, 1]);
  expect(await third.metric('podiam_iptables_rule_restores_total')).toBe(0);
}, 40_000);

/** Pids whose parent is `pid` (from /proc; read-only). */
function childrenOf(pid: number): number[] {
  const kids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) kids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return kids;
}

test('SIGTERM while a slow reconcile is running still removes the rule, promptly, and exits 0', async () => {
  // An iptables that takes 0.5 s per call (as iptables-nft does on a node with a huge nat table):
  // a reconcile (two checks) outlasts the 500 ms interval.
  writeFileSync(path.join(lab.dir, 'iptables'), `#!/bin/sh\nsleep 0.5\nexec ${which('iptables')} "$@"\n`, { mode: 0o755 });
  const env = { ...lab.podiamEnv(), PATH: `${lab.dir}:${SYSTEM_PATH}` };
  const p = await lab.startPodiam({ extraArgs: ['--log-format=json', '--iptables-reconcile-interval=500ms'], env });
  running.push(p);
  await sleep(4_000); // long enough for a backlog of ticks to build up, were they queued
  // Signal exactly while an iptables call is running.
  for (let i = 0; i < 100 && childrenOf(p.pid!).length === 0; i++) await sleep(20);
  expect(childrenOf(p.pid!).length).toBeGreaterThan(0);
  const t0 = Date.now();
  const exit = await p.stop('SIGTERM', 30_000);
  const took = Date.now() - t0;
  expect(exit).toEqual({ code: 0, signal: null });
  expect((await lab.podiamRules()).all).toEqual([]);
  expect(p.output()).toContain('iptables rule removed');
  // One reconcile in flight (≤ 1 s) and the removal (4 calls, 2 s): not a backlog of skipped ticks.
  expect(took).toBeLessThan(4_500);
}, 40_000);

test('--iptables without the iptables binary: exits non-zero saying it was not found', async () => {
  const env = { ...lab.podiamEnv(), PATH: '/nonexistent' };
  const p = await lab.startPodiam({ extraArgs: ['--log-format=json'], env, wait: 'none' });
  running.push(p);
  const exit = await p.waitExit(15_000);
  expect(exit.signal).toBeNull();
  expect(exit.code).not.toBe(0);
  expect(p.output()).toMatch(/podiam: --iptables: the iptables binary was not found on PATH/);
  expect((await lab.podiamRules()).all).toEqual([]);
}, 30_000);

test('--iptables without NET_ADMIN: exits non-zero saying it has no permission', async () => {
  // Root, but with CAP_NET_ADMIN dropped from the bounding set: a DaemonSet without NET_ADMIN.
  const p = await lab.startPodiam({
    extraArgs: ['--log-format=json'],
    wait: 'none',
    wrapper: ['setpriv', '--bounding-set=-net_admin', '--inh-caps=-net_admin', '--'],
  });
  running.push(p);
  const exit = await p.waitExit(15_000);
  expect(exit.signal).toBeNull();
  expect(exit.code).not.toBe(0);
  expect(p.output()).toMatch(/podiam: --iptables: no permission to change iptables \(needs root or the NET_ADMIN capability\)/);
  expect((await lab.podiamRules()).all).toEqual([]);
  // Nothing intercepts: the pod still reaches the metadata service.
  expect(await podSees()).toBe('node-role');
}, 30_000);
