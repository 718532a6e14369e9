#!/usr/bin/env node
/**
 * Soak: SOAK_SECONDS (default 600) at SOAK_RPS (default 1000) credential requests per second
 * across 100 pods, with pod churn (a few pods a second are replaced on the same IP with a new
 * role). Reports errors (wrong role, unexpected status, failed request: must be 0) and podiam's
 * RSS at the start and the end (must be flat). Loopback only. Run: npm run soak
 */
import http from 'node:http';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { World } from '../dist/test/support/world.js';

const SECONDS = Number(process.env.SOAK_SECONDS ?? 600);
const RPS = Number(process.env.SOAK_RPS ?? 1000);
const PODS = 100;
const CHURN_PER_SEC = Number(process.env.SOAK_CHURN ?? 3);
const CREDS = '/latest/meta-data/iam/security-credentials/';

const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const world = await World.start();
try {
  const slots = Array.from({ length: PODS }, (_, i) => ({ ip: world.nextIp(), gen: 0, name: `soak-${i}-0`, owners: [] }));
  for (const [i, s] of slots.entries()) {
    world.pod(s.name, { ip: s.ip, role: s.name });
    s.owners.push({ role: s.name, from: Date.now(), until: Infinity });
    s.index = i;
  }
  const podiam = await world.podiam(['--log-level=warn']);
  const pid = podiam.child.pid;
  await sleep(2000);
  const agents = new Map(slots.map((s) => [s.ip, new http.Agent({ keepAlive: true, maxSockets: 4, localAddress: s.ip })]));

  const stats = { sent: 0, ok: 0, creds: 0, notFound: 0, wrong: 0, badStatus: 0, failed: 0, churned: 0, latencies: [] };
  const samples = [];
  const start = Date.now();
  const end = start + SECONDS * 1000;
  samples.push({ t: 0, rssMb: rss(pid) });

  const churn = (async () => {
    while (Date.now() < end) {
      await sleep(1000 / CHURN_PER_SEC);
      const s = slots[Math.floor(Math.random() * slots.length)];
      const now = Date.now();
      s.owners.at(-1).until = now;
      world.kube.deletePod('default', s.name);
      s.gen++;
      s.name = `soak-${s.index}-${s.gen}`;
      s.owners.push({ role: s.name, from: Date.now(), until: Infinity });
      world.pod(s.name, { ip: s.ip, role: s.name });
      if (s.owners.length > 50) s.owners.splice(0, s.owners.length - 50);
      stats.churned++;
    }
  })();

  const one = (s) =>
    new Promise((resolve) => {
      const t0 = Date.now();
      // Every 10th request asks for the credentials themselves, the rest for the role name.
      const roleNow = s.owners.at(-1).role;
      const path = stats.sent % 10 === 0 ? CREDS + roleNow : CREDS;
      stats.sent++;
      const req = http.request({ host: '127.0.0.1', port: podiam.port, path, agent: agents.get(s.ip), timeout: 2000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => {
          const t1 = Date.now();
          stats.latencies.push(t1 - t0);
          const owned = (role) => s.owners.some((o) => o.role === role && o.from <= t1 && o.until >= t0 - 50);
          if (res.statusCode === 200 && path === CREDS) {
            if (owned(body)) stats.ok++;
            else stats.wrong++;
          } else if (res.statusCode === 200) {
            if (owned(roleNow)) stats.creds++;
            else stats.wrong++;
          } else if (res.statusCode === 403 && path !== CREDS) {
            // Asked for the role it had a moment ago; the pod was replaced meanwhile: a correct refusal.
            stats.ok++;
          } else if (res.statusCode === 404) {
            stats.notFound++;
          } else {
            stats.badStatus++;
            stats.badSamples ??= [];
            if (stats.badSamples.length < 10) stats.badSamples.push(`${res.statusCode} ${path}: ${body.slice(0, 200)}`);
          }
          resolve();
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', () => {
        stats.failed++;
        resolve();
      });
      req.end();
    });

  // Open-loop pacing: RPS requests a second, in 10 ms ticks.
  const inflight = new Set();
  let nextSample = start + 10_000;
  while (Date.now() < end) {
    const tickStart = Date.now();
    const due = Math.floor(((tickStart - start) / 1000) * RPS) - stats.sent;
    for (let i = 0; i < due && inflight.size < 2000; i++) {
      const p = one(slots[Math.floor(Math.random() * slots.length)]);
      inflight.add(p);
      p.then(() => inflight.delete(p));
    }
    if (tickStart >= nextSample) {
      samples.push({ t: Math.round((tickStart - start) / 1000), rssMb: rss(pid) });
      nextSample += 10_000;
      const last = samples.at(-1);
      process.stdout.write(`t=${last.t}s sent=${stats.sent} wrong=${stats.wrong} bad=${stats.badStatus} failed=${stats.failed} 404=${stats.notFound} rss=${last.rssMb.toFixed(1)}MB\n`);
    }
    await sleep(10);
  }
  await Promise.all(inflight);
  await churn;
  samples.push({ t: Math.round((Date.now() - start) / 1000), rssMb: rss(pid) });
  const lat = stats.latencies.sort((a, b) => a - b);
  const pct = (p) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))];
  const errors = stats.wrong + stats.badStatus + stats.failed;
  // RSS at start = after warm-up (first 60 s sample, or the first one for short runs).
  const warm = samples.find((s) => s.t >= 60) ?? samples[1] ?? samples[0];
  const result = {
    seconds: SECONDS,
    targetRps: RPS,
    achievedRps: Math.round(stats.sent / ((Date.now() - start) / 1000)),
    pods: PODS,
    churned: stats.churned,
    requests: stats.sent,
    roleAnswers: stats.ok,
    credentialAnswers: stats.creds,
    notFound: stats.notFound,
    errors,
    wrongRole: stats.wrong,
    unexpectedStatus: stats.badStatus,
    unexpectedSamples: stats.badSamples ?? [],
    failedRequests: stats.failed,
    p50ms: pct(50),
    p99ms: pct(99),
    rssStartMb: Number(samples[0].rssMb.toFixed(1)),
    rssWarmMb: Number(warm.rssMb.toFixed(1)),
    rssEndMb: Number(samples.at(-1).rssMb.toFixed(1)),
    samples,
  };
  mkdirSync('bench-results', { recursive: true });
  const file = `bench-results/soak-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
  writeFileSync(file, JSON.stringify(result, null, 2));
  const { samples: _s, ...summary } = result;
  console.log(JSON.stringify(summary, null, 2));
  console.log(`written to ${file}`);
  for (const a of agents.values()) a.destroy();
  process.exitCode = errors === 0 ? 0 : 1;
} finally {
  await world.stop();
}
