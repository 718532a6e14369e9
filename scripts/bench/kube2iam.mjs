/**
 * Bench scenarios for the kube2iam drop-in (run from run.mjs):
 *
 *   scope   AssumeRole calls per refresh period with several pods per role, --session-scope=pod
 *           (default, one session per pod) vs role (kube2iam's one per role per node). Credentials
 *           shortened to 60 s by the expiry-rewriting proxy, as in the sts scenario.
 *   regexp  allowed-roles regexps shaped for catastrophic backtracking ((a+)+$, (a|a)*b, (.*a){12}):
 *           podiam's decision (re2js, what podiam runs) against JavaScript's backtracking RegExp,
 *           per decision, as the role ARN grows. In process, CPU only.
 */
import { RE2JS } from 're2js';
import { StsProxy } from '../../dist/test/support/sts-proxy.js';
import { realisticPod } from './pods.mjs';
import { srcModule } from './src-module.mjs';
import { startExpiryRewriter } from './sts-expiry-rewriter.mjs';

const { compileRoleRegexp } = await srcModule('src/role-patterns.ts');

export async function scope(ctx) {
  const { T, log, moto, freshKube, startPodiam, stopPodiam, metricsOf, until, measure, ip, NODE, BASE_ARN, CRED_PATH } = ctx;
  const ttl = T.stsTtlMs;
  const periodMs = ttl / 2;
  const periods = T.quick ? 2 : 3;
  const loadMs = periodMs * periods;
  const roles = 3;
  const podsPerRole = 4;
  log(`\n== STS calls by --session-scope: ${roles} roles x ${podsPerRole} pods, credentials live ${ttl / 1000} s (refresh every ${periodMs / 1000} s), ${loadMs / 1000} s of load`);
  const out = {};
  for (const mode of ['pod', 'role']) {
    const rewriter = await startExpiryRewriter(moto.url, ttl);
    const counting = await StsProxy.start(rewriter.url);
    const kube = await freshKube();
    const addresses = [];
    const paths = [];
    for (let r = 0; r < roles; r++) {
      for (let k = 0; k < podsPerRole; k++) {
        const i = r * podsPerRole + k;
        kube.createPod(realisticPod({ name: `scope-${r}-${k}`, node: NODE, ip: ip(6, i), role: `scope-role-${r}`, index: i }));
        addresses.push(ip(6, i));
        paths.push(CRED_PATH(`scope-role-${r}`));
      }
    }
    const p = await startPodiam(kube, { stsUrl: counting.url, extra: [`--session-scope=${mode}`] });
    const expected = mode === 'pod' ? roles * podsPerRole : roles;
    await until(async () => (await metricsOf(p)).issuedPrefetch >= expected, 30_000);
    const startup = counting.calls.length;
    counting.reset();
    // Each connection is one pod (source address) asking for its own role.
    const load = await measure(p.child.pid, { connections: addresses.length, port: p.port, warmupMs: 0, durationMs: loadMs, localAddresses: addresses, paths });
    const calls = counting.calls.filter((c) => c.action === 'AssumeRole').length;
    out[mode] = {
      pods: roles * podsPerRole,
      roles,
      atStart: startup,
      periods,
      assumeRoleCalls: calls,
      perPeriod: Math.round((calls / periods) * 10) / 10,
      load: { rps: load.rps, p50: load.p50, p99: load.p99, unexpected: load.unexpected },
    };
    log(`  --session-scope=${mode}: ${startup} AssumeRole at start, ${calls} over ${periods} refresh periods (${out[mode].perPeriod} per period) for ${roles * podsPerRole} pods sharing ${roles} roles; ${load.rps} req/s p99 ${load.p99} ms`);
    await stopPodiam(p);
    await kube.stop();
    await counting.stop();
    await rewriter.stop();
  }
  return out;
}

/** Microseconds per call of fn, over at least minMs (or one call when a single one takes longer). */
function timeIt(fn, minMs, capMs) {
  let n = 0;
  const t0 = process.hrtime.bigint();
  let elapsed = 0;
  do {
    fn();
    n++;
    elapsed = Number(process.hrtime.bigint() - t0) / 1e6;
  } while (elapsed < minMs && elapsed < capMs);
  return Math.round((elapsed * 1000) / n * 10) / 10;
}

export async function regexp(ctx) {
  const { log } = ctx;
  const BASE = 'arn:aws:iam::123456789012:role/';
  // Each: the allowed-roles entry (relative to the base ARN) and a role name of length n that makes
  // a backtracking engine try every split.
  const shapes = [
    { entry: '(a+)+$', role: (n) => 'a'.repeat(n) + '!' },
    { entry: '(a|a)*b', role: (n) => 'a'.repeat(n) },
    { entry: '(a|aa)+$', role: (n) => 'a'.repeat(n) + '!' },
    { entry: '(.*a){4}x', role: (n) => 'a'.repeat(n) },
  ];
  const lengths = [8, 12, 16, 20, 24, 28, 32, 64, 128, 480];
  // The backtracking side stops at the first length where one decision takes over 50 ms: each
  // step at most doubles the length, so the last one measured stays within seconds.
  const JS_STOP_US = 50_000;
  log('\n== allowed-roles regexps shaped for catastrophic backtracking: µs per decision (re2js, as podiam, vs JavaScript RegExp)');
  const rows = [];
  for (const shape of shapes) {
    const compiled = compileRoleRegexp(shape.entry, BASE, false);
    const js = new RegExp(BASE + shape.entry);
    let jsGaveUp = false;
    for (const n of lengths) {
      const arn = BASE + shape.role(n);
      const re2Us = timeIt(() => compiled.test(arn), 200, 5000);
      let jsUs;
      if (!jsGaveUp) {
        jsUs = timeIt(() => js.test(arn), 50, 50);
        if (jsUs > JS_STOP_US) jsGaveUp = true;
      }
      rows.push({ entry: shape.entry, roleLength: shape.role(n).length, re2Us, jsUs: jsUs ?? null });
      log(`  ${shape.entry.padEnd(12)} role name ${String(shape.role(n).length).padStart(3)} chars: re2js ${String(re2Us).padStart(8)} µs   JS RegExp ${jsUs === undefined ? '(stopped: over 50 ms at a shorter length)' : `${jsUs} µs`}`);
    }
  }
  // Compile cost too: podiam compiles each entry once per namespace change.
  const compileUs = timeIt(() => RE2JS.compile(BASE + '(a+)+$'), 200, 5000);
  log(`  compile one entry: ${compileUs} µs`);
  return { rows, compileUs };
}

export function markdownSections(s, L) {
  if (s.scope) {
    L.push('## STS calls by --session-scope', '');
    L.push('| scope | pods | roles | AssumeRole at start | refresh periods | AssumeRole calls | per period | req/s | p99 ms |', '|---|---|---|---|---|---|---|---|---|');
    for (const [mode, x] of Object.entries(s.scope)) L.push(`| ${mode} | ${x.pods} | ${x.roles} | ${x.atStart} | ${x.periods} | ${x.assumeRoleCalls} | ${x.perPeriod} | ${x.load.rps} | ${x.load.p99} |`);
    L.push('');
  }
  if (s.regexp) {
    L.push('## allowed-roles regexps shaped for backtracking (µs per decision)', '');
    L.push('| entry | role name length | re2js (podiam) | JavaScript RegExp |', '|---|---|---|---|');
    for (const x of s.regexp.rows) L.push(`| \`${x.entry}\` | ${x.roleLength} | ${x.re2Us} | ${x.jsUs ?? 'stopped (over 50 ms at a shorter length)'} |`);
    L.push('', `Compiling one entry: ${s.regexp.compileUs} µs (once per namespace change).`, '');
  }
}
