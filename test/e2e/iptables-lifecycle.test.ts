/**
 * The interception rules' life, for real, in the lab's node namespace (test/support/lab.ts): they
 * outlive podiam (SIGTERM, SIGKILL) so pods are refused, never given the node's role, until the
 * next podiam adopts them; the guard keeps pods off the real metadata service while a DNAT is
 * missing; conntrack cuts connections opened in a gap; `podiam --cleanup` removes everything.
 * Each check looks at `iptables-save`/`ip6tables-save` and at what a pod actually reaches.
 *
 * Needs root (it fails, with the reason, when not root).
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { LabPodiam, LabProcess } from '../support/lab.js';
import { Lab, METADATA_IP, METADATA_IP6, SYSTEM_PATH, sleep, which } from '../support/lab.js';
import { ROOT } from '../support/podiam-process.js';

const CREDS = `http://${METADATA_IP}/latest/meta-data/iam/security-credentials/`;
const CREDS6 = `http://[${METADATA_IP6}]/latest/meta-data/iam/security-credentials/`;

let lab: Lab;
/** The podiam a test started; stopped (SIGKILL if need be) after each test. */
let running: LabPodiam[] = [];

beforeAll(async () => {
  lab = await Lab.create({ pods: [{ name: 'app', role: 'app-role' }] });
}, 60_000);

afterEach(async () => {
  await Promise.all(running.map((p) => p.stop('SIGTERM', 5_000)));
  running = [];
  // Every test starts from a node with no podiam rule: the rules outlive podiam by design.
  const r = await lab.runCleanup();
  if (r.code !== 0) throw new Error(`podiam --cleanup failed: ${r.stderr}`);
}, 30_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

async function start(extraArgs: readonly string[] = [], env?: NodeJS.ProcessEnv): Promise<LabPodiam> {
  // Tracked before it is ready: one that never gets ready must still be stopped after the test.
  const p = await lab.startPodiam({ extraArgs: ['--log-format=json', ...extraArgs], wait: 'none', ...(env ? { env } : {}) });
  running.push(p);
  await p.waitReady(40_000);
  return p;
}

/**
 * An iptables/ip6tables wrapper on podiam's PATH that logs each call to a file: the test can see
 * a reconcile round happen (and so act just after one, making the gap until the next a whole
 * interval). `slow` makes every call take 0.5 s once the file `<dir>/slow` exists.
 */
interface Call {
  /** When the call started (ms since the epoch). */
  readonly at: number;
  /** `iptables -w 5 -t nat ...` */
  readonly line: string;
}

function wrappedEnv(opts: { slow?: boolean } = {}): { env: NodeJS.ProcessEnv; calls: () => Call[]; slowFlag: string } {
  const calls = path.join(lab.dir, 'iptables-calls.log');
  const slowFlag = path.join(lab.dir, 'slow');
  writeFileSync(calls, '');
  for (const bin of ['iptables', 'ip6tables']) {
    const slow = opts.slow ? `[ -e ${slowFlag} ] && sleep 0.5\n` : '';
    writeFileSync(path.join(lab.dir, bin), `#!/bin/sh\necho "$(date +%s%3N) ${bin} $*" >> ${calls}\n${slow}exec ${which(bin)} "$@"\n`, { mode: 0o755 });
  }
  return { env: { ...lab.podiamEnv(), PATH: `${lab.dir}:${SYSTEM_PATH}` }, calls: () =>
      readFileSync(calls, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => ({ at: Number(l.slice(0, l.indexOf(' '))), line: l.slice(l.indexOf(' ') + 1) })),
    slowFlag,
  };
}

/** Resolves just after podiam's next reconcile round has checked `bin`'s jump. */
async function afterReconcile(calls: () => Call[], bin: string): Promise<void> {
  const seen = calls().length;
  const deadline = Date.now() + 15_000;
  while (!calls().slice(seen).some((c) => c.line.startsWith(`${bin} `) && c.line.includes('-C PREROUTING'))) {
    if (Date.now() > deadline) throw new Error('no reconcile round within 15 s');
    await sleep(20);
  }
}

/** What the pod gets for its role listing: its role through podiam, or node-role straight from the metadata service. */
async function podSees(url = CREDS, timeoutS = 3): Promise<string> {
  const r = await lab.curl(lab.pod('app').netns, url, { timeoutS });
  return r.status === 200 ? r.body : `${r.status} ${r.body}`;
}

/** Exactly one copy of each rule in both families. */
async function expectOneOfEach(): Promise<void> {
  for (const family of ['ipv4', 'ipv6'] as const) {
    const rules = await lab.podiamRules(family);
    expect({ family, jumps: rules.jumps.length, dnats: rules.dnats.length, guards: rules.guards.length }).toEqual({ family, jumps: 1, dnats: 1, guards: 1 });
  }
}

/** Polls podiam's metric until it has `value` (it is counted just after the rule is back). */
async function expectMetric(p: LabPodiam, name: string, labels: Record<string, string>, value: number): Promise<void> {
  const deadline = Date.now() + 3_000;
  let last = await p.metric(name, labels);
  while (last !== value && Date.now() < deadline) {
    await sleep(50);
    last = await p.metric(name, labels);
  }
  expect({ name, labels, value: last }).toEqual({ name, labels, value });
}

/** Polls until every rule of `family` is back; returns when (ms since epoch), or throws after timeoutMs. */
async function waitForRules(family: 'ipv4' | 'ipv6', timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const rules = await lab.podiamRules(family);
    if (rules.jumps.length === 1 && rules.dnats.length === 1 && rules.guards.length === 1) return Date.now();
    if (Date.now() - t0 > timeoutMs) throw new Error(`rules not restored within ${timeoutMs} ms:\n${rules.all.join('\n')}`);
    await sleep(50);
  }
}

/**
 * A pod asking the metadata service (IMDSv1 listing and an IMDSv2 token) with the given client
 * timeout: how it ended and how long it took.
 */
async function refusedFast(url: string): Promise<void> {
  const ns = lab.pod('app').netns;
  const host = new URL(url).origin;
  for (const ask of [
    () => lab.curl(ns, url, { timeoutS: 2 }),
    () => lab.curl(ns, `${host}/latest/api/token`, { method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': '60' }, timeoutS: 2 }),
  ]) {
    const t0 = Date.now();
    const r = await ask();
    const took = Date.now() - t0;
    expect({ url, status: r.status, refused: /Connection refused|Failed to connect/.test(r.body) }).toEqual({ url, status: 0, refused: true });
    expect(r.body).not.toContain('node-role');
    // Well under the SDKs' 1 s timeout (the time includes starting curl in the namespace).
    expect(took).toBeLessThan(1_000);
  }
}

test('SIGTERM: podiam exits 0 and leaves every rule; pods are refused fast (IMDSv1, IMDSv2, IPv4 and IPv6); the next podiam serves with one copy of each rule', async () => {
  const p = await start();
  await expectOneOfEach();
  expect(await podSees()).toBe('app-role');
  expect(await podSees(CREDS6)).toBe('app-role');

  const exit = await p.stop('SIGTERM');
  expect(exit).toEqual({ code: 0, signal: null });
  await expectOneOfEach();
  await refusedFast(CREDS);
  await refusedFast(CREDS6);

  const next = await start();
  await expectOneOfEach();
  expect(await podSees()).toBe('app-role');
  expect(await podSees(CREDS6)).toBe('app-role');
  expect(await next.metric('podiam_iptables_rule_restores_total')).toBe(0);
}, 60_000);

test('SIGKILL: the same — rules stay, pods refused fast, the next podiam adopts them without duplicates', async () => {
  const crashed = await start();
  expect((await crashed.stop('SIGKILL')).signal).toBe('SIGKILL');
  await expectOneOfEach();
  await refusedFast(CREDS);
  await refusedFast(CREDS6);
  const second = await start(['--iptables-reconcile-interval=500ms']);
  await sleep(1_200);
  await expectOneOfEach();
  expect(await podSees()).toBe('app-role');
  expect(await second.metric('podiam_iptables_rule_restores_total')).toBe(0);
}, 60_000);

/**
 * Flushes `family`'s nat table by hand while the pod polls the metadata service every 50 ms:
 * no answer may come from the real service, and the rules are back within one reconcile interval.
 */
async function flushWhilePolling(family: 'ipv4' | 'ipv6', p: LabPodiam, intervalMs: number, calls: () => Call[]): Promise<void> {
  const url = family === 'ipv4' ? CREDS : CREDS6;
  const answers: Array<{ start: number; end: number; answer: string }> = [];
  let polling = true;
  // A new request every 50 ms (at most 10 in flight), each with a 0.5 s timeout: a dropped one
  // does not hold up the next.
  const inFlight = new Set<Promise<void>>();
  const poller = (async () => {
    while (polling) {
      if (inFlight.size < 10) {
        const start = Date.now();
        const one: Promise<void> = lab.curl(lab.pod('app').netns, url, { timeoutS: 0.5 }).then((r) => {
          answers.push({ start, end: Date.now(), answer: r.status === 200 ? r.body : `${r.status}` });
          inFlight.delete(one);
        });
        inFlight.add(one);
      }
      await sleep(50);
    }
    await Promise.all(inFlight);
  })();
  let flushedAt = 0;
  let flushDoneAt = 0;
  let callsAtFlush = 0;
  let restoredAt = 0;
  try {
    // Just after a reconcile round: the rule stays missing for about a whole interval.
    await afterReconcile(calls, family === 'ipv4' ? 'iptables' : 'ip6tables');
    flushedAt = Date.now();
    callsAtFlush = calls().length;
    const flush = await (family === 'ipv4' ? lab.iptables(['-t', 'nat', '-F']) : lab.ip6tables(['-t', 'nat', '-F']));
    flushDoneAt = Date.now();
    expect(flush.code).toBe(0);
    expect((await lab.podiamRules(family)).dnats).toEqual([]);
    restoredAt = await waitForRules(family, intervalMs + 3_000);
    // Until podiam answers a poll again.
    for (let i = 0; i < 100 && !answers.some((a) => a.start > restoredAt && a.answer === 'app-role'); i++) await sleep(50);
  } finally {
    // Whatever failed above, the poller stops (a loop left running would keep jest alive).
    polling = false;
    await poller;
  }

  // Within one reconcile interval: restored by the first round after the flush (that round's
  // check of the jump, then the restore's own check before inserting it). Counted in rounds, not
  // in milliseconds, so a loaded machine's slow iptables calls do not matter.
  const bin = family === 'ipv4' ? 'iptables' : 'ip6tables';
  const since = calls().slice(callsAtFlush);
  const restoredBy = since.findIndex((c) => c.line.startsWith(`${bin} `) && c.line.includes('-I PREROUTING'));
  expect(restoredBy).toBeGreaterThan(-1);
  expect(since.slice(0, restoredBy).filter((c) => c.line.startsWith(`${bin} `) && c.line.includes('-C PREROUTING'))).toHaveLength(2);
  // The DNAT goes back in before the jump: from the jump's insertion on, podiam answers again.
  const dnatBackAt = since.find((c) => c.line.startsWith(`${bin} `) && c.line.includes('-A PODIAM'))!.at;
  expect(restoredAt - flushedAt).toBeLessThan(intervalMs + 10_000);
  expect(answers.filter((a) => a.answer === 'node-role')).toEqual([]);
  expect(answers.filter((a) => a.answer !== 'app-role' && a.answer !== '0')).toEqual([]);
  // The pod did ask while the rule was missing (answered by nobody: the guard dropped it).
  // Polls made wholly between the flush and the restore: the nat rules were gone for all of it.
  const inGap = answers.filter((a) => a.start >= flushDoneAt && a.end <= dnatBackAt);
  expect(inGap.length).toBeGreaterThan(0);
  expect(inGap.filter((a) => a.answer !== '0')).toEqual([]);
  expect(answers.some((a) => a.start > restoredAt && a.answer === 'app-role')).toBe(true);
  await expectMetric(p, 'podiam_iptables_rule_restores_total', { family, rule: 'dnat' }, 1);
  expect(await p.metric('podiam_iptables_rule_restores_total', { family, rule: 'guard' })).toBe(0);
  expect(await p.metric('podiam_iptables_rule_present', { family, rule: 'dnat' })).toBe(1);
}

test('without the ruleset watch, nat table flushed by hand: a pod polling every 50 ms gets 0 answers from the real service; restored within one interval (IPv4, then IPv6), logged at warn and counted', async () => {
  const { env, calls } = wrappedEnv();
  // No watch: the rule stays missing until the next round, and the guard is what the pod meets.
  const p = await start(['--iptables-reconcile-interval=3s', '--iptables-watch=false'], env);
  await flushWhilePolling('ipv4', p, 3_000, calls);
  await flushWhilePolling('ipv6', p, 3_000, calls);
  const warnings = p
    .output()
    .split('\n')
    .filter((l) => l.includes('iptables rule missing, restored it'))
    .map((l) => JSON.parse(l) as { level: string; family: string; rule: string });
  expect(warnings.map((w) => [w.level, w.family, w.rule])).toEqual([
    ['warn', 'ipv4', 'dnat'],
    ['warn', 'ipv6', 'dnat'],
  ]);
  await expectOneOfEach();
}, 60_000);

test('without the ruleset watch, the guard deleted by hand is restored and counted; PREROUTING flushed and the chain deleted too', async () => {
  const p = await start(['--iptables-reconcile-interval=1s', '--iptables-watch=false']);
  expect((await lab.iptables(['-t', 'mangle', '-D', 'FORWARD', '1'])).code).toBe(0);
  expect((await lab.podiamRules('ipv4')).guards).toEqual([]);
  // The guard alone is found by the full check, every tenth round (a round checks the jump).
  await waitForRules('ipv4', 10 * 1_000 + 4_000);
  await expectMetric(p, 'podiam_iptables_rule_restores_total', { family: 'ipv4', rule: 'guard' }, 1);
  expect((await lab.saved('ipv4', 'mangle')).split('\n').find((l) => l.startsWith('-A FORWARD'))).toContain('podiam: guard');

  expect((await lab.iptables(['-t', 'nat', '-F', 'PREROUTING'])).code).toBe(0);
  expect((await lab.iptables(['-t', 'nat', '-F', 'PODIAM'])).code).toBe(0);
  expect((await lab.iptables(['-t', 'nat', '-X', 'PODIAM'])).code).toBe(0);
  await waitForRules('ipv4', 4_000);
  await expectMetric(p, 'podiam_iptables_rule_restores_total', { family: 'ipv4', rule: 'dnat' }, 1);
  expect(await podSees()).toBe('app-role');
  await expectOneOfEach();
}, 60_000);

test('with the ruleset watch (the default): idle rounds run no process; a flushed nat table, a deleted guard and a deleted chain are back within a second, long before the 5 min interval', async () => {
  const { env, calls } = wrappedEnv();
  const p = await start(['--iptables-reconcile-interval=5m'], env);
  expect(await p.metric('podiam_iptables_watch')).toBe(1);
  expect(childrenOf(p.pid!).map((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim())).toEqual(['nft -j monitor destroy']);
  // The check that follows the watch's start (deletions before it subscribed), then nothing.
  await sleep(2_500);
  const idleFrom = calls().length;
  await sleep(2_000);
  expect(calls().slice(idleFrom)).toEqual([]);

  const cases: Array<{ family: 'ipv4' | 'ipv6'; rule: 'dnat' | 'guard'; remove: () => Promise<{ code: number | null }> }> = [
    { family: 'ipv4', rule: 'dnat', remove: () => lab.iptables(['-t', 'nat', '-F']) },
    { family: 'ipv6', rule: 'guard', remove: () => lab.ip6tables(['-t', 'mangle', '-D', 'FORWARD', '1']) },
    // The whole table, PODIAM chain and all, in one commit (as `nft flush ruleset` would).
    { family: 'ipv6', rule: 'dnat', remove: () => lab.exec(lab.nodeNs, ['nft', 'delete', 'table', 'ip6', 'nat']) },
  ];
  for (const c of cases) {
    // Each removal more than a second after the last (event-driven checks are at most one a second).
    await sleep(1_100);
    const t0 = Date.now();
    expect({ family: c.family, rule: c.rule, code: (await c.remove()).code }).toEqual({ family: c.family, rule: c.rule, code: 0 });
    const back = await waitForRules(c.family, 3_000);
    expect({ ...c, remove: undefined, ms: back - t0 < 3_000 }).toEqual({ ...c, remove: undefined, ms: true });
    await expectMetric(p, 'podiam_iptables_rule_restores_total', { family: c.family, rule: c.rule }, 1);
  }
  expect(await podSees()).toBe('app-role');
  expect(await podSees(CREDS6)).toBe('app-role');
  await expectOneOfEach();
  // SIGTERM stops the watch with podiam: no nft monitor left behind.
  const pid = p.pid!;
  const monitor = childrenOf(pid);
  expect((await p.stop('SIGTERM')).code).toBe(0);
  expect(monitor.filter((m) => existsSync(`/proc/${m}`))).toEqual([]);
}, 60_000);

test('a ruleset watch that cannot run (nft fails): warned, podiam_iptables_watch 0, and every round checks again', async () => {
  const bin = path.join(lab.dir, 'nft-fails');
  mkdirSync(bin, { recursive: true });
  writeFileSync(path.join(bin, 'nft'), '#!/bin/sh\necho "netlink: Error: cannot subscribe: Operation not permitted" >&2\nexit 1\n', { mode: 0o755 });
  const p = await start(['--iptables-reconcile-interval=1s'], { ...lab.podiamEnv(), PATH: `${bin}:${SYSTEM_PATH}` });
  const deadline = Date.now() + 5_000;
  while (!p.output().includes('the ruleset watch (nft monitor) exited') && Date.now() < deadline) await sleep(50);
  const warn = p.output().split('\n').find((l) => l.includes('the ruleset watch (nft monitor) exited'));
  expect(JSON.parse(warn!)).toMatchObject({ level: 'warn', code: 1, stderr: 'netlink: Error: cannot subscribe: Operation not permitted' });
  expect(await p.metric('podiam_iptables_watch')).toBe(0);
  expect((await lab.iptables(['-t', 'nat', '-F'])).code).toBe(0);
  await waitForRules('ipv4', 1_000 + 3_000);
  await expectMetric(p, 'podiam_iptables_rule_restores_total', { family: 'ipv4', rule: 'dnat' }, 1);
}, 60_000);

/** The keep-alive client in the pod (test/support/keepalive-client.ts). */
function keepAlive(host: string): LabProcess {
  const ns = lab.pod('app').netns;
  return lab.spawnIn(ns, 'keepalive', [process.execPath, path.join(ROOT, 'dist/test/support/keepalive-client.js'), host, '/latest/meta-data/iam/security-credentials/'], { PATH: SYSTEM_PATH });
}

test.each([
  ['ipv4', METADATA_IP],
  ['ipv6', METADATA_IP6],
] as const)('%s: a keep-alive connection a pod opened to the real service before the rules were in place gets no answer on it once they are (conntrack)', async (family, host) => {
  // A node tracks connections before podiam runs (kube-proxy's rules use conntrack): as they do.
  const tables = family === 'ipv4' ? lab.iptables.bind(lab) : lab.ip6tables.bind(lab);
  const invalid = ['FORWARD', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'DROP'];
  expect((await tables(['-A', ...invalid])).code).toBe(0);
  try {
    // No podiam, no rules: the pod reaches the node's metadata service and keeps the connection.
    const client = keepAlive(host);
    const first = await client.waitFor(/^first (.*)$/m, 10_000);
    expect(JSON.parse(first[1]!)).toEqual({ status: 200, body: 'node-role' });
    const tracked = await lab.exec(lab.nodeNs, ['conntrack', '-L', '-f', family, '-p', 'tcp', '--orig-dst', host, '--reply-src', host]);
    expect(tracked.stdout).toContain('ESTABLISHED');
    await cutByPodiam(family, client);
  } finally {
    await tables(['-D', ...invalid]);
  }
}, 40_000);

async function cutByPodiam(family: 'ipv4' | 'ipv6', client: LabProcess): Promise<void> {

  // The guard off, so that what cuts the connection is the conntrack flush alone.
  const p = await start(['--iptables-guard=false']);
  client.child.kill('SIGUSR1');
  const second = await client.waitFor(/^second (.*)$/m, 10_000);
  const answer = JSON.parse(second[1]!) as { status?: number; body?: string; error?: string };
  expect(answer.body ?? '').not.toContain('node-role');
  expect(answer.status).toBeUndefined();
  expect(['reset', 'closed', 'timeout']).toContain(answer.error);
  // At least the pod's: on IPv4 podiam's own start-up lookup of the node's region (placement/region,
  // from the node's address, before the rules) is a tracked connection to the real service too.
  const cut = /"connections":(\d+),"family":"ipv[46]","level":"warn","message":"cut connections that reached the real metadata service"/.exec(p.output());
  expect(Number(cut?.[1])).toBeGreaterThanOrEqual(1);
  // Meanwhile a new connection is podiam's.
  expect(await podSees(family === 'ipv4' ? CREDS : CREDS6)).toBe('app-role');
}

test('podiam --cleanup removes every rule of both families, prints them, exits 0; pods reach the metadata service again; a second run exits 0', async () => {
  const p = await start();
  expect((await p.stop('SIGTERM')).code).toBe(0);
  await expectOneOfEach();

  const first = await lab.runCleanup();
  expect(first.code).toBe(0);
  const removed = first.stdout.split('\n').filter((l) => l.startsWith('removed: '));
  expect(removed).toHaveLength(8); // per family: guard, jump, DNAT... and the PODIAM chain
  expect(first.stdout).toContain('removed: iptables -t mangle -D FORWARD');
  expect(first.stdout).toContain('removed: ip6tables -t nat -D PREROUTING');
  for (const family of ['ipv4', 'ipv6'] as const) {
    expect(await lab.saved(family)).not.toMatch(/PODIAM|podiam/);
  }
  // As on a node without podiam: the pod reaches the node's metadata service (both families).
  expect(await podSees()).toBe('node-role');
  expect(await podSees(CREDS6)).toBe('node-role');

  const second = await lab.runCleanup();
  expect({ code: second.code, stdout: second.stdout }).toEqual({ code: 0, stdout: 'podiam --cleanup: no podiam rules found, nothing to remove\n' });
}, 40_000);

test('podiam --cleanup also removes rules of an older podiam or other flags (found by comment), and every duplicate', async () => {
  const jump = ['-p', 'tcp', '-d', `${METADATA_IP}/32`, '--dport', '80', '-m', 'comment', '--comment', 'podiam: pod metadata requests', '-j', 'PODIAM'];
  expect((await lab.iptables(['-t', 'nat', '-N', 'PODIAM'])).code).toBe(0);
  expect((await lab.iptables(['-t', 'nat', '-A', 'PODIAM', '-i', 'eni+', '-p', 'tcp', '-j', 'DNAT', '--to-destination', '10.9.9.9:8181'])).code).toBe(0);
  expect((await lab.iptables(['-t', 'nat', '-I', 'PREROUTING', '1', ...jump])).code).toBe(0);
  expect((await lab.iptables(['-t', 'nat', '-I', 'PREROUTING', '1', ...jump])).code).toBe(0);
  const r = await lab.runCleanup();
  expect(r.code).toBe(0);
  expect(await lab.saved('ipv4')).not.toMatch(/PODIAM|podiam/);
});

test('podiam --cleanup without the iptables binary, and without NET_ADMIN: non-zero, saying so', async () => {
  const noBinary = await lab.runCleanup({ env: { PATH: '/nonexistent' } });
  expect(noBinary.code).not.toBe(0);
  expect(noBinary.stderr).toMatch(/podiam: --cleanup: the iptables binary was not found on PATH/);
  const noCap = await lab.runCleanup({ wrapper: ['setpriv', '--bounding-set=-net_admin', '--inh-caps=-net_admin', '--'] });
  expect(noCap.code).not.toBe(0);
  expect(noCap.stderr).toMatch(/podiam: --cleanup: no permission to change iptables rules \(needs root or the NET_ADMIN capability\)/);
});

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

test('SIGTERM while a slow reconcile is running: exits 0 promptly and leaves the rules whole', async () => {
  // An iptables that takes 0.5 s per call (as iptables-nft does on a node with a huge nat table):
  // a reconcile outlasts the 500 ms interval. Slow only once podiam is up (the flag file), so
  // start-up is not what is measured.
  const { env, slowFlag } = wrappedEnv({ slow: true });
  // Rounds that check (the watch would skip them, and its nft would be a child of its own).
  const p = await start(['--iptables-reconcile-interval=500ms', '--iptables-watch=false'], env);
  writeFileSync(slowFlag, '');
  await sleep(3_000); // long enough for a backlog of ticks to build up, were they queued
  for (let i = 0; i < 250 && childrenOf(p.pid!).length === 0; i++) await sleep(20);
  expect({ children: childrenOf(p.pid!).length > 0, output: p.output() }).toEqual({ children: true, output: p.output() });
  const t0 = Date.now();
  const exit = await p.stop('SIGTERM', 30_000);
  const took = Date.now() - t0;
  expect(exit).toEqual({ code: 0, signal: null });
  await expectOneOfEach();
  // At most the reconcile in flight (6 checks, 3 s), not a backlog of skipped ticks.
  expect(took).toBeLessThan(4_500);
}, 60_000);

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
  expect(p.output()).toMatch(/podiam: --iptables: no permission to change iptables rules \(needs root or the NET_ADMIN capability\)/);
  expect((await lab.podiamRules()).all).toEqual([]);
  // Nothing intercepts: the pod still reaches the metadata service.
  expect(await podSees()).toBe('node-role');
}, 30_000);

test('a node without ip6tables: IPv6 interception off, said once at start; IPv4 intercepted and ready', async () => {
  // A PATH with iptables but no ip6tables.
  const dir = path.join(lab.dir, 'v4only');
  const { mkdirSync, symlinkSync } = await import('node:fs');
  mkdirSync(dir, { recursive: true });
  for (const bin of ['iptables', 'iptables-save', 'conntrack']) symlinkSync(which(bin)!, path.join(dir, bin));
  const p = await start([], { ...lab.podiamEnv(), PATH: dir });
  expect(p.output().match(/IPv6 metadata interception is off/g)).toHaveLength(1);
  expect(await podSees()).toBe('app-role');
  expect((await lab.podiamRules('ipv6')).all).toEqual([]);
  const ready = JSON.parse((await p.get('/readyz')).body) as { iptables: unknown };
  expect(ready.iptables).toEqual({ ipv4: { dnat: 'present', guard: 'present' } });
}, 30_000);
