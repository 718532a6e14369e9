#!/usr/bin/env node
/**
 * Top functions of a V8 .cpuprofile (from `node --cpu-prof`) by self time, and by
 * "inclusive" time for podiam's own files, so BENCHMARKS.md can say where the time goes.
 *
 *   node scripts/bench/profile-summary.mjs <file.cpuprofile> [top=25]
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

function short(url) {
  if (!url) return '';
  const u = url.replace(/^file:\/\//, '');
  const i = u.indexOf('node_modules/');
  if (i >= 0) return u.slice(i + 'node_modules/'.length);
  const d = u.indexOf('/dist/');
  if (d >= 0) return u.slice(d + 1);
  return u.startsWith('node:') ? u : path.basename(u);
}

export function summarize(file, top = 25) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const selfSamples = new Map();
  for (const id of prof.samples) selfSamples.set(id, (selfSamples.get(id) ?? 0) + 1);
  const total = prof.samples.length;
  const key = (n) => {
    const f = n.callFrame;
    return `${f.functionName || '(anonymous)'} ${short(f.url)}${f.url ? `:${f.lineNumber + 1}` : ''}`;
  };
  const self = new Map();
  for (const [id, count] of selfSamples) {
    const k = key(byId.get(id));
    self.set(k, (self.get(k) ?? 0) + count);
  }
  // Inclusive time: a sample counts once for every distinct function on its stack.
  const parent = new Map();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const inclusive = new Map();
  for (const [id, count] of selfSamples) {
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const k = key(byId.get(cur));
      if (seen.has(k)) continue;
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + count);
    }
  }
  const pct = (c) => Math.round((c / total) * 1000) / 10;
  const idle = [...self].filter(([k]) => k.startsWith('(idle)')).reduce((s, [, c]) => s + c, 0);
  return {
    samples: total,
    idlePct: pct(idle),
    self: [...self].sort((a, b) => b[1] - a[1]).slice(0, top).map(([fn, c]) => ({ fn, pct: pct(c) })),
    podiamInclusive: [...inclusive]
      .filter(([k]) => k.includes('dist/src/') || k.includes('dist/podiam.js'))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([fn, c]) => ({ fn, pct: pct(c) })),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const s = summarize(process.argv[2], Number(process.argv[3] ?? 25));
  console.log(`${s.samples} samples, idle ${s.idlePct}%`);
  console.log('\nself time:');
  for (const r of s.self) console.log(`${String(r.pct).padStart(5)}%  ${r.fn}`);
  console.log('\npodiam functions, inclusive:');
  for (const r of s.podiamInclusive) console.log(`${String(r.pct).padStart(5)}%  ${r.fn}`);
}
