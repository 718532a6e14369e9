#!/usr/bin/env node
/**
 * The worst an annotation can cost podiam's event loop: the adversarial review's namespace pattern
 * `[".*a.*a.*a.*b"]` (regexp format) against role ARNs of growing length, timed per resolution.
 *
 *   npm run build && node scripts/bench/annotation-worst-case.mjs
 *
 * Over-long values (a 600-character role name, a 64k-character annotation) are refused by the
 * length limits before any matching. Valid ARNs go up to IAM's maximum (path 512 + name 64); the
 * cost of the match there depends on the regexp engine: the run stops growing the ARN once one
 * resolution passes BUDGET_MS and reports the largest length measured, so it is always bounded.
 */
import { rolePolicy } from '../../dist/test/support/role-policy.js';
import { srcModule } from './src-module.mjs';

const { resolveRole } = await srcModule('src/roles.ts');

const BUDGET_MS = Number(process.env.BENCH_BUDGET_MS ?? 1000);
const policy = rolePolicy({ namespaceRestrictions: true, namespaceRestrictionFormat: 'regexp' });
const pattern = '[".*a.*a.*a.*b"]';

function once(role) {
  // Fresh objects each time: nothing memoised.
  const pod = { namespace: 'review', name: 'p', uid: 'u', ips: ['10.0.0.1'], phase: 'Running', hostNetwork: false, createdMs: 0, deleting: false, annotations: { [policy.roleKey]: role } };
  const ns = { name: 'review', annotations: { [policy.namespaceKey]: pattern } };
  const t0 = performance.now();
  let outcome;
  try {
    outcome = resolveRole(pod, ns, policy).roleArn ? 'allowed' : '?';
  } catch (err) {
    outcome = err.code ?? err.name;
  }
  return { ms: performance.now() - t0, outcome };
}

function best(role, runs = 5) {
  let min = Infinity;
  let outcome;
  for (let i = 0; i < runs; i++) {
    const r = once(role);
    min = Math.min(min, r.ms);
    outcome = r.outcome;
    if (r.ms > BUDGET_MS) break;
  }
  return { ms: min, outcome };
}

const rows = [];
const row = (what, length, r) => {
  rows.push({ what, length, ms: Number(r.ms.toFixed(3)), outcome: r.outcome });
  console.log(`${what.padEnd(44)} ${String(length).padStart(6)} chars  ${r.ms.toFixed(3).padStart(10)} ms  ${r.outcome}`);
};

// Refused by the limits, whatever the engine.
row('role name of 600 characters', 600, best('a'.repeat(600)));
row('role of 64k characters', 65_536, best('a'.repeat(65_536)));
row('role name of 65 characters', 65, best('a'.repeat(65)));

// Valid ARNs (name 64, path growing to IAM's 512): matched, and never matching (no final b).
let stoppedAt;
for (const pathLength of [0, 32, 64, 128, 192, 256, 384, 510]) {
  const role = `arn:aws:iam::123456789012:role/${pathLength > 0 ? 'a'.repeat(pathLength) + '/' : ''}${'a'.repeat(64)}`;
  const r = best(role);
  row(`valid ARN, path ${pathLength}, name 64`, role.length, r);
  if (r.ms > BUDGET_MS) {
    stoppedAt = role.length;
    break;
  }
}
if (stoppedAt !== undefined) {
  console.log(`\nstopped: one resolution of a ${stoppedAt}-character ARN took over ${BUDGET_MS} ms with this regexp engine (backtracking); the longest valid ARN is ${'arn:aws:iam::123456789012:role/'.length + 512 + 64 - 1} characters.`);
}
console.log(JSON.stringify({ pattern, budgetMs: BUDGET_MS, rows, stoppedAt }, null, 0));
