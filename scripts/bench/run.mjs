#!/usr/bin/env node
/**
 * podiam's benchmarks, all in one run so ratios hold (same machine, same moment):
 *
 *   cached       credentials from memory at 1/32/128 connections vs a bare Node http server (the ceiling)
 *   first        each new pod's first credentials request: prefetched, and racing the pod's creation
 *   passthrough  a proxied metadata path via podiam vs straight to the (fake) IMDS
 *   memory       RSS after a minute of load with 110 pods on the node; RSS watching 10,000 pods cluster-wide
 *   footprint    before/after side by side, each started as its image starts it: RSS and time to the
 *                first credentials at 0, 110 and 10,000 pods (scripts/bench/footprint.mjs)
 *   sts          AssumeRole calls per role per refresh period, credentials shortened to 60 s by a rewriting proxy;
 *                and the same count at the real minimum session (--iam-role-session-ttl=15m), in real time
 *   scope        AssumeRole calls with several pods per role, --session-scope=pod vs role (scripts/bench/kube2iam.mjs)
 *   regexp       backtracking-shaped allowed-roles regexps: re2js (podiam) vs JavaScript RegExp, µs per decision
 *   profile      podiam under the cached and passthrough loads with --cpu-prof; top functions
 *   token        cached GET /v1/credentials (token identity) vs the cached IMDS credentials path, same podiam, same run
 *   scale        one node's agent among 5,000 namespaces, 50,000 ServiceAccounts and 10,000 pods, before/after:
 *                RSS, bytes downloaded at start, time to first credentials, cached req/s (scripts/bench/scale.mjs)
 *   broker       `podiam broker` with 100,000 pods, 50,000 ServiceAccounts, 5,000 namespaces and 1,000
 *                simulated agents: RSS and CPU (scripts/bench/broker.mjs)
 *   brokerAgent  the agent in broker mode next to standalone, 110 pods: RSS and the cached path
 *
 *   npm run bench                              # the full run (about 10 minutes)
 *   BENCH_QUICK=1 npm run bench                # short durations, for a smoke run (BENCH_ROUNDS=3 for medians)
 *   BENCH_ONLY=cached,passthrough npm run bench
 *
 * Everything listens on and is loaded on 127.0.0.0/8 only; every load is bounded in time and count.
 * Results: printed per scenario, and written to bench-results/<timestamp>.json and .md.
 * Load comes from scripts/bench/loadgen.mjs in its own process (it competes with the server for
 * the CPUs: 2 on the reference machine); autocannon cross-checks req/s at 32 connections.
 */
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FakeImds } from '../../dist/test/support/imds-server.js';
import { KubeApiServer } from '../../dist/test/support/kube-api-server.js';
import { Moto } from '../../dist/test/support/moto.js';
import { freePort } from '../../dist/test/support/net.js';
import { metricSum } from '../../dist/test/support/metrics-text.js';
import { CLI, PodiamProcess, awsTestEnv, nodeFlags as shebangFlags } from '../../dist/test/support/podiam-process.js';
import { StsProxy } from '../../dist/test/support/sts-proxy.js';
import { footprint, memory } from './footprint.mjs';
import { scale } from './scale.mjs';
import { realisticPod } from './pods.mjs';
import { summarize } from './profile-summary.mjs';
import { startExpiryRewriter } from './sts-expiry-rewriter.mjs';
import * as kube2iam from './kube2iam.mjs';
import * as broker from './broker.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const QUICK = process.env.BENCH_QUICK === '1';
const ONLY = (process.env.BENCH_ONLY ?? '').split(',').filter(Boolean);
const wants = (name) => ONLY.length === 0 || ONLY.includes(name);

const ACCOUNT = '123456789012';
const BASE_ARN = `arn:aws:iam::${ACCOUNT}:role/`;
const NODE = 'node-1';
const CRED_PATH = (role) => `/latest/meta-data/iam/security-credentials/${role}`;

const T = QUICK
  ? { rounds: Number(process.env.BENCH_ROUNDS ?? 1), loadMs: 3000, warmupMs: 500, memLoadMs: 10_000, stsTtlMs: 60_000, stsPeriods: 2, ttl15mLoadMs: 5000, cluster: 10_000, firstPods: 100, autocannonS: 3 }
  : { rounds: Number(process.env.BENCH_ROUNDS ?? 3), loadMs: 8000, warmupMs: 2000, memLoadMs: 60_000, stsTtlMs: 60_000, stsPeriods: 5, ttl15mLoadMs: 20_000, cluster: 10_000, firstPods: 100, autocannonS: 10 };
const CONNECTIONS = (process.env.BENCH_CONNECTIONS ?? '1,32,128').split(',').map(Number);

const started = new Date();
const stamp = started.toISOString().replace(/[:.]/g, '-');
const OUT = path.join(ROOT, 'bench-results');
mkdirSync(OUT, { recursive: true });

const results = { started: started.toISOString(), quick: QUICK, machine: machine(), scenarios: {} };

function machine() {
  const cpu = os.cpus();
  const git = (...args) => {
    try {
      return execFileSync('git', args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    } catch {
      return undefined;
    }
  };
  // What was measured: the commit, and whether src/ differed from it (the build is of the work tree).
  const commit = git('rev-parse', '--short', 'HEAD');
  const srcChanged = (git('status', '--porcelain', '--', 'src') ?? '').split('\n').filter(Boolean).length;
  return { nproc: os.availableParallelism(), cpuModel: cpu[0]?.model ?? 'unknown', node: process.version, kernel: os.release(), memGiB: Math.round(os.totalmem() / 2 ** 30), commit, srcFilesChanged: srcChanged };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log(...a);

// ---------------------------------------------------------------- process helpers

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** CPU time (user + system) a process has used, in ms. */
function cpuMs(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** CPU time the whole machine was busy (all CPUs, softirq and steal included), in ms. */
function machineBusyMs() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  return ((f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) * 1000) / CLK_TCK;
}


/** Runs the load generator in its own process; resolves with its JSON result. */
function loadgen(opts) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(HERE, 'loadgen.mjs'), JSON.stringify({ warmupMs: T.warmupMs, durationMs: T.loadMs, ...opts })], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const limit = setTimeout(() => child.kill('SIGKILL'), (opts.durationMs ?? T.loadMs) + (opts.warmupMs ?? T.warmupMs) + 30_000);
    child.on('exit', (code) => {
      clearTimeout(limit);
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()));
      } catch {
        reject(new Error(`loadgen exited ${code}: ${out}`));
      }
    });
  });
}

/** A load run with the server's CPU use measured beside it. */
async function measure(serverPid, opts) {
  const c0 = serverPid ? cpuMs(serverPid) : NaN;
  const b0 = machineBusyMs();
  const w0 = performance.now();
  const r = await loadgen(opts);
  const wall = performance.now() - w0;
  const serverMs = serverPid ? cpuMs(serverPid) - c0 : 0;
  if (serverPid) {
    r.serverCpuPct = Math.round((serverMs / wall) * 100);
    // The server's CPU per answered request (user + system, kernel TCP work included): steadier
    // than req/s on a shared machine, and what the ratio comes down to once the CPUs are full.
    r.serverUsPerReq = Math.round(((serverMs * 1000) / Math.max(1, r.totalResponses)) * 10) / 10;
  }
  r.loadgenCpuPct = Math.round((r.cpuMs / r.wallMs) * 100);
  // Everything else the machine did meanwhile: kernel softirq for loopback, this orchestrator,
  // and any other workload on the machine (a shared machine shows up here).
  r.restCpuPct = Math.round(((machineBusyMs() - b0 - serverMs - r.cpuMs) / wall) * 100);
  if (r.unexpected > 0 || r.errors > 0) log(`  warning: ${r.unexpected} unexpected statuses ${JSON.stringify(r.statuses)}, ${r.errors} socket errors`);
  return r;
}

function autocannon(url, connections, seconds) {
  return new Promise((resolve, reject) => {
    if (!/^http:\/\/127\./.test(url)) return reject(new Error('loopback only'));
    const bin = path.join(ROOT, 'node_modules/autocannon/autocannon.js');
    const child = spawn(process.execPath, [bin, '-c', String(connections), '-d', String(seconds), '--json', url], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const limit = setTimeout(() => child.kill('SIGKILL'), seconds * 1000 + 30_000);
    child.on('exit', () => {
      clearTimeout(limit);
      try {
        const j = JSON.parse(out);
        resolve({ rps: Math.round(j.requests.average), non2xx: j.non2xx, errors: j.errors });
      } catch {
        reject(new Error(`autocannon: ${out.slice(0, 500)}`));
      }
    });
  });
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * Waits (bounded) for the machine to be quiet before a measured run: the 2 CPUs may be shared
 * with other work, which shows up as busy time while none of ours is loaded. Gives the busy
 * percentage (of one CPU) seen last.
 */
async function quiet(maxWaitMs = QUICK ? 3000 : 45_000) {
  const t0 = performance.now();
  for (;;) {
    const b0 = machineBusyMs();
    await sleep(1000);
    const busyPct = Math.round((machineBusyMs() - b0) / 10);
    if (busyPct < 20 || performance.now() - t0 > maxWaitMs) return busyPct;
  }
}

/** A measured run after a quiet gate; a run disturbed by other work (rest of machine > 40% of a CPU) is redone, twice at most, and the quietest kept. */
async function quietRun(run) {
  let best;
  for (let attempt = 0; attempt < 3; attempt++) {
    const before = await quiet();
    const r = await run();
    r.busyBeforePct = before;
    r.attempts = attempt + 1;
    if (best === undefined || r.restCpuPct < best.restCpuPct) best = r;
    if (r.restCpuPct <= 40) break;
  }
  return best;
}

/**
 * Runs two loads in alternation, T.rounds times each (A B, B A, A B, ...), and gives each side's
 * median of every number: the machine is shared and noisy, and alternation keeps drift off the ratio.
 */
async function paired(a, b) {
  const runsA = [];
  const runsB = [];
  for (let i = 0; i < T.rounds; i++) {
    if (i % 2 === 0) {
      runsA.push(await quietRun(a));
      runsB.push(await quietRun(b));
    } else {
      runsB.push(await quietRun(b));
      runsA.push(await quietRun(a));
    }
  }
  const med = (runs) => {
    const out = { ...runs[0] };
    for (const k of ['rps', 'p50', 'p90', 'p99', 'max', 'serverCpuPct', 'serverUsPerReq', 'loadgenCpuPct', 'restCpuPct', 'unexpected', 'errors']) {
      if (typeof runs[0][k] === 'number') out[k] = Math.round(median(runs.map((r) => r[k])) * 1000) / 1000;
    }
    out.rounds = runs.map((r) => ({ rps: r.rps, p50: r.p50, p99: r.p99, serverUsPerReq: r.serverUsPerReq, restCpuPct: r.restCpuPct, attempts: r.attempts }));
    return out;
  };
  return [med(runsA), med(runsB)];
}

function startBare(bodyBytes) {
  return new Promise((resolve, reject) => {
    // BENCH_BARE_NODE_FLAGS (JSON list): the ceiling started with these Node/V8 flags (podiam's own, say), for a lever shown side by side.
    const flags = JSON.parse(process.env.BENCH_BARE_NODE_FLAGS ?? '[]');
    const child = spawn(process.execPath, [...flags, path.join(HERE, 'bare-server.mjs'), String(bodyBytes)], { stdio: ['ignore', 'pipe', 'inherit'] });
    child.stdout.on('data', (d) => {
      const m = /ready (\d+)/.exec(String(d));
      if (m) resolve({ pid: child.pid, port: Number(m[1]), stop: () => child.kill('SIGTERM') });
    });
    child.on('error', reject);
  });
}

// ---------------------------------------------------------------- the surroundings

log('starting moto, the fake IMDS and the STS counting proxy ...');
const moto = await Moto.start();
const sts = await StsProxy.start(moto.url);
const imds = await FakeImds.start();

async function freshKube() {
  const kube = await KubeApiServer.start({ omitListItemTypeMeta: true });
  kube.createNamespace({ metadata: { name: 'default' } });
  return kube;
}

const running = new Set();
/**
 * podiam as a child process. PodiamProcess (test/support) when no Node flags are needed; with
 * nodeFlags (--cpu-prof is not allowed in NODE_OPTIONS) the same CLI is spawned here, with the
 * same readiness wait, and wrapped in the few methods the bench uses.
 */
async function startPodiam(kube, { allNodes = false, extra = [], stsUrl = sts.url, env = {}, timeoutMs = 30_000, nodeFlags = [] } = {}) {
  const port = await freePort();
  const args = [
    `--app-port=${port}`,
    '--host-ip=127.0.0.1',
    `--metadata-addr=127.0.0.1:${imds.port}`,
    `--api-server=${kube.url}`,
    '--insecure',
    ...(allNodes ? [] : [`--node=${NODE}`]),
    `--base-role-arn=${BASE_ARN}`,
    '--log-format=json',
    ...extra,
  ];
  let p;
  if (nodeFlags.length === 0) {
    p = await PodiamProcess.start(args, { ...awsTestEnv(stsUrl), ...env }, { port, timeoutMs });
  } else {
    // After the shebang's flags, so a lever (--max-semi-space-size=8, say) replaces the shebang's value.
    const child = spawn(process.execPath, [...shebangFlags(), ...nodeFlags, CLI, ...args], { env: { ...awsTestEnv(stsUrl), ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    p = {
      child,
      port,
      request: (pth, opts = {}) => httpGet(port, pth, opts.fromIp),
      get: (pth, fromIp) => httpGet(port, pth, fromIp),
      stop: async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        await exited;
      },
    };
    const ready = await until(async () => (await p.get('/readyz').catch(() => ({ status: 0 }))).status === 200, timeoutMs, 50);
    if (ready === undefined) {
      child.kill('SIGKILL');
      throw new Error('podiam did not become ready');
    }
  }
  running.add(p);
  return p;
}
async function stopPodiam(p) {
  running.delete(p);
  await p.stop();
}

function httpGet(port, pth, fromIp) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: pth, localAddress: fromIp, agent: false, timeout: 10_000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function metricsOf(p) {
  const text = (await p.get('/metrics')).body;
  const get = (name, labels = {}) => metricSum(text, name, labels);
  return {
    issuedRequest: get('podiam_credentials_issued_total', { cause: 'request' }),
    issuedPrefetch: get('podiam_credentials_issued_total', { cause: 'prefetch' }),
    issuedRefresh: get('podiam_credentials_issued_total', { cause: 'refresh' }),
    hit: get('podiam_credential_cache_lookups_total', { result: 'hit' }),
    stale: get('podiam_credential_cache_lookups_total', { result: 'stale' }),
    miss: get('podiam_credential_cache_lookups_total', { result: 'miss' }),
    stsCalls: get('podiam_sts_assume_role_total'),
  };
}
/** podiam's own view of its memory (prom-client default metrics), in MB. */
async function heapOf(p) {
  const mb = async (name) => Math.round((await p.metric(name)) / 1e5) / 10;
  return { heapUsedMB: await mb('podiam_nodejs_heap_size_used_bytes'), heapTotalMB: await mb('podiam_nodejs_heap_size_total_bytes'), externalMB: await mb('podiam_nodejs_external_memory_bytes') };
}

const delta = (a, b) => Object.fromEntries(Object.keys(b).map((k) => [k, b[k] - a[k]]));

/** Polls until cond() holds, at most maxMs; resolves with the time it took or undefined. */
async function until(cond, maxMs, everyMs = 100) {
  const t0 = performance.now();
  while (performance.now() - t0 < maxMs) {
    if (await cond()) return Math.round(performance.now() - t0);
    await sleep(everyMs);
  }
  return undefined;
}

function percentiles(values) {
  const s = [...values].sort((a, b) => a - b);
  const at = (p) => Math.round(s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] * 1000) / 1000;
  return { n: s.length, p50: at(50), p99: at(99), max: at(100) };
}

const ip = (block, i) => `127.10.${block}.${(i % 250) + 2}`;

// ---------------------------------------------------------------- scenarios

async function cached() {
  log('\n== cached credentials: podiam vs a bare Node http server, same body size, same load');
  const kube = await freshKube();
  const podIp = ip(0, 0);
  kube.createPod(realisticPod({ name: 'cached-0', node: NODE, ip: podIp, role: 'bench-cached' }));
  // autocannon cannot bind a source address: this pod is the one at 127.0.0.1.
  kube.createPod(realisticPod({ name: 'localhost-0', node: NODE, ip: '127.0.0.1', role: 'bench-localhost' }));
  // BENCH_CACHED_NODE_FLAGS (JSON list): V8/Node flags for podiam on top of its shebang's, a lever measured against the same ceiling.
  const leverFlags = JSON.parse(process.env.BENCH_CACHED_NODE_FLAGS ?? '[]');
  const p = await startPodiam(kube, { nodeFlags: leverFlags });
  const first = await p.get(CRED_PATH('bench-cached'), podIp);
  if (first.status !== 200) throw new Error(`cached: ${first.status} ${first.body}`);
  const bodyBytes = Buffer.byteLength(first.body);
  const bare = await startBare(bodyBytes);
  const rows = [];
  for (const connections of CONNECTIONS) {
    const load = { connections, localAddresses: [podIp] };
    const [pod, base] = await paired(
      () => measure(p.child.pid, { ...load, port: p.port, path: CRED_PATH('bench-cached') }),
      () => measure(bare.pid, { ...load, port: bare.port, path: CRED_PATH('bench-cached') }),
    );
    const row = {
      connections,
      podiam: pod,
      bare: base,
      rpsRatio: Math.round((pod.rps / base.rps) * 100) / 100,
      p99Ratio: Math.round((pod.p99 / base.p99) * 100) / 100,
      // The req/s ratio each would reach alone on the same CPU: bare's CPU per request over podiam's.
      cpuRatio: Math.round((base.serverUsPerReq / pod.serverUsPerReq) * 100) / 100,
    };
    rows.push(row);
    log(`  c=${String(connections).padStart(3)}  podiam ${pod.rps} req/s p50 ${pod.p50} p99 ${pod.p99} ms (cpu ${pod.serverCpuPct}%, ${pod.serverUsPerReq} µs/req)  |  bare ${base.rps} req/s p50 ${base.p50} p99 ${base.p99} ms (cpu ${base.serverCpuPct}%, ${base.serverUsPerReq} µs/req)  |  ratio ${row.rpsRatio} (by CPU/req ${row.cpuRatio})  (rest of machine ${pod.restCpuPct}%/${base.restCpuPct}%)`);
  }
  const ac = {
    podiam: await autocannon(`http://127.0.0.1:${p.port}${CRED_PATH('bench-localhost')}`, 32, T.autocannonS),
    bare: await autocannon(`http://127.0.0.1:${bare.port}/`, 32, T.autocannonS),
  };
  ac.ratio = Math.round((ac.podiam.rps / ac.bare.rps) * 100) / 100;
  log(`  autocannon c=32 cross-check: podiam ${ac.podiam.rps} req/s, bare ${ac.bare.rps} req/s, ratio ${ac.ratio}`);
  bare.stop();
  await stopPodiam(p);
  await kube.stop();
  return { node: process.version, podiamNodeFlags: [...shebangFlags(), ...leverFlags], bodyBytes, rows, autocannon32: ac };
}

async function first() {
  log(`\n== first request of a new pod (${T.firstPods} pods, each with its own role)`);
  const kube = await freshKube();
  const p = await startPodiam(kube);
  const out = {};
  for (const mode of ['prefetched', 'again (control)', 'racing']) {
    const block = mode === 'racing' ? 2 : 1;
    const roles = [];
    const m0 = await metricsOf(p);
    sts.reset();
    const latencies = [];
    let bad = 0;
    let prefetchWaitMs;
    const ask = async (i, role) => {
      const t0 = performance.now();
      const r = await p.request(CRED_PATH(role), { fromIp: ip(block, i) });
      latencies.push(performance.now() - t0);
      if (r.status !== 200) bad++;
    };
    const busyBeforePct = await quiet();
    if (mode === 'prefetched') {
      for (let i = 0; i < T.firstPods; i++) {
        const role = `first-${mode}-${i}`;
        roles.push(role);
        kube.createPod(realisticPod({ name: `${mode}-${i}`, node: NODE, ip: ip(block, i), role, index: i }));
      }
      prefetchWaitMs = await until(async () => (await metricsOf(p)).issuedPrefetch - m0.issuedPrefetch >= T.firstPods, 60_000);
      for (let i = 0; i < T.firstPods; i++) await ask(i, roles[i]);
    } else if (mode === 'again (control)') {
      // The same pods' second request, made the same way (a new connection each): what the
      // client, the connection and a cached answer cost here, without anything first-time.
      for (let i = 0; i < T.firstPods; i++) {
        roles.push(`first-prefetched-${i}`);
        await ask(i, roles[i]);
      }
    } else {
      // The pod-start race: the pod's first request right after it is created, before podiam
      // may have heard of it (pod wait) and while its prefetch is in flight.
      for (let i = 0; i < T.firstPods; i++) {
        const role = `first-${mode}-${i}`;
        roles.push(role);
        kube.createPod(realisticPod({ name: `${mode}-${i}`, node: NODE, ip: ip(block, i), role, index: i }));
        await ask(i, role);
      }
    }
    const d = delta(m0, await metricsOf(p));
    const perRole = roles.map((r) => sts.countFor(BASE_ARN + r));
    out[mode] = {
      ...percentiles(latencies),
      non200: bad,
      prefetchWaitMs,
      busyBeforePct,
      issuedByCause: { request: d.issuedRequest, prefetch: d.issuedPrefetch, refresh: d.issuedRefresh },
      stsCalls: perRole.reduce((a, b) => a + b, 0),
      stsCallsPerRoleMax: Math.max(...perRole),
    };
    const o = out[mode];
    log(`  ${mode.padEnd(16)} p50 ${o.p50} p99 ${o.p99} max ${o.max} ms  non-200 ${o.non200}  issued request/prefetch ${o.issuedByCause.request}/${o.issuedByCause.prefetch}  STS calls ${o.stsCalls} (max ${o.stsCallsPerRoleMax}/role)${prefetchWaitMs !== undefined ? `  prefetch of all took ${prefetchWaitMs} ms` : ''}`);
  }
  await stopPodiam(p);
  await kube.stop();
  return out;
}

async function passthrough() {
  log('\n== passthrough: /latest/meta-data/instance-id via podiam vs straight to the fake IMDS');
  const kube = await freshKube();
  const p = await startPodiam(kube);
  const rows = [];
  const target = '/latest/meta-data/instance-id';
  // The fake IMDS answers `Keep-Alive: timeout=1` (its keepAliveTimeout is 1 s), and Node's
  // http.Agent does not reuse a connection whose server hint is that short: podiam then opens a
  // TCP connection per forwarded request. Both are measured: the fake as the tests run it, and
  // with a 65 s keep-alive, where podiam's upstream connections are reused.
  const server = imds.server;
  const original = server.keepAliveTimeout;
  for (const upstreamKeepAlive of ['1 s (fake as in tests)', '65 s']) {
    server.keepAliveTimeout = upstreamKeepAlive === '65 s' ? 65_000 : original;
    for (const connections of [1, 32]) {
      const [via, direct] = await paired(
        () => measure(p.child.pid, { connections, port: p.port, path: target }).finally(() => (imds.requests.length = 0)),
        () => measure(undefined, { connections, port: imds.port, path: target }).finally(() => (imds.requests.length = 0)),
      );
      const row = { upstreamKeepAlive, connections, via, direct, addedP50: Math.round((via.p50 - direct.p50) * 1000) / 1000, addedP99: Math.round((via.p99 - direct.p99) * 1000) / 1000 };
      rows.push(row);
      log(`  upstream keep-alive ${upstreamKeepAlive}, c=${String(connections).padStart(3)}  via podiam p50 ${via.p50} p99 ${via.p99} ms ${via.rps} req/s (${via.serverUsPerReq} µs/req)  |  direct p50 ${direct.p50} p99 ${direct.p99} ms ${direct.rps} req/s  |  added p50 ${row.addedP50} ms`);
    }
  }
  server.keepAliveTimeout = original;
  await stopPodiam(p);
  await kube.stop();
  return { rows };
}

async function memory110() {
  log(`\n== memory: 110 pods on the node, ${T.memLoadMs / 1000} s of credential requests from all of them`);
  // What podiam weighs with nothing to watch: the modules and the runtime.
  const empty = await freshKube();
  const p0 = await startPodiam(empty);
  await sleep(2000);
  const baseline = { ...memory(p0.child.pid), ...(await heapOf(p0)) };
  await stopPodiam(p0);
  await empty.stop();
  log(`  no pods: RSS ${baseline.rssMB} MB (heap used ${baseline.heapUsedMB} MB)`);
  const kube = await freshKube();
  const roles = [];
  for (let i = 0; i < 110; i++) {
    const role = `mem-role-${i % 20}`;
    roles.push(role);
    kube.createPod(realisticPod({ name: `mem-${i}`, node: NODE, ip: ip(3, i), role, index: i }));
  }
  const p = await startPodiam(kube);
  await until(async () => (await metricsOf(p)).issuedPrefetch >= 110, 60_000);
  await sleep(1000);
  const idle = memory(p.child.pid);
  const load = await measure(p.child.pid, {
    connections: 110,
    port: p.port,
    warmupMs: 0,
    durationMs: T.memLoadMs,
    localAddresses: roles.map((_, i) => ip(3, i)),
    paths: roles.map((r) => CRED_PATH(r)),
  });
  const after = { ...memory(p.child.pid), ...(await heapOf(p)) };
  log(`  RSS idle ${idle.rssMB} MB, after load ${after.rssMB} MB (peak ${after.hwmMB} MB, heap used ${after.heapUsedMB} MB); load ${load.rps} req/s p99 ${load.p99} ms`);
  await stopPodiam(p);
  await kube.stop();
  return { pods: 110, loadMs: T.memLoadMs, baseline, idle, after, load: { rps: load.rps, p50: load.p50, p99: load.p99, requests: load.requests, unexpected: load.unexpected } };
}

async function memory10k() {
  const n = T.cluster;
  const nodes = 100;
  log(`\n== memory: ${n} pods on ${nodes} nodes watched cluster-wide (no --node)`);
  const kube = await freshKube();
  for (let ns = 0; ns < 20; ns++) kube.createNamespace({ metadata: { name: `team-${ns}`, annotations: { 'iam.amazonaws.com/allowed-roles': '["*"]' } } });
  for (let i = 0; i < n; i++) {
    kube.createPod(
      realisticPod({ name: `svc-${i % 400}-${i}`, namespace: `team-${i % 20}`, node: `node-${i % nodes}`, ip: `127.20.${Math.floor(i / 250)}.${(i % 250) + 2}`, role: `svc-role-${i % 50}`, index: i }),
    );
  }
  const listBytes = JSON.stringify(kube.listPods()).length;
  log(`  ${n} pods created (${Math.round(listBytes / 1024 / 1024)} MB of JSON, ${Math.round(listBytes / n)} bytes a pod)`);
  sts.reset();
  const t0 = performance.now();
  const p = await startPodiam(kube, { allNodes: true, timeoutMs: 120_000 });
  const readyMs = Math.round(performance.now() - t0);
  const atReady = { ...memory(p.child.pid), ...(await heapOf(p)) };
  // Every pod with a role is prefetched: n AssumeRole calls. Wait for them (bounded).
  let last = -1;
  let stableSince = performance.now();
  const settled = await until(
    async () => {
      const issued = (await metricsOf(p)).issuedPrefetch;
      if (issued !== last) {
        last = issued;
        stableSince = performance.now();
      }
      return issued >= n || performance.now() - stableSince > 15_000;
    },
    QUICK ? 120_000 : 300_000,
    1000,
  );
  await sleep(3000);
  const after = { ...memory(p.child.pid), ...(await heapOf(p)) };
  const m = await metricsOf(p);
  const failures = await p.metric('podiam_credential_refresh_failures_total');
  log(`  ready after ${readyMs} ms, RSS at ready ${atReady.rssMB} MB; ${m.issuedPrefetch} credentials prefetched (${settled ?? 'not settled'} ms); RSS ${after.rssMB} MB (peak ${after.hwmMB} MB, heap used ${after.heapUsedMB} MB); ${failures} failed fetches`);
  await stopPodiam(p);
  await kube.stop();
  return { pods: n, nodes, bytesPerPod: Math.round(listBytes / n), readyMs, atReady, prefetched: m.issuedPrefetch, prefetchMs: settled, failures, after, stsCalls: sts.calls.length };
}

async function stsEconomy() {
  const ttl = T.stsTtlMs;
  const periodMs = ttl / 2; // podiam refreshes at min(20 min, lifetime/2) before expiry
  const loadMs = periodMs * T.stsPeriods;
  log(`\n== STS economy: credentials rewritten to live ${ttl / 1000} s (refresh every ${periodMs / 1000} s), ${loadMs / 1000} s of load, 5 roles`);
  const rewriter = await startExpiryRewriter(moto.url, ttl);
  const counting = await StsProxy.start(rewriter.url);
  const kube = await freshKube();
  const roles = [];
  for (let i = 0; i < 5; i++) {
    roles.push(`econ-role-${i}`);
    kube.createPod(realisticPod({ name: `econ-${i}`, node: NODE, ip: ip(4, i), role: roles[i], index: i }));
  }
  const p = await startPodiam(kube, { stsUrl: counting.url });
  await until(async () => (await metricsOf(p)).issuedPrefetch >= 5, 30_000);
  const m0 = await metricsOf(p);
  counting.reset();
  const load = await measure(p.child.pid, { connections: 5, port: p.port, warmupMs: 0, durationMs: loadMs, localAddresses: roles.map((_, i) => ip(4, i)), paths: roles.map(CRED_PATH) });
  const d = delta(m0, await metricsOf(p));
  const perRole = roles.map((r) => counting.countFor(BASE_ARN + r));
  const periods = loadMs / periodMs;
  const short = {
    ttlMs: ttl,
    periodMs,
    loadMs,
    periods,
    callsPerRole: perRole,
    callsPerRolePerPeriod: Math.round((Math.max(...perRole) / periods) * 100) / 100,
    issuedByCause: { request: d.issuedRequest, prefetch: d.issuedPrefetch, refresh: d.issuedRefresh },
    lookups: { hit: d.hit, stale: d.stale, miss: d.miss },
    load: { rps: load.rps, p50: load.p50, p99: load.p99, max: load.max, requests: load.requests, unexpected: load.unexpected },
  };
  log(`  AssumeRole per role: ${perRole.join(', ')} over ${periods} periods -> ${short.callsPerRolePerPeriod} per role per period (max); issued request/refresh ${d.issuedRequest}/${d.issuedRefresh}; lookups hit/stale/miss ${d.hit}/${d.stale}/${d.miss}; load p99 ${load.p99} max ${load.max} ms`);
  await stopPodiam(p);
  await kube.stop();
  await counting.stop();
  await rewriter.stop();

  // The same question without any rewriting: the shortest session podiam accepts, in real time.
  log(`== STS economy at --iam-role-session-ttl=15m (real time, ${T.ttl15mLoadMs / 1000} s, 1 role)`);
  const kube2 = await freshKube();
  kube2.createPod(realisticPod({ name: 'ttl15-0', node: NODE, ip: ip(4, 100), role: 'ttl15-role' }));
  const p2 = await startPodiam(kube2, { extra: ['--iam-role-session-ttl=15m'] });
  await until(async () => (await metricsOf(p2)).issuedPrefetch >= 1, 30_000);
  const n0 = await metricsOf(p2);
  sts.reset();
  const load2 = await measure(p2.child.pid, { connections: 1, port: p2.port, warmupMs: 0, durationMs: T.ttl15mLoadMs, localAddresses: [ip(4, 100)], paths: [CRED_PATH('ttl15-role')] });
  const d2 = delta(n0, await metricsOf(p2));
  const ttl15 = {
    loadMs: T.ttl15mLoadMs,
    stsCalls: sts.countFor(BASE_ARN + 'ttl15-role'),
    issuedByCause: { request: d2.issuedRequest, refresh: d2.issuedRefresh },
    lookups: { hit: d2.hit, stale: d2.stale, miss: d2.miss },
    load: { rps: load2.rps, p50: load2.p50, p99: load2.p99, requests: load2.requests },
  };
  log(`  AssumeRole calls in ${T.ttl15mLoadMs / 1000} s: ${ttl15.stsCalls} (issued on the request path ${d2.issuedRequest}); lookups hit/stale/miss ${d2.hit}/${d2.stale}/${d2.miss}; ${load2.rps} req/s p50 ${load2.p50} ms`);
  await stopPodiam(p2);
  await kube2.stop();
  return { short, ttl15 };
}

async function profile() {
  log('\n== profile: podiam with --cpu-prof under the cached (c=32) and passthrough (c=32) loads');
  const dir = path.join(OUT, `${stamp}-profiles`);
  mkdirSync(dir, { recursive: true });
  const out = {};
  for (const kind of ['cached', 'passthrough']) {
    const kube = await freshKube();
    const podIp = ip(0, 0);
    kube.createPod(realisticPod({ name: 'prof-0', node: NODE, ip: podIp, role: 'bench-prof' }));
    const sub = path.join(dir, kind);
    // Passthrough with upstream keep-alive (see passthrough()), so the profile shows the steady state.
    const keepAlive = imds.server.keepAliveTimeout;
    if (kind === 'passthrough') imds.server.keepAliveTimeout = 65_000;
    const p = await startPodiam(kube, { nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${sub}`] });
    await p.get(CRED_PATH('bench-prof'), podIp);
    const load = kind === 'cached' ? { localAddresses: [podIp], path: CRED_PATH('bench-prof') } : { path: '/latest/meta-data/instance-id' };
    const r = await measure(p.child.pid, { connections: 32, port: p.port, ...load });
    imds.requests.length = 0;
    imds.server.keepAliveTimeout = keepAlive;
    await stopPodiam(p);
    await kube.stop();
    await sleep(500);
    const file = readdirSync(sub).find((f) => f.endsWith('.cpuprofile'));
    if (file === undefined) {
      log(`  ${kind}: no profile written`);
      continue;
    }
    const s = summarize(path.join(sub, file), 15);
    out[kind] = { file: path.relative(ROOT, path.join(sub, file)), rps: r.rps, ...s };
    log(`  ${kind}: ${r.rps} req/s under the profiler; ${s.samples} samples, idle ${s.idlePct}%; top self time:`);
    for (const x of s.self.slice(0, 12)) log(`    ${String(x.pct).padStart(5)}%  ${x.fn}`);
  }
  return out;
}

/**
 * Token identity's hot path against the IMDS one, in one podiam: the same pod, the same cached
 * credentials; the token path also hashes the token and looks its verdict up per request.
 */
async function token() {
  log('\n== token identity: cached GET /v1/credentials vs cached IMDS credentials (same podiam, alternated)');
  const kube = await freshKube();
  const podIp = ip(2, 0);
  const pod = kube.createPod(realisticPod({ name: 'token-0', node: NODE, ip: podIp, role: 'bench-token' }));
  const { namespace, name } = pod.metadata;
  const serviceAccount = pod.spec.serviceAccountName;
  kube.createServiceAccount({ metadata: { name: serviceAccount, namespace } });
  const tokenPort = await freePort();
  const p = await startPodiam(kube, { extra: ['--token-identity', `--token-addr=127.0.0.1:${tokenPort}`] });
  const bearer = kube.tokenApi.issue({ namespace, serviceAccount, pod: name, audiences: ['pods.eks.amazonaws.com'], expirationSeconds: 86400 });
  const warm = await new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: tokenPort, path: '/v1/credentials', headers: { Authorization: bearer }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    }).on('error', reject);
  });
  if (warm !== 200) throw new Error(`token: first request answered ${warm}`);
  if ((await p.get(CRED_PATH('bench-token'), podIp)).status !== 200) throw new Error('token: IMDS path not 200');
  const reviewsBefore = kube.tokenApi.reviews;
  const rows = [];
  for (const connections of CONNECTIONS.filter((c) => c !== 128)) {
    const [tok, imdsPath] = await paired(
      () => measure(p.child.pid, { connections, localAddresses: [podIp], port: tokenPort, path: '/v1/credentials', headers: { Authorization: bearer } }),
      () => measure(p.child.pid, { connections, localAddresses: [podIp], port: p.port, path: CRED_PATH('bench-token') }),
    );
    const row = { connections, token: tok, imds: imdsPath, rpsRatio: Math.round((tok.rps / imdsPath.rps) * 100) / 100, cpuRatio: Math.round((imdsPath.serverUsPerReq / tok.serverUsPerReq) * 100) / 100 };
    rows.push(row);
    log(`  c=${String(connections).padStart(3)}  token ${tok.rps} req/s p50 ${tok.p50} p99 ${tok.p99} ms (${tok.serverUsPerReq} µs/req)  |  imds ${imdsPath.rps} req/s p50 ${imdsPath.p50} p99 ${imdsPath.p99} ms (${imdsPath.serverUsPerReq} µs/req)  |  ratio ${row.rpsRatio} (by CPU/req ${row.cpuRatio})  (rest of machine ${tok.restCpuPct}%/${imdsPath.restCpuPct}%)`);
  }
  const reviews = kube.tokenApi.reviews - reviewsBefore;
  log(`  TokenReviews during the load: ${reviews}`);
  await stopPodiam(p);
  await kube.stop();
  return { rows, reviewsDuringLoad: reviews };
}

// ---------------------------------------------------------------- report

function markdown(r) {
  const L = [];
  const m = r.machine;
  L.push(`# podiam bench ${r.started}${r.quick ? ' (BENCH_QUICK)' : ''}`, '');
  L.push(`Machine: ${m.nproc} CPUs (${m.cpuModel}), ${m.memGiB} GiB, Node ${m.node}, Linux ${m.kernel}. podiam at ${m.commit}${m.srcFilesChanged ? ` with ${m.srcFilesChanged} files in src/ changed in the work tree` : ''}.`, '');
  const s = Object.fromEntries(Object.entries(r.scenarios).filter(([, v]) => v.error === undefined));
  for (const [name, v] of Object.entries(r.scenarios)) if (v.error !== undefined) L.push(`**${name} failed:** ${v.error}`, '');
  if (s.cached) {
    L.push(`## Cached credentials (${s.cached.bodyBytes}-byte body; Node ${s.cached.node}, podiam and the bare server alike; podiam's flags ${s.cached.podiamNodeFlags.join(' ')})`, '');
    L.push('| connections | podiam req/s | p50 ms | p99 ms | podiam µs CPU/req | bare req/s | p50 ms | p99 ms | bare µs CPU/req | req/s ratio | CPU/req ratio | p99 ratio |', '|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const x of s.cached.rows) L.push(`| ${x.connections} | ${x.podiam.rps} | ${x.podiam.p50} | ${x.podiam.p99} | ${x.podiam.serverUsPerReq} | ${x.bare.rps} | ${x.bare.p50} | ${x.bare.p99} | ${x.bare.serverUsPerReq} | ${x.rpsRatio} | ${x.cpuRatio} | ${x.p99Ratio} |`);
    const ac = s.cached.autocannon32;
    L.push('', `autocannon cross-check, 32 connections: podiam ${ac.podiam.rps} req/s, bare ${ac.bare.rps} req/s, ratio ${ac.ratio}.`, '');
  }
  if (s.first) {
    L.push('## First request of a new pod', '');
    L.push('| mode | pods | p50 ms | p99 ms | max ms | non-200 | issued on request path | issued by prefetch | AssumeRole calls (max per role) |', '|---|---|---|---|---|---|---|---|---|');
    for (const [mode, x] of Object.entries(s.first)) L.push(`| ${mode} | ${x.n} | ${x.p50} | ${x.p99} | ${x.max} | ${x.non200} | ${x.issuedByCause.request} | ${x.issuedByCause.prefetch} | ${x.stsCalls} (${x.stsCallsPerRoleMax}) |`);
    L.push('');
  }
  if (s.passthrough) {
    L.push('## Passthrough (/latest/meta-data/instance-id)', '');
    L.push('| upstream keep-alive | connections | via podiam p50 ms | p99 ms | req/s | podiam µs/req | direct p50 ms | p99 ms | req/s | added p50 ms | added p99 ms |', '|---|---|---|---|---|---|---|---|---|---|---|');
    for (const x of s.passthrough.rows) L.push(`| ${x.upstreamKeepAlive} | ${x.connections} | ${x.via.p50} | ${x.via.p99} | ${x.via.rps} | ${x.via.serverUsPerReq} | ${x.direct.p50} | ${x.direct.p99} | ${x.direct.rps} | ${x.addedP50} | ${x.addedP99} |`);
    L.push('');
  }
  if (s.memory110 || s.memory10k) {
    L.push('## Memory (VmRSS)', '');
    L.push('| case | RSS MB | peak (VmHWM) MB | notes |', '|---|---|---|---|');
    if (s.memory110) {
      const x = s.memory110;
      L.push(`| no pods (modules and runtime) | ${x.baseline.rssMB} | ${x.baseline.hwmMB} | heap used ${x.baseline.heapUsedMB} MB |`);
      L.push(`| 110 pods on the node, idle | ${x.idle.rssMB} | ${x.idle.hwmMB} | |`);
      L.push(`| 110 pods on the node, after ${x.loadMs / 1000} s of load | ${x.after.rssMB} | ${x.after.hwmMB} | heap used ${x.after.heapUsedMB} MB; ${x.load.requests} requests, ${x.load.rps} req/s |`);
    }
    if (s.memory10k) {
      const x = s.memory10k;
      L.push(`| ${x.pods} pods cluster-wide, at ready | ${x.atReady.rssMB} | ${x.atReady.hwmMB} | heap used ${x.atReady.heapUsedMB} MB; ${x.bytesPerPod} bytes of JSON a pod, ready after ${x.readyMs} ms |`);
      L.push(`| ${x.pods} pods cluster-wide, settled | ${x.after.rssMB} | ${x.after.hwmMB} | heap used ${x.after.heapUsedMB} MB; ${x.prefetched} credentials prefetched (settled after ${x.prefetchMs ?? '(not settled)'} ms), ${x.failures} failed fetches |`);
    }
    L.push('');
  }
  if (s.footprint) {
    L.push(`## Footprint: before/after, each started as its image starts it (${s.footprint.starts} starts per timing, median)`, '');
    L.push(s.footprint.table);
  }
  if (s.sts) {
    const x = s.sts.short;
    L.push('## STS economy', '');
    L.push('| case | duration | AssumeRole per role | per role per refresh period | issued request/refresh | lookups hit/stale/miss | load p50/p99/max ms |', '|---|---|---|---|---|---|---|');
    L.push(`| ${x.ttlMs / 1000} s credentials (rewritten), 5 roles | ${x.loadMs / 1000} s = ${x.periods} periods | ${x.callsPerRole.join(', ')} | ${x.callsPerRolePerPeriod} | ${x.issuedByCause.request}/${x.issuedByCause.refresh} | ${x.lookups.hit}/${x.lookups.stale}/${x.lookups.miss} | ${x.load.p50}/${x.load.p99}/${x.load.max} |`);
    const y = s.sts.ttl15;
    L.push(`| --iam-role-session-ttl=15m, real time, 1 role | ${y.loadMs / 1000} s | ${y.stsCalls} | (period 7.5 min) | ${y.issuedByCause.request}/${y.issuedByCause.refresh} | ${y.lookups.hit}/${y.lookups.stale}/${y.lookups.miss} | ${y.load.p50}/${y.load.p99}/- |`);
    L.push('');
  }
  if (s.token) {
    L.push('## Token identity: cached /v1/credentials vs cached IMDS credentials (same podiam)', '');
    L.push('| connections | token req/s | p50 ms | p99 ms | µs CPU/req | IMDS req/s | p50 ms | p99 ms | µs CPU/req | req/s ratio | CPU/req ratio |', '|---|---|---|---|---|---|---|---|---|---|---|');
    for (const r of s.token.rows) L.push(`| ${r.connections} | ${r.token.rps} | ${r.token.p50} | ${r.token.p99} | ${r.token.serverUsPerReq} | ${r.imds.rps} | ${r.imds.p50} | ${r.imds.p99} | ${r.imds.serverUsPerReq} | ${r.rpsRatio} | ${r.cpuRatio} |`);
    L.push('', `TokenReviews during the load: ${s.token.reviewsDuringLoad}`, '');
  }
  if (s.profile) {
    L.push('## Profiles (podiam, 32 connections, top self time)', '');
    for (const [kind, x] of Object.entries(s.profile)) {
      L.push(`${kind} (${x.rps} req/s under the profiler, idle ${x.idlePct}%, \`${x.file}\`):`, '');
      for (const f of x.self.slice(0, 12)) L.push(`- ${f.pct}% ${f.fn}`);
      L.push('', 'podiam functions, inclusive:', '');
      for (const f of x.podiamInclusive.slice(0, 8)) L.push(`- ${f.pct}% ${f.fn}`);
      L.push('');
    }
  }
  if (s.scale) {
    L.push(`## Scale: one node's agent among 5,000 namespaces, 50,000 ServiceAccounts, 10,000 pods (before ${s.scale.beforeRef} / after, median)`, '');
    L.push(s.scale.table, '');
  }
  kube2iam.markdownSections(s, L);
  broker.markdownSections(s, L);
  return L.join('\n') + '\n';
}

function save() {
  writeFileSync(path.join(OUT, `${stamp}.json`), JSON.stringify(results, null, 2) + '\n');
  // scripts/bench/nodes.mjs reads each Node's results from here.
  if (process.env.BENCH_RESULT_FILE) writeFileSync(process.env.BENCH_RESULT_FILE, JSON.stringify(results, null, 2) + '\n');
  writeFileSync(path.join(OUT, `${stamp}.md`), markdown(results));
}

function footprintScenario() {
  log('\n== footprint: before/after, started as the image starts them (RSS, time to first credentials at 0, 110 and 10,000 pods)');
  return footprint({ root: ROOT, quick: QUICK, log, sleep, until, freePort, awsTestEnv, stsUrl: sts.url, imdsPort: imds.port, freshKube, realisticPod, measure, metricsOf, memLoadMs: T.memLoadMs });
}

const kube2iamCtx = () => ({ T: { ...T, quick: QUICK }, log, moto, freshKube, startPodiam, stopPodiam, metricsOf, until, measure, ip, NODE, BASE_ARN, CRED_PATH });
function scaleScenario() {
  log('\n== scale: one node among 5,000 namespaces, 50,000 ServiceAccounts, 10,000 pods, before/after (RSS, bytes at start, first credentials, cached req/s)');
  return scale({ root: ROOT, quick: QUICK, log, sleep, freePort, awsTestEnv, stsUrl: sts.url, imdsPort: imds.port, KubeApiServer, realisticPod, measure });
}

const brokerCtx = () => ({ log, quick: QUICK, sleep, until, freePort, measure, paired, cpuMs, ip, NODE, BASE_ARN, CRED_PATH, awsTestEnv, stsUrl: sts.url, imdsPort: imds.port, memLoadMs: QUICK ? 5000 : 20_000 });
const SCENARIOS = { cached, first, passthrough, memory110, memory10k, footprint: footprintScenario, sts: stsEconomy, scope: () => kube2iam.scope(kube2iamCtx()), regexp: () => kube2iam.regexp(kube2iamCtx()), profile, token, scale: scaleScenario, broker: () => broker.brokerScale(brokerCtx()), brokerAgent: () => broker.brokerAgent(brokerCtx()) };
let failed = false;
try {
  log(`podiam bench${QUICK ? ' (quick)' : ''}: ${JSON.stringify(results.machine)}`);
  for (const [name, fn] of Object.entries(SCENARIOS)) {
    if (!wants(name) && !(name.startsWith('memory') && wants('memory'))) continue;
    try {
      results.scenarios[name] = await fn();
    } catch (err) {
      failed = true;
      log(`  ${name} failed: ${err.stack ?? err}`);
      results.scenarios[name] = { error: String(err) };
    }
    save();
  }
} finally {
  for (const p of running) await p.stop().catch(() => undefined);
  await sts.stop();
  await imds.stop();
  await moto.stop();
}
log(`\nresults: bench-results/${stamp}.json and bench-results/${stamp}.md`);
process.exit(failed ? 1 : 0);
