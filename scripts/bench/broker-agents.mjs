#!/usr/bin/env node
/**
 * Simulated node agents for the broker bench (scripts/bench/broker.mjs), in their own process so
 * the broker's CPU is measured apart from the load: each agent holds one keep-alive TLS
 * connection to the broker and asks, one request after the other, for every pod of its node
 * (POST /v1/credentials with its own token), as a real agent does for its pods.
 *
 *   node broker-agents.mjs <spec.json>
 *   spec: { url, caFile, passes, polls?, agents: [{ token, pods: [{ namespace, name, uid }] }] }
 *
 * Prints one JSON line per pass: requests, statuses, latency percentiles, wall time, and this
 * process's own CPU. With `polls`, each agent also holds the broker's change feed as a real agent
 * does (POST /v1/changes, one poll at a time, on a connection of its own) for the whole run;
 * after the passes it prints {"polling":true} and then one line per answer that named changes
 * ({"agent","at","changes"}), until its stdin closes: then {"pollSummary":…} and it exits.
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

const agents = spec.agents.map((a) => ({ ...a, http: new https.Agent({ keepAlive: true, maxSockets: 1 }), feed: new https.Agent({ keepAlive: true, maxSockets: 1 }) }));

/** POST /v1/changes; resolves with the answer (or undefined on an error). */
function poll(agent, token, since) {
  return new Promise((resolve) => {
    const data = JSON.stringify(since === undefined ? {} : { since });
    const req = https.request(
      { host: url.hostname, port: url.port, path: '/v1/changes', method: 'POST', agent, ca, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) }, timeout: 60_000 },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          try {
            resolve(res.statusCode === 200 ? JSON.parse(Buffer.concat(chunks).toString()) : undefined);
          } catch {
            resolve(undefined);
          }
        });
        res.on('error', () => resolve(undefined));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(undefined));
    req.end(data);
  });
}

let polling = spec.polls === true;
let reporting = false;
const pollStats = { answers: 0, withChanges: 0, resets: 0, errors: 0 };
const feeds = polling
  ? agents.map(async (a, k) => {
      let since;
      while (polling) {
        const answer = await poll(a.feed, a.token, since);
        if (!polling) return;
        if (answer === undefined) {
          pollStats.errors++;
          await new Promise((r) => setTimeout(r, 1000));
          continue;
        }
        pollStats.answers++;
        if (answer.reset) pollStats.resets++;
        if (answer.changes.length > 0) {
          pollStats.withChanges++;
          if (reporting) process.stdout.write(JSON.stringify({ agent: k, at: Date.now(), changes: answer.changes.length }) + '\n');
        }
        since = answer.now;
      }
    })
  : [];

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
if (polling) {
  reporting = true;
  process.stdout.write(JSON.stringify({ polling: true }) + '\n');
  await new Promise((resolve) => {
    process.stdin.on('data', () => undefined);
    process.stdin.on('end', resolve);
    process.stdin.on('close', resolve);
  });
  polling = false;
  for (const a of agents) a.feed.destroy();
  await Promise.all(feeds);
  process.stdout.write(JSON.stringify({ pollSummary: pollStats }) + '\n');
}
for (const a of agents) a.http.destroy();
