/**
 * --imds-tokens: required, optional, or as the node's metadata service answers a token-less GET
 * (auto), failing closed (required) until it answers.
 */
import { ImdsTokenPolicy } from '../../src/imds/token-policy.js';

const log = () => {
  const lines: Array<[string, string, Record<string, unknown>]> = [];
  return { lines, info: (m: string, f: Record<string, unknown>) => lines.push(['info', m, f]), warn: (m: string, f: Record<string, unknown>) => lines.push(['warn', m, f]) };
};

test.each([
  ['required', undefined, true],
  ['optional', undefined, false],
  ['auto', 401, true],
  ['auto', 200, false],
] as const)('--imds-tokens=%s, the node answers %s: required %s', async (mode, status, required) => {
  const l = log();
  let probes = 0;
  const policy = new ImdsTokenPolicy({ mode, probe: async () => (probes++, status ?? 200), log: l as never });
  await policy.start();
  expect(policy.required()).toBe(required);
  expect(probes).toBe(mode === 'auto' ? 1 : 0);
  policy.stop();
});

test('auto, no answer (down, or a status that says nothing): required until an answer comes, probed again', async () => {
  const l = log();
  const answers: Array<number | Error> = [new Error('connect ECONNREFUSED'), 500, 200];
  const policy = new ImdsTokenPolicy({
    mode: 'auto',
    probe: async () => {
      const a = answers.shift()!;
      if (a instanceof Error) throw a;
      return a;
    },
    log: l as never,
    retryMs: 20,
  });
  await policy.start();
  expect(policy.required()).toBe(true);
  expect(l.lines.filter(([level]) => level === 'warn')).toHaveLength(1);
  for (let i = 0; i < 200 && answers.length > 0; i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 10));
  expect(answers).toHaveLength(0);
  expect(policy.required()).toBe(false);
  // One warning only, and the answer kept: no more probes.
  expect(l.lines.filter(([level]) => level === 'warn')).toHaveLength(1);
  policy.stop();
});
