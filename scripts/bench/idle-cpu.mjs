#!/usr/bin/env node
/**
 * Idle CPU of podiam with --iptables on a node with 110 pods: before and after, side by side in
 * one run. The footprint scenario cannot run --iptables outside a network namespace, so this
 * runs in the node lab (test/support/lab.ts; root): a node namespace with 110 pods behind cali*
 * veths, the 110 pods in the Kubernetes test server, and a kube-proxy-sized nat table (300
 * services: 1,800 rules) next to podiam's rules, since iptables-nft reads the ruleset it checks.
 *
 *   before  BENCH_BEFORE_REF (default 54c93a9, the commit before this work), built once from
 *           `git archive` into node_modules/.cache/podiam-bench/idle-<ref>/ with the same build
 *   after   this work tree's dist/podiam.js
 *   (BENCH_IDLE_OTHER_NODE=<node binary>: before is this work tree too, on that Node: two Nodes, one run)
 *
 * Each is started as the image starts it (node --max-semi-space-size=2 --max-old-space-size=192,
 * the Dockerfile's ENTRYPOINT flags) with the DaemonSet's flags (--iptables, both families,
 * json logs), waits for /readyz, settles BENCH_IDLE_SETTLE seconds (default 30: V8's memory reducer
 * runs its GCs in the first ~20 s after start-up, which is start-up's cost, not idle's), then CPU time is
 * read from /proc/<pid>/stat (utime + stime + cutime + cstime: the iptables processes it ran and
 * reaped count), plus its children still running (the ruleset watch's nft monitor), over
 * BENCH_IDLE_SECONDS (default 60). Rounds alternate before/after
 * (BENCH_ROUNDS, default 3); each side reports its median, in CPU ms per second (= millicores).
 *
 *   npm run build && sudo node scripts/bench/idle-cpu.mjs        # with the image's Node (22)
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, NODE_IP, sleep } from '../../dist/test/support/lab.js';
import { shebangEnv } from '../../dist/test/support/podiam-process.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BEFORE_REF = process.env.BENCH_BEFORE_REF ?? '54c93a9';
const SECONDS = Number(process.env.BENCH_IDLE_SECONDS ?? 60);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const PODS = Number(process.env.BENCH_IDLE_PODS ?? 110);
const SETTLE = Number(process.env.BENCH_IDLE_SETTLE ?? 30);
// The image's ENTRYPOINT flags (scripts/build.mjs NODE_FLAGS; the manifests test keeps them in step).
const NODE_FLAGS = ['--max-semi-space-size=2', '--max-old-space-size=192', '--no-allocation-site-pretenuring'];
const TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
const log = (line) => process.stdout.write(`${line}\n`);

function buildBefore(ref) {
  const sha = execFileSync('git', ['rev-parse', '--short', ref], { cwd: ROOT }).toString().trim();
  const dir = path.join(ROOT, 'node_modules/.cache/podiam-bench', `idle-${sha}`);
  if (existsSync(path.join(dir, 'dist/podiam.js'))) return dir;
  log(`building ${sha} into ${path.relative(ROOT, dir)} (once)`);
  mkdirSync(dir, { recursive: true });
  execFileSync('tar', ['-x', '-C', dir], { input: execFileSync('git', ['archive', '--format=tar', sha], { cwd: ROOT, maxBuffer: 512 * 1024 * 1024 }) });
  if (!existsSync(path.join(dir, 'node_modules'))) symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { cwd: dir, stdio: 'inherit' });
  execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: dir, stdio: 'inherit' });
  return dir;
}

/** kube-proxy's shape: a KUBE-SERVICES jump from PREROUTING, per service a SVC and a SEP chain. */
function kubeProxyRules(services, family) {
  const L = ['*nat', ':KUBE-SERVICES - [0:0]', ':KUBE-MARK-MASQ - [0:0]'];
  for (let i = 1; i <= services; i++) L.push(`:KUBE-SVC-${i} - [0:0]`, `:KUBE-SEP-${i} - [0:0]`);
  L.push('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES');
  for (let i = 1; i <= services; i++) {
    const v4 = `${Math.floor(i / 250)}.${i % 250}`;
    const [svc, pod, to] = family === 'ipv4' ? [`10.96.${v4}/32`, `10.1.${v4}/32`, `10.1.${v4}:8080`] : [`fd00:96::${i.toString(16)}/128`, `fd00:1::${i.toString(16)}/128`, `[fd00:1::${i.toString(16)}]:8080`];
    L.push(`-A KUBE-SERVICES -d ${svc} -p tcp -m comment --comment "ns/svc-${i} cluster IP" -m tcp --dport 80 -j KUBE-SVC-${i}`);
    L.push(`-A KUBE-SVC-${i} -m comment --comment "ns/svc-${i}" -j KUBE-SEP-${i}`);
    L.push(`-A KUBE-SEP-${i} -s ${pod} -m comment --comment "ns/svc-${i}" -j KUBE-MARK-MASQ`);
    L.push(`-A KUBE-SEP-${i} -p tcp -m comment --comment "ns/svc-${i}" -m tcp -j DNAT --to-destination ${to}`);
  }
  L.push('COMMIT', '');
  return L.join('\n');
}

/** CPU ms of a process, the children it reaped, and the children still running (the nft monitor of the ruleset watch). */
function cpuMs(pid) {
  const fields = (p) => {
    const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  };
  const f = fields(pid);
  let ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const c = fields(entry);
      if (Number(c[1]) === pid) ticks += Number(c[11]) + Number(c[12]);
    } catch {
      // gone meanwhile
    }
  }
  return (ticks * 1000) / TICKS;
}

async function idleOnce(lab, name, cli, extra = [], node = process.execPath) {
  const argv = [node, ...NODE_FLAGS, cli, ...lab.podiamArgs(['--log-format=json', ...extra])];
  const p = lab.spawnIn(lab.nodeNs, `podiam ${name}`, argv, { ...lab.podiamEnv(), ...shebangEnv() });
  try {
    const deadline = Date.now() + 60_000;
    while ((await lab.curl(lab.nodeNs, `http://${NODE_IP}:8181/readyz`, { timeoutS: 2 })).status !== 200) {
      if (!p.running || Date.now() > deadline) throw new Error(`${name} did not get ready:\n${p.output()}`);
      await sleep(200);
    }
    const comm = readFileSync(`/proc/${p.pid}/comm`, 'utf8').trim();
    if (comm !== 'node') throw new Error(`pid ${p.pid} is ${comm}, not podiam's node`);
    await sleep(SETTLE * 1000);
    const t0 = Date.now();
    const c0 = cpuMs(p.pid);
    await sleep(SECONDS * 1000);
    const c1 = cpuMs(p.pid);
    return (c1 - c0) / ((Date.now() - t0) / 1000);
  } finally {
    await p.stop('SIGTERM', 10_000);
    const r = await lab.runCleanup();
    if (r.code !== 0) throw new Error(`podiam --cleanup: ${r.stderr}`);
  }
}

const median = (xs) => (xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]);

// BENCH_IDLE_OTHER_NODE=<node binary>: "before" is this work tree too, on that Node (e.g.
// /usr/bin/node, Node 20, next to the image's Node 22 running this script): one run, both Nodes.
const OTHER_NODE = process.env.BENCH_IDLE_OTHER_NODE;
const otherVersion = OTHER_NODE === undefined ? undefined : execFileSync(OTHER_NODE, ['--version']).toString().trim();
const beforeDir = OTHER_NODE === undefined ? buildBefore(BEFORE_REF) : ROOT;
const beforeLabel = OTHER_NODE === undefined ? BEFORE_REF : `this tree on Node ${otherVersion}`;
const afterLabel = OTHER_NODE === undefined ? 'after' : `this tree on Node ${process.version}`;
log(`lab: ${PODS} pods, 300 kube-proxy services; Node ${process.versions.node}; ${SETTLE} s settle, ${SECONDS} s per measurement, ${ROUNDS} rounds`);
const lab = await Lab.create({ pods: Array.from({ length: PODS }, (_, i) => ({ name: `p${i}`, role: `role-${i % 20}` })) });
try {
  for (const family of ['ipv4', 'ipv6']) {
    const rules = path.join(lab.dir, `kube-proxy-${family}.rules`);
    writeFileSync(rules, kubeProxyRules(300, family));
    const bin = family === 'ipv4' ? 'iptables-restore' : 'ip6tables-restore';
    const r = await lab.exec(lab.nodeNs, [bin, '-n', rules]);
    if (r.code !== 0) throw new Error(`${bin}: ${r.stderr}`);
  }
  const sides = { before: [], after: [] };
  // BENCH_IDLE_AFTER_ARGS: extra flags for "after" only (an experiment, e.g. --iptables-reconcile-interval=5m).
  const afterArgs = (process.env.BENCH_IDLE_AFTER_ARGS ?? '').split(' ').filter(Boolean);
  for (let round = 0; round < ROUNDS; round++) {
    const order = (round % 2 === 0 ? ['before', 'after'] : ['after', 'before']).filter((side) => process.env.BENCH_IDLE_ONLY === undefined || process.env.BENCH_IDLE_ONLY === side);
    for (const side of order) {
      const cli = side === 'before' ? path.join(beforeDir, 'dist/podiam.js') : path.join(ROOT, 'dist/podiam.js');
      const ms = await idleOnce(lab, side, cli, side === 'after' ? afterArgs : [], side === 'before' && OTHER_NODE !== undefined ? OTHER_NODE : process.execPath);
      sides[side].push(ms);
      log(`  round ${round + 1} ${side}: ${ms.toFixed(2)} CPU ms/s`);
    }
  }
  const result = { node: process.versions.node, pods: PODS, kubeProxyRulesPerFamily: 1201, seconds: SECONDS, beforeRef: beforeLabel, afterLabel, before: sides.before, after: sides.after, beforeMedian: median(sides.before), afterMedian: median(sides.after) };
  log(`\n| podiam, idle, --iptables, ${PODS} pods | CPU ms per second (millicores), median of ${ROUNDS} |\n|---|---|\n| before (${beforeLabel}) | ${result.beforeMedian.toFixed(2)} |\n| ${afterLabel} | ${result.afterMedian.toFixed(2)} |\n| ratio | ${(result.beforeMedian / result.afterMedian).toFixed(1)}x |`);
  mkdirSync(path.join(ROOT, 'bench-results'), { recursive: true });
  const file = path.join(ROOT, 'bench-results', `idle-cpu-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
  log(`results: ${path.relative(ROOT, file)}`);
} finally {
  await lab.destroy();
}
