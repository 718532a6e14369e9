#!/usr/bin/env node
/**
 * How long a flushed nat table stays without podiam's rules: with the ruleset watch (an
 * `nft -j monitor destroy` reports the deletion) and without it (--iptables-watch=false: the next
 * reconcile round, 5 s by default), side by side in one run, in the node lab (root).
 *
 * Each side: podiam started as the image starts it with the DaemonSet's flags; BENCH_FLUSHES
 * (default 10) times, 1.2 s apart (event-driven checks run at most once a second), the nat table is
 * flushed by hand and `iptables-save -t nat` polled every 10 ms until the jump is back. Reports the
 * median and the worst, in ms.
 *
 *   npm run build && sudo node scripts/bench/restore-latency.mjs
 */
import { Lab, NODE_IP, sleep } from '../../dist/test/support/lab.js';

const FLUSHES = Number(process.env.BENCH_FLUSHES ?? 10);
const log = (line) => process.stdout.write(`${line}\n`);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const lab = await Lab.create({ pods: [{ name: 'app', role: 'app-role' }] });
const results = {};
try {
  for (const [side, extra] of [['watch', []], ['rounds (--iptables-watch=false)', ['--iptables-watch=false']]]) {
    const p = await lab.startPodiam({ extraArgs: ['--log-format=json', ...extra] });
    await sleep(2_500); // the check that follows the watch's start
    const ms = [];
    for (let i = 0; i < FLUSHES; i++) {
      await sleep(1_200);
      const t0 = Date.now();
      const r = await lab.iptables(['-t', 'nat', '-F']);
      if (r.code !== 0) throw new Error(`iptables -t nat -F: ${r.stderr}`);
      for (;;) {
        const saved = await lab.saved('ipv4', 'nat');
        if (saved.includes('podiam: pod metadata requests') && saved.includes('podiam: to podiam')) break;
        if (Date.now() - t0 > 30_000) throw new Error('not restored within 30 s');
        await sleep(10);
      }
      ms.push(Date.now() - t0);
    }
    results[side] = ms;
    log(`${side}: ${ms.join(', ')} ms`);
    await p.stop('SIGTERM', 10_000);
    await lab.runCleanup();
  }
  log(`\n| nat table flushed by hand (${FLUSHES} times), until podiam's rules are back | median ms | worst ms |\n|---|---|---|`);
  for (const [side, ms] of Object.entries(results)) log(`| ${side} | ${median(ms)} | ${Math.max(...ms)} |`);
  log(`(lab node ${NODE_IP}; Node ${process.versions.node})`);
} finally {
  await lab.destroy();
}
