/**
 * --remove-startup-taint, for real, in the node lab: the lab's Node carries a NoSchedule start-up
 * taint (as the kubelet's --register-with-taints or Karpenter's startupTaints put it there). podiam
 * removes it only after every family's rules are in (the test API server records when the PATCH
 * was written; an iptables wrapper records when each rule went in, and makes each insert take
 * 0.3 s so that rules lag the informers); it leaves every other taint alone; without the flag it
 * does not touch the node at all.
 *
 * Needs root (it fails, with the reason, when not root).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { LabPodiam } from '../support/lab.js';
import { Lab, NODE_NAME, SYSTEM_PATH, sleep, which } from '../support/lab.js';

const TAINT = { key: 'podiam.io/agent-not-ready', effect: 'NoSchedule' };
const OTHER = { key: 'example.com/gpu-driver-not-ready', value: 'true', effect: 'NoSchedule' };

let lab: Lab;
let running: LabPodiam | undefined;

beforeEach(async () => {
  lab = await Lab.create({ pods: [{ name: 'app', role: 'app-role' }], nodeTaints: [OTHER, TAINT] });
}, 60_000);

afterEach(async () => {
  await running?.stop('SIGTERM', 5_000);
  running = undefined;
  await lab?.runCleanup();
  await lab?.destroy();
}, 30_000);

/** iptables/ip6tables wrappers that log when each call ENDED, and take 0.3 s per rule inserted. */
function slowRulesEnv(): { env: NodeJS.ProcessEnv; inserts: () => Array<{ end: number; line: string }> } {
  const log = path.join(lab.dir, 'iptables-ends.log');
  writeFileSync(log, '');
  for (const bin of ['iptables', 'ip6tables']) {
    writeFileSync(
      path.join(lab.dir, bin),
      `#!/bin/sh\ncase " $* " in *" -I "*|*" -A "*) sleep 0.3;; esac\n${which(bin)} "$@"\nrc=$?\necho "$(date +%s%3N) ${bin} $*" >> ${log}\nexit $rc\n`,
      { mode: 0o755 },
    );
  }
  return {
    env: { ...lab.podiamEnv(), PATH: `${lab.dir}:${SYSTEM_PATH}` },
    inserts: () =>
      readFileSync(log, 'utf8')
        .split('\n')
        .filter((l) => / -[IA] /.test(l))
        .map((l) => ({ end: Number(l.slice(0, l.indexOf(' '))), line: l.slice(l.indexOf(' ') + 1) })),
  };
}

async function node(): Promise<{ taints: unknown[] }> {
  const r = await lab.kube('GET', `/api/v1/nodes/${NODE_NAME}`);
  expect(r.status).toBe(200);
  return { taints: (r.body.spec?.taints as unknown[] | undefined) ?? [] };
}

test('the start-up taint is removed by one PATCH written after every rule of both families was in; the other taint stays', async () => {
  const { env, inserts } = slowRulesEnv();
  running = await lab.startPodiam({ extraArgs: ['--log-format=json', `--remove-startup-taint=${TAINT.key}`], env, wait: 'none' });
  await running.waitReady(40_000);
  for (let i = 0; i < 100 && (await node()).taints.length !== 1; i++) await sleep(100);
  expect((await node()).taints).toEqual([OTHER]);

  const patches = await lab.nodePatches();
  expect(patches).toHaveLength(1);
  expect(patches[0]!.contentType).toBe('application/json-patch+json');
  expect(patches[0]!.patch).toEqual([
    { op: 'test', path: '/spec/taints/1', value: TAINT },
    { op: 'remove', path: '/spec/taints/1' },
  ]);
  // Both families' rules (guard, DNAT, jump: three inserts each) went in before the PATCH.
  const done = inserts();
  expect(done.filter((c) => c.line.startsWith('iptables ')).length).toBe(3);
  expect(done.filter((c) => c.line.startsWith('ip6tables ')).length).toBe(3);
  const lastRuleIn = Math.max(...done.map((c) => c.end));
  expect(patches[0]!.time).toBeGreaterThanOrEqual(lastRuleIn);
  expect(running.output()).toMatch(/"message":"start-up taint removed: pods may be scheduled on this node"/);
}, 90_000);

test('without --remove-startup-taint the node is not touched', async () => {
  running = await lab.startPodiam({ extraArgs: ['--log-format=json'], wait: 'none' });
  await running.waitReady(40_000);
  await sleep(2_000);
  expect(await lab.nodePatches()).toEqual([]);
  expect((await node()).taints).toEqual([OTHER, TAINT]);
}, 90_000);
