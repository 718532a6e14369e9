#!/usr/bin/env node
/**
 * Two `podiam broker` replicas, without and then with --peers, side by side in one run: the
 * AssumeRole calls a cold start of both makes for N pods (moto behind the counting STS proxy),
 * and what an agent's request costs on each replica afterwards (the first request of each pod on
 * each replica, then a second round), in milliseconds at the agent's side of the TLS connection.
 *
 *   npm run build && node scripts/bench/broker-peers.mjs      # BENCH_PEERS_PODS (default 300)
 *
 * Real processes (dist/podiam.js), real TLS, the test API server's TokenRequest/TokenReview.
 * The replicas listen on 127.0.0.2 and 127.0.0.3, the IPs of their pods. Loopback only.
 */
import { writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { BrokerLab, AGENT_NAMESPACE } from '../../dist/test/support/broker.js';
import { metricSum } from '../../dist/test/support/metrics-text.js';
import { freePort } from '../../dist/test/support/net.js';
import { PodiamProcess, awsTestEnv } from '../../dist/test/support/podiam-process.js';
import { makeServingCertificate } from '../../dist/test/support/webhook.js';
import { BASE_ARN, NODE, World } from '../../dist/test/support/world.js';

const N = Number(process.env.BENCH_PEERS_PODS ?? 300);
const BROKER_SA = 'podiam-broker';
const REPLICAS = [
  { name: 'podiam-broker-a', ip: '127.0.0.2' },
  { name: 'podiam-broker-b', ip: '127.0.0.3' },
];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const world = await World.start();
const lab = new BrokerLab(world);
const cert = makeServingCertificate(lab.dir, 'peers', 'podiam-broker', ['DNS:podiam-broker.kube-system.svc', ...REPLICAS.map((r) => `IP:${r.ip}`)]);
world.kube.createServiceAccount({ metadata: { name: BROKER_SA, namespace: AGENT_NAMESPACE } });
for (const r of REPLICAS) {
  world.kube.createPod({
    metadata: { name: r.name, namespace: AGENT_NAMESPACE },
    spec: { nodeName: `broker-node-${r.name}`, serviceAccountName: BROKER_SA, containers: [{ name: 'broker', image: 'podiam' }] },
    status: { phase: 'Running', podIP: r.ip, podIPs: [{ ip: r.ip }] },
  });
}
const agentToken = lab.agentToken(NODE);
const pods = [];
for (let i = 0; i < N; i++) {
  const ip = world.nextIp();
  const created = world.kube.createPod({
    metadata: { name: `app-${i}`, namespace: 'default', annotations: { 'iam.amazonaws.com/role': `bench-role-${i}` } },
    spec: { nodeName: NODE, serviceAccountName: 'default', containers: [{ name: 'app', image: 'app' }] },
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
  });
  pods.push({ name: `app-${i}`, uid: created.metadata.uid });
}

const agent = new https.Agent({ keepAlive: true, ca: lab.ca, maxSockets: 4 });
function ask(url, p) {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(JSON.stringify({ namespace: 'default', name: p.name, uid: p.uid, proof: { kind: 'ip' } }));
    const t0 = performance.now();
    const req = https.request(new URL('/v1/credentials', url), { method: 'POST', agent, headers: { 'Content-Type': 'application/json', 'Content-Length': payload.length, Authorization: `Bearer ${agentToken}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - t0 }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}
const pct = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.floor((q / 100) * s.length))] * 100) / 100;
};

async function run(peers) {
  const port = await freePort();
  const procs = [];
  // Counted from before the first replica starts: it prefetches as soon as its informers have listed.
  world.sts.reset();
  const t0 = Date.now();
  for (const r of REPLICAS) {
    const metricsPort = await freePort();
    const tokenFile = path.join(lab.dir, `peer-token-${r.name}`);
    writeFileSync(tokenFile, world.kube.tokenApi.issue({ namespace: AGENT_NAMESPACE, serviceAccount: BROKER_SA, pod: r.name, audiences: ['podiam-broker'], expirationSeconds: 3600 }));
    const args = ['broker', `--port=${port}`, `--metrics-port=${metricsPort}`, `--host=${r.ip}`, `--tls-cert-file=${cert.certFile}`, `--tls-key-file=${cert.keyFile}`, `--api-server=${world.kube.url}`, '--insecure', `--base-role-arn=${BASE_ARN}`, '--shutdown-delay=0s', '--log-format=json', '--sts-qps=1000'];
    if (peers) args.push(`--peers=${AGENT_NAMESPACE}/${BROKER_SA}`, `--pod-name=${r.name}`, '--peer-tls-name=podiam-broker.kube-system.svc', `--peer-ca-file=${lab.caFile}`, `--peer-token-file=${tokenFile}`);
    procs.push({ p: await PodiamProcess.start(args, awsTestEnv(world.sts.url), { port: metricsPort, host: r.ip, timeoutMs: 30_000 }), url: `https://${r.ip}:${port}` });
  }
  const issued = async () => (await Promise.all(procs.map(async ({ p }) => metricSum((await p.get('/metrics')).body, 'podiam_credentials_issued_total', { cause: 'prefetch' })))).reduce((a, b) => a + b, 0);
  const want = peers ? N : N * procs.length;
  while ((await issued()) < want && Date.now() - t0 < 600_000) await sleep(200);
  const prefetchS = (Date.now() - t0) / 1000; // from the first replica's start
  await sleep(1000);
  const prefetchCalls = world.sts.count('AssumeRole');
  const rounds = [];
  for (let round = 0; round < 2; round++) {
    const ms = [];
    let non200 = 0;
    for (const p of pods) {
      for (const { url } of procs) {
        const r = await ask(url, p);
        if (r.status !== 200) non200++;
        ms.push(r.ms);
      }
    }
    rounds.push({ p50: pct(ms, 50), p99: pct(ms, 99), max: pct(ms, 100), non200 });
  }
  const forwards = (await Promise.all(procs.map(async ({ p }) => metricSum((await p.get('/metrics')).body, 'podiam_broker_peer_fetches_total', { outcome: 'ok' })))).reduce((a, b) => a + b, 0);
  const out = { peers, pods: N, prefetchSeconds: prefetchS, stsCallsAtPrefetch: prefetchCalls, stsCallsAfterAsking: world.sts.count('AssumeRole'), forwards, firstAsk: rounds[0], secondAsk: rounds[1] };
  await Promise.all(procs.map(({ p }) => p.stop()));
  return out;
}

const results = [await run(false), await run(true)];
for (const r of results) console.log(JSON.stringify(r));
agent.destroy();
await world.stop();
process.exit(0);
