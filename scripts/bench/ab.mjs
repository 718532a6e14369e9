#!/usr/bin/env node
/**
 * A/B of two podiam builds on one path under the same load, for measuring a change to the hot
 * path: both run side by side (idle when not loaded), rounds alternate A B B A A B ..., and each
 * side reports its median req/s, latencies and CPU per request (the steadier number on a shared
 * machine).
 *
 *   cp -r dist bench-results/base-dist          # before the change
 *   npm run build                               # after it
 *   node scripts/bench/ab.mjs bench-results/base-dist dist [--path credentials|passthrough|role-name|token] [--connections 32] [--rounds 6] [--seconds 6]
 *
 * `--path token`: cached GET /v1/credentials with a ServiceAccount token (--token-identity), one
 * token reused over keep-alive connections, as SDKs do.
 *
 * Loopback only, bounded: rounds x seconds of load.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { FakeImds } from '../../dist/test/support/imds-server.js';
import { KubeApiServer } from '../../dist/test/support/kube-api-server.js';
import { Moto } from '../../dist/test/support/moto.js';
import { freePort } from '../../dist/test/support/net.js';
import { awsTestEnv } from '../../dist/test/support/podiam-process.js';
import { realisticPod } from './pods.mjs';

const HERE = path.dirname(new URL(import.meta.url).pathname);
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { path: { type: 'string', default: 'credentials' }, connections: { type: 'string', default: '32' }, rounds: { type: 'string', default: '6' }, seconds: { type: 'string', default: '6' } },
});
const [distA, distB = 'dist'] = positionals;
if (distA === undefined) {
  console.error('usage: ab.mjs <distA> [distB=dist] [--path credentials|passthrough|role-name|token] [--connections N] [--rounds N] [--seconds N]');
  process.exit(2);
}
const connections = Number(values.connections);
const rounds = Math.min(20, Number(values.rounds));
const seconds = Math.min(30, Number(values.seconds));
const podIp = '127.10.9.2';
const tokenPath = values.path === 'token';
const reqPath = { credentials: '/latest/meta-data/iam/security-credentials/ab-role', passthrough: '/latest/meta-data/instance-id', 'role-name': '/latest/meta-data/iam/security-credentials/', token: '/v1/credentials' }[values.path];
if (reqPath === undefined) {
  console.error(`--path ${values.path}: not one of credentials|passthrough|role-name|token`);
  process.exit(2);
}

const cpuMs = (pid) => {
  const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
};
let headers = {};
const get = (port, p) =>
  new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: p, localAddress: podIp, agent: false, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    }).on('error', reject);
  });

const moto = await Moto.start();
const imds = await FakeImds.start();
// The fake's 1 s keep-alive hint makes Node's agent drop every upstream connection; see BENCHMARKS.md.
imds.server.keepAliveTimeout = 65_000;
const kube = await KubeApiServer.start({ omitListItemTypeMeta: true });
kube.createNamespace({ metadata: { name: 'default' } });
const abPod = kube.createPod(realisticPod({ name: 'ab-0', node: 'node-1', ip: podIp, role: 'ab-role' }));
if (tokenPath) {
  const { namespace, name } = abPod.metadata;
  const serviceAccount = abPod.spec.serviceAccountName;
  kube.createServiceAccount({ metadata: { name: serviceAccount, namespace } });
  headers = { Authorization: kube.tokenApi.issue({ namespace, serviceAccount, pod: name, audiences: ['pods.eks.amazonaws.com'], expirationSeconds: 86400 }) };
}

const children = [];
async function start(dist) {
  const appPort = await freePort();
  const tokenPort = tokenPath ? await freePort() : undefined;
  const port = tokenPort ?? appPort;
  // A dist/ from before the bundle has src/cli.js; since, the artifact is podiam.js (run with its shebang's flags).
  const bundle = path.resolve(dist, 'podiam.js');
  const entry = existsSync(bundle) ? [...shebangFlags(bundle), bundle] : [path.resolve(dist, 'src/cli.js')];
  const child = spawn(process.execPath, [...entry, `--app-port=${appPort}`, ...(tokenPort === undefined ? [] : ['--token-identity', `--token-addr=127.0.0.1:${tokenPort}`]), '--host-ip=127.0.0.1', `--metadata-addr=127.0.0.1:${imds.port}`, `--api-server=${kube.url}`, '--insecure', '--node=node-1', '--base-role-arn=arn:aws:iam::123456789012:role/', '--log-format=json'], { env: awsTestEnv(moto.url), stdio: 'ignore' });
  children.push(child);
  for (let i = 0; i < 200; i++) {
    if ((await get(port, reqPath).catch(() => 0)) === 200) return { pid: child.pid, port };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${dist}: podiam did not answer 200 on ${reqPath}`);
}

function load(port) {
  return new Promise((resolve, reject) => {
    const opts = { port, path: reqPath, headers, connections, durationMs: seconds * 1000, warmupMs: 1000, localAddresses: [podIp] };
    const child = spawn(process.execPath, [path.join(HERE, 'loadgen.mjs'), JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('exit', () => {
      try {
        resolve(JSON.parse(out));
      } catch {
        reject(new Error(out));
      }
    });
  });
}

try {
  const sides = { A: await start(distA), B: await start(distB) };
  const runs = { A: [], B: [] };
  for (let i = 0; i < rounds; i++) {
    for (const k of i % 2 === 0 ? ['A', 'B'] : ['B', 'A']) {
      const { pid, port } = sides[k];
      const c0 = cpuMs(pid);
      const r = await load(port);
      r.usPerReq = ((cpuMs(pid) - c0) * 1000) / r.totalResponses;
      runs[k].push(r);
      console.log(`  round ${i + 1} ${k}: ${r.rps} req/s p50 ${r.p50} p99 ${r.p99} ms ${r.usPerReq.toFixed(1)} µs/req`);
    }
  }
  const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const k of ['A', 'B']) {
    const rs = runs[k];
    console.log(`${k} ${k === 'A' ? distA : distB}: median ${med(rs.map((r) => r.rps))} req/s, p50 ${med(rs.map((r) => r.p50))} ms, p99 ${med(rs.map((r) => r.p99))} ms, ${med(rs.map((r) => r.usPerReq)).toFixed(1)} µs CPU/req`);
  }
} finally {
  for (const c of children) c.kill('SIGTERM');
  await kube.stop();
  await imds.stop();
  await moto.stop();
}

function shebangFlags(file) {
  const m = /^#!\/usr\/bin\/env -S node([^\n]*)/.exec(readFileSync(file, 'utf8').slice(0, 512));
  return m ? m[1].trim().split(/\s+/).filter(Boolean) : [];
}
