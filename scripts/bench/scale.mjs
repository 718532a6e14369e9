/**
 * The scale scenario of `npm run bench` (issue 19): one node's agent in a big cluster, before and
 * after, side by side in one run, each started as its image starts it.
 *
 *   cluster   5,000 namespaces and 50,000 ServiceAccounts as `kubectl apply` leaves them
 *             (managedFields and the last-applied annotation), 10,000 pods on 100 other nodes,
 *             110 pods on this node (in 22 of the namespaces, roles from their ServiceAccounts
 *             for half of them)
 *   baseline  the same 110 pods, their 22 namespaces and those namespaces' ServiceAccounts only
 *
 * Per variant and cluster: time to the first credentials (from the process's start to the first
 * 200 on a pod's credentials path), bytes the API server sent until then and until settled,
 * RSS settled 15 s after. And the cached credentials req/s of each variant (one pod, 32
 * connections), so the change costs the hot path nothing. kube2iam's download in the same
 * cluster is modelled by its two lists (this node's pods and every namespace, full objects).
 *
 *   before  the bundle of BENCH_SCALE_BEFORE_REF (default: the main this work started from),
 *           built once into node_modules/.cache/podiam-bench/ from `git archive`
 *   after   this work tree's dist/podiam.js
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { asImageStarts, get as footprintGet, imageEnv, memory } from './footprint.mjs';

export const DEFAULT_SCALE_BEFORE_REF = '54c93a9';

/** The bundle of `ref` (tsc + scripts/build.mjs), made once. */
function buildBundle(root, ref, log) {
  const sha = execFileSync('git', ['rev-parse', '--short', ref], { cwd: root }).toString().trim();
  const dir = path.join(root, 'node_modules/.cache/podiam-bench', `scale-before-${sha}`);
  if (existsSync(path.join(dir, 'dist/podiam.js')) && existsSync(path.join(dir, '.built'))) return { dir, sha };
  log(`  building "before" (${sha}) into ${path.relative(root, dir)} ...`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const tar = execFileSync('git', ['archive', '--format=tar', sha, 'src', 'scripts/build.mjs', 'package.json', 'tsconfig.json', 'tsconfig.build.json', 'Dockerfile'], { cwd: root, maxBuffer: 256 * 1024 * 1024 });
  execFileSync('tar', ['-x', '-C', dir], { input: tar });
  symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  const tsconfig = JSON.parse(readFileSync(path.join(dir, 'tsconfig.build.json'), 'utf8'));
  writeFileSync(path.join(dir, 'tsconfig.build.json'), JSON.stringify({ ...tsconfig, include: ['src/**/*.ts'] }));
  execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: dir, stdio: 'inherit' });
  execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: dir, stdio: 'inherit' });
  writeFileSync(path.join(dir, '.built'), new Date().toISOString());
  return { dir, sha };
}

const get = (port, pth, fromIp, timeoutMs = 5000) => footprintGet(port, pth, fromIp, timeoutMs);

/** Bytes of a full GET (headers not counted), as kube2iam's client would download it. */
function bodyBytes(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let n = 0;
      res.on('data', (c) => (n += c.length));
      res.on('end', () => resolve(n));
      res.on('error', reject);
    }).on('error', reject);
  });
}

const MB = (b) => Math.round(b / 1e5) / 10;

/** CPU time (user + system) of a process so far, in ms. */
function cpuMs(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

export async function scale(ctx) {
  const { root, quick, log, sleep, freePort, awsTestEnv, stsUrl, imdsPort, KubeApiServer, realisticPod, measure } = ctx;
  const NODE = 'node-1';
  const BASE_ARN = 'arn:aws:iam::123456789012:role/';
  const credPath = (role) => `/latest/meta-data/iam/security-credentials/${role}`;
  const ip = (i) => `127.11.${Math.floor(i / 250)}.${(i % 250) + 2}`;
  const NAMESPACES = 5_000;
  const SAS_PER_NS = 10;
  const OTHER_PODS = 10_000;
  const NODE_PODS = 110;
  const USED_NS = 22;

  const beforeRef = process.env.BENCH_SCALE_BEFORE_REF ?? DEFAULT_SCALE_BEFORE_REF;
  const before = buildBundle(root, beforeRef, log);
  const variants = [
    { name: 'before', label: `before (${before.sha})`, argv: asImageStarts(before.dir), env: imageEnv(before.dir) },
    { name: 'after', label: 'after (dist/podiam.js)', argv: asImageStarts(root), env: imageEnv(root) },
  ];

  const applied = (o) => ({ 'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify(o) });
  const managed = (extra) => [
    { manager: 'kubectl-client-side-apply', operation: 'Update', apiVersion: 'v1', time: '2026-01-01T00:00:00Z', fieldsType: 'FieldsV1', fieldsV1: { 'f:metadata': { 'f:annotations': { '.': {}, 'f:kubectl.kubernetes.io/last-applied-configuration': {}, ...extra }, 'f:labels': { '.': {}, 'f:team': {} } } } },
  ];
  /** A cluster: `namespaces` of them (each with its ServiceAccounts), this node's pods, `others` pods elsewhere. */
  const buildCluster = async (namespaces, others) => {
    const kube = await KubeApiServer.start({ omitListItemTypeMeta: true, historyLimit: 100 });
    for (let n = 0; n < namespaces; n++) {
      const name = `team-${n}`;
      const meta = { name, labels: { team: name, 'kubernetes.io/metadata.name': name } };
      kube.createNamespace({ metadata: { ...meta, annotations: applied({ apiVersion: 'v1', kind: 'Namespace', metadata: meta }), managedFields: managed({}) } });
      for (let s = 0; s < SAS_PER_NS; s++) {
        const sa = { name: `sa-${s}`, namespace: name, labels: { team: name }, annotations: { 'iam.amazonaws.com/role': `${name}-sa-${s}` } };
        kube.createServiceAccount({ metadata: { ...sa, annotations: { ...sa.annotations, ...applied({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: sa }) }, managedFields: managed({ 'f:iam.amazonaws.com/role': {} }) } });
      }
    }
    const roles = [];
    for (let i = 0; i < NODE_PODS; i++) {
      const namespace = `team-${i % USED_NS}`;
      // Half with their own role annotation, half with their ServiceAccount's.
      const own = i % 2 === 0 ? `pod-role-${i % 20}` : undefined;
      const pod = realisticPod({ name: `app${i % 20}-${i}`, namespace, node: NODE, ip: ip(i), role: own, index: i });
      pod.spec.serviceAccountName = `sa-${i % SAS_PER_NS}`;
      kube.createPod(pod);
      roles.push(own ?? `${namespace}-sa-${i % SAS_PER_NS}`);
    }
    for (let i = 0; i < others; i++) kube.createPod(realisticPod({ name: `other${i % 50}-${i}`, namespace: `team-${i % namespaces}`, node: `node-${2 + (i % 100)}`, ip: `10.${Math.floor(i / 250) % 250}.${i % 250}.9`, role: `other-${i % 40}`, index: i }));
    return { kube, roles };
  };

  const start = async (v, kube) => {
    const port = await freePort();
    const args = [`--app-port=${port}`, '--host-ip=127.0.0.1', `--metadata-addr=127.0.0.1:${imdsPort}`, `--api-server=${kube.url}`, '--insecure', `--node=${NODE}`, `--base-role-arn=${BASE_ARN}`, '--log-format=json'];
    const t0 = performance.now();
    const child = spawn(process.execPath, [...v.argv, ...args], { env: { ...awsTestEnv(stsUrl), ...v.env }, stdio: ['ignore', 'ignore', 'pipe'] });
    const p = { child, port, t0, exited: false };
    child.on('exit', () => (p.exited = true));
    p.stop = async () => {
      if (p.exited) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await new Promise((r) => (p.exited ? r() : child.on('exit', r)));
      clearTimeout(t);
    };
    return p;
  };

  const run = async (v, cluster) => {
    const { kube, roles } = cluster;
    const b0 = kube.bytesSent();
    const p = await start(v, kube);
    let firstMs;
    // Pod 1's role comes from its ServiceAccount: its answer needs the ServiceAccounts.
    for (;;) {
      if (p.exited) throw new Error(`${v.name} exited`);
      const r = await get(p.port, credPath(roles[1]), ip(1));
      if (r.status === 200) {
        firstMs = Math.round(performance.now() - p.t0);
        break;
      }
      if (performance.now() - p.t0 > 60_000) break;
      await sleep(5);
    }
    const atFirst = kube.bytesSent() - b0;
    let served = 0;
    for (let i = 0; i < NODE_PODS; i++) if ((await get(p.port, credPath(roles[i]), ip(i))).status === 200) served++;
    const c0 = cpuMs(p.child.pid);
    const settleMs = quick ? 5000 : 15_000;
    await sleep(settleMs);
    const idleCpuPct = Math.round(((cpuMs(p.child.pid) - c0) / settleMs) * 1000) / 10;
    const mem = memory(p.child.pid);
    const settled = kube.bytesSent() - b0;
    let rps;
    if (ctx.cachedLoad) {
      const load = await measure(p.child.pid, { connections: 32, localAddresses: [ip(1)], port: p.port, path: credPath(roles[1]), warmupMs: 1000, durationMs: quick ? 3000 : 8000 });
      rps = load.rps;
    }
    await p.stop();
    return { firstCredsMs: firstMs, bytesAtFirstCreds: atFirst, bytesSettled: settled, rssMB: mem.rssMB, hwmMB: mem.hwmMB, served, idleCpuPct, ...(rps === undefined ? {} : { cachedRps32: rps }) };
  };

  log(`  building the clusters: ${NAMESPACES} namespaces, ${NAMESPACES * SAS_PER_NS} ServiceAccounts, ${OTHER_PODS} pods elsewhere, ${NODE_PODS} here ...`);
  const baseline = await buildCluster(USED_NS, 0);
  const big = await buildCluster(NAMESPACES, OTHER_PODS);
  const kube2iamBytes = (await bodyBytes(`${big.kube.url}/api/v1/pods?fieldSelector=spec.nodeName%3D${NODE}`)) + (await bodyBytes(`${big.kube.url}/api/v1/namespaces`));
  log(`  kube2iam's two lists in the big cluster (modelled: this node's pods and every namespace, full objects): ${MB(kube2iamBytes)} MB`);

  const out = { beforeRef: before.sha, kube2iamModelledBytes: kube2iamBytes, variants: {} };
  const rounds = quick ? 1 : Number(process.env.BENCH_SCALE_ROUNDS ?? 3);
  for (let round = 0; round < rounds; round++) {
    for (const v of round % 2 === 0 ? variants : [...variants].reverse()) {
      for (const [name, cluster] of [['baseline', baseline], ['cluster', big]]) {
        ctx.cachedLoad = name === 'baseline';
        const r = await run(v, cluster);
        const key = `${v.name}/${name}`;
        (out.variants[key] ??= []).push(r);
        log(`  ${v.label.padEnd(24)} ${name.padEnd(8)}: first credentials ${r.firstCredsMs} ms, downloaded ${MB(r.bytesAtFirstCreds)} MB until then (${MB(r.bytesSettled)} MB settled), RSS ${r.rssMB} MB (peak ${r.hwmMB}), idle CPU ${r.idleCpuPct}%, ${r.served}/${NODE_PODS} pods served${r.cachedRps32 === undefined ? '' : `, cached ${r.cachedRps32} req/s at c=32`}`);
      }
    }
  }
  await baseline.kube.stop();
  await big.kube.stop();

  const med = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.floor((s.length - 1) / 2)];
  };
  const cell = (key, f) => med(out.variants[key].map(f));
  const rows = [
    ['first credentials (ms)', (r) => r.firstCredsMs],
    ['downloaded until then (MB)', (r) => MB(r.bytesAtFirstCreds)],
    ['downloaded, settled (MB)', (r) => MB(r.bytesSettled)],
    ['RSS settled (MB)', (r) => r.rssMB],
    ['peak RSS (MB)', (r) => r.hwmMB],
    ['CPU while idle after start (%)', (r) => r.idleCpuPct],
  ];
  const L = ['| | before, 110-pod baseline | before, big cluster | after, 110-pod baseline | after, big cluster |', '|---|---|---|---|---|'];
  for (const [label, f] of rows) L.push(`| ${label} | ${cell('before/baseline', f)} | ${cell('before/cluster', f)} | ${cell('after/baseline', f)} | ${cell('after/cluster', f)} |`);
  L.push(`| cached credentials, c=32 (req/s) | ${cell('before/baseline', (r) => r.cachedRps32)} | | ${cell('after/baseline', (r) => r.cachedRps32)} | |`);
  L.push('', `kube2iam's download in the big cluster (modelled: its two lists, full objects): ${MB(kube2iamBytes)} MB.`);
  out.table = L.join('\n');
  log(out.table);
  return out;
}
