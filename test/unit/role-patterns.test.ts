/**
 * allowed-roles regexps against kube2iam 0.15's decision: regexp.MatchString(iam.RoleARN(entry), roleArn)
 * (mappings/mapper.go), an unanchored RE2 search; an entry that does not compile is skipped.
 * The `go` column is what Go's regexp.MatchString returns for the normalised entry
 * (an error counts as false: kube2iam logs it and goes on to the next entry).
 */
import type { NamespaceInfo, PodInfo, RolePolicy } from '../../src/roles.js';
import { resolveRole } from '../../src/roles.js';
import { BadAnnotation, RoleNotAllowed } from '../../src/errors.js';
import { compileRoleRegexp, kube2iamNormalize } from '../../src/role-patterns.js';
import { rolePolicy } from '../support/role-policy.js';

const BASE = 'arn:aws:iam::123456789012:role/';
const arn = (name: string) => BASE + name;
const NS_KEY = 'iam.amazonaws.com/allowed-roles';

// [entry, base ARN set?, role ARN, Go's MatchString decision, what it shows]
const KUBE2IAM: Array<[string, boolean, string, boolean, string]> = [
  ['app', true, arn('app'), true, 'exact name'],
  ['app', true, arn('app-admin'), true, 'unanchored at the end: a prefix allows'],
  ['app', true, arn('evil-app-admin'), false, 'the base ARN in front anchors a relative entry at the name start'],
  ['app', false, arn('evil-app-admin'), true, 'without a base ARN, "app" matches anywhere in the ARN'],
  ['(?i)APP-admin', true, arn('app-admin'), true, '(?i) in the middle of the normalised pattern'],
  ['(?i)APP-admin', true, arn('APP-ADMIN'), true, '(?i) both ways'],
  ['APP-admin', true, arn('app-admin'), false, 'case-sensitive without (?i)'],
  ['app-(web|admin)+', true, arn('app-admin'), true, 'alternation and repetition'],
  ['app-(web|admin)+', true, arn('app-webadmin'), true, 'repetition of the group'],
  ['app-(web|admin)+', true, arn('app-db'), false, 'no alternative matches'],
  ['a|b', true, arn('xyz-b'), true, 'relative alternation is (base a)|b: b anywhere allows'],
  ['a|b', true, arn('c'), false, 'no a after the base, no b anywhere'],
  ['*', true, arn('anything'), true, 'base + "*" is ".../role/*": zero or more slashes, so any role under the base'],
  ['*', false, arn('anything'), false, 'a lone * does not compile: skipped'],
  ['.*', true, arn('anything'), true, 'everything under the base'],
  ['app-[', true, arn('app-a'), false, 'bad syntax: skipped'],
  ['(a)\\1', true, arn('aa'), false, 'backreferences are not RE2: skipped'],
  ['(?=app)', true, arn('app'), false, 'lookahead is not RE2: skipped'],
  ['a**', true, arn('a'), false, 'nested repetition does not compile in RE2'],
  ['x{1001}', true, arn('x'), false, 'repeat count over 1000 does not compile'],
  ['^app$', true, arn('app'), false, 'relative ^...$: the ^ lands after the base ARN and never matches'],
  ['arn:aws:iam::123456789012:role/app-.*', true, arn('app-a'), true, 'full ARN entry'],
  ['arn:aws:iam::123456789012:role/app-.*', true, arn('xapp-a'), false, 'full ARN entry, other name'],
  ['ARN:aws:iam::123456789012:role/app', true, arn('app'), false, 'an ARN in any case is taken as is (not relative), and then case-sensitive'],
  ['arn:aws:iam::\\d{12}:role/app', true, arn('app-admin'), true, 'Perl classes, unanchored end'],
  ['^arn:aws:iam::123456789012:role/app$', true, arn('app-admin'), false, 'a full ARN entry can anchor itself'],
  ['[[:alpha:]]+-admin', true, arn('app-admin'), true, 'POSIX classes'],
  ['\\Qapp.x\\E', true, arn('app.x'), true, '\\Q...\\E literal'],
  ['\\Qapp.x\\E', true, arn('appyx'), false, '\\Q...\\E: the dot is literal'],
  ['(?P<name>app)', true, arn('app'), true, 'named groups'],
  ['\\Z', true, arn('app'), false, 'Perl \\Z is not RE2: skipped'],
];

function policy(format: RolePolicy['namespaceRestrictionFormat'], base: boolean): RolePolicy {
  return rolePolicy({ baseRoleArn: base ? BASE : undefined, namespaceKey: NS_KEY, namespaceRestrictions: true, namespaceRestrictionFormat: format });
}

function pod(roleArn: string): PodInfo {
  return { namespace: 'team-a', name: 'web-1', uid: 'u1', ips: ['10.0.0.1'], phase: 'Running', hostNetwork: false, createdMs: 0, deleting: false, annotations: { 'iam.amazonaws.com/role': roleArn } };
}

function ns(entries: string[]): NamespaceInfo {
  return { name: 'team-a', annotations: { [NS_KEY]: JSON.stringify(entries) } };
}

function allowed(entries: string[], roleArn: string, format: RolePolicy['namespaceRestrictionFormat'], base = true): boolean {
  try {
    resolveRole(pod(roleArn), ns(entries), policy(format, base));
    return true;
  } catch (err) {
    if (err instanceof RoleNotAllowed) return false;
    throw err;
  }
}

describe('regexp mode decides as kube2iam 0.15 (Go regexp.MatchString, unanchored)', () => {
  test.each(KUBE2IAM)('%j (base ARN: %s) vs %s -> %s: %s', (entry, base, roleArn, go) => {
    expect(allowed([entry], roleArn, 'regexp', base)).toBe(go);
  });

  test('an entry that does not compile is skipped, not a denial of the namespace', () => {
    expect(allowed(['app-[', '(a)\\1', 'app-.*'], arn('app-a'), 'regexp')).toBe(true);
    expect(allowed(['app-['], arn('app-a'), 'regexp')).toBe(false);
    const compiled = compileRoleRegexp('app-[', BASE, false);
    expect(compiled.invalid).toContain('missing closing ]');
  });

  test('normalisation is kube2iam iam.RoleARN: arn: prefix in any case is kept, else base + entry verbatim', () => {
    expect(kube2iamNormalize('app', BASE)).toBe(`${BASE}app`);
    expect(kube2iamNormalize('/app', BASE)).toBe(`${BASE}/app`);
    expect(kube2iamNormalize('Arn:aws:iam::1:role/x', BASE)).toBe('Arn:aws:iam::1:role/x');
    expect(kube2iamNormalize('app', undefined)).toBe('app');
  });

  test('matchesOnlyUnanchored tells entries that allow a role only as a substring', () => {
    const app = compileRoleRegexp('app', BASE, false);
    expect(app.test(arn('app-admin'))).toBe(true);
    expect(app.matchesOnlyUnanchored(arn('app-admin'))).toBe(true);
    expect(app.matchesOnlyUnanchored(arn('app'))).toBe(false);
    const exact = compileRoleRegexp('app-(web|admin)', BASE, false);
    expect(exact.matchesOnlyUnanchored(arn('app-admin'))).toBe(false);
    expect(compileRoleRegexp('app-[', BASE, false).matchesOnlyUnanchored(arn('app-a'))).toBe(false);
  });

  test('invalid JSON still denies with BadAnnotation (kube2iam reads no roles from it either)', () => {
    expect(() => resolveRole(pod(arn('a')), { name: 'team-a', annotations: { [NS_KEY]: '[app' } }, policy('regexp', true))).toThrow(BadAnnotation);
  });
});

describe('regexp-anchored mode: the whole role ARN must match', () => {
  const cases: Array<[string, string, boolean]> = [
    ['app', arn('app'), true],
    ['app', arn('app-admin'), false],
    ['app', arn('evil-app-admin'), false],
    ['(?i)APP-admin', arn('app-admin'), true],
    ['app-(web|admin)+', arn('app-admin'), true],
    ['a|b', arn('a'), true],
    ['a|b', arn('b'), true],
    ['a|b', arn('xyz-b'), false],
    ['.*', arn('anything'), true],
    ['*', arn('anything'), false],
    ['/app', arn('app'), true],
    ['arn:aws:iam::\\d{12}:role/app-[a-z]', arn('app-a'), true],
    ['arn:aws:iam::123456789012:role/app-a', arn('app-ab'), false],
    ['role/app-.*', arn('app-a'), false],
    // A group cannot be escaped: the entry must compile on its own.
    ['a)|(.*', arn('anything'), false],
    ['app-[', arn('app-a'), false],
  ];
  test.each(cases)('%j vs %s -> %s', (entry, roleArn, expected) => {
    expect(allowed([entry], roleArn, 'regexp-anchored')).toBe(expected);
  });
});
