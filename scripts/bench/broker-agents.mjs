#!/usr/bin/env node
/**
 * Simulated node agents for the broker bench (scripts/bench/broker.mjs), in their own process so
 * the broker's CPU is measured apart from the load: each agent holds one keep-alive TLS
 * connection to the broker and asks, one request after the other, for every pod of its node
 * (POST /v1/credentials with its own token), as a real agent does for its pods.
 *
 *   node broker-agents.mjs <spec.json>
 *   spec: { url, caFile, passes, agents: [{ token, pods: [{ namespace, name, uid }] }] }
 *
 * Prints one JSON line per pass: requests, statuses, latency percentiles, wall time, and this
 * process's own CPU.
 */
import { readFileSync } from 'node:fs';
import https from 'node:https';

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const url = new URL(spec.url);
const ca = readFileSync(spec.caFile);

function post(agent, token, body) {
  return new Promise((resolve) => {
    const data = JSON.stringify(body);
    const req = https.request(
      { host: url.hostname, port: url.port, path: '/v1/credentials', method: 'POST', agent, ca, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) }, timeout: 60_000 },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
        res.on('error', () => resolve(0));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(0));
    req.end(data);
  });
}

const agents = spec.agents.map((a) => ({ ...a, http: new https.Agent({ keepAlive: true, maxSockets: 1 }) }));

for (let pass = 0; pass < (spec.passes ?? 1); pass++) {
  const statuses = {};
  const latencies = [];
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    agents.map(async (a) => {
      for (const pod of a.pods) {
        const s = performance.now();
        const status = await post(a.http, a.token, { namespace: pod.namespace, name: pod.name, uid: pod.uid, proof: { kind: 'ip' } });
        latencies.push(performance.now() - s);
        statuses[status] = (statuses[status] ?? 0) + 1;
      }
    }),
  );
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  latencies.sort((x, y) => x - y);
  const at = (p) => Math.round(latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)] * 10) / 10;
  process.stdout.write(
    JSON.stringify({ pass, requests: latencies.length, statuses, wallMs: Math.round(wallMs), rps: Math.round((latencies.length / wallMs) * 1000), p50: at(50), p99: at(99), max: at(100), cpuMs: Math.round((cpu.user + cpu.system) / 1000) }) + '\n',
  );
}
for (const a of agents) a.http.destroy();
