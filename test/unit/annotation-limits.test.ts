import type { NamespaceInfo, PodInfo, RolePolicy } from '../../src/roles.js';
import { RoleResolver, resolveRole } from '../../src/roles.js';
import { checkAnnotationLimits } from '../../src/annotation-limits.js';
import { BadAnnotation } from '../../src/errors.js';
import { rolePolicy } from '../support/role-policy.js';

const BASE = 'arn:aws:iam::123456789012:role/';
const ROLE_KEY = 'iam.amazonaws.com/role';
const EXT_KEY = 'iam.amazonaws.com/external-id';
const SESSION_KEY = 'iam.amazonaws.com/session-name';
const NS_KEY = 'iam.amazonaws.com/allowed-roles';

function policy(overrides: Partial<RolePolicy> = {}): RolePolicy {
  return rolePolicy({ namespaceRestrictions: true, namespaceRestrictionFormat: 'regexp', ...overrides });
}

function pod(annotations: Record<string, string>): PodInfo {
  return { namespace: 'team-a', name: 'web-1', uid: 'u', ips: ['10.1.0.5'], phase: 'Running', hostNetwork: false, createdMs: 0, deleting: false, annotations };
}

const ns = (allowed: string): NamespaceInfo => ({ name: 'team-a', annotations: { [NS_KEY]: allowed } });

function denial(fn: () => unknown): BadAnnotation {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BadAnnotation);
    return err as BadAnnotation;
  }
  throw new Error('expected a BadAnnotation');
}

describe('role annotation: IAM limits, before any matching', () => {
  test('a role name of 64 characters is fine, 65 is refused naming the annotation', () => {
    expect(() => checkAnnotationLimits(pod({ [ROLE_KEY]: 'r'.repeat(64) }), undefined, policy())).not.toThrow();
    const err = denial(() => checkAnnotationLimits(pod({ [ROLE_KEY]: 'r'.repeat(65) }), undefined, policy()));
    expect(err.message).toContain(`pod team-a/web-1: annotation ${ROLE_KEY} is invalid: the role name has 65 characters`);
  });

  test('a full ARN: the name and the path are counted as IAM counts them', () => {
    const path = '/' + 'p'.repeat(510) + '/';
    expect(() => checkAnnotationLimits(pod({ [ROLE_KEY]: `${BASE.slice(0, -1)}${path}app` }), undefined, policy())).not.toThrow();
    const err = denial(() => checkAnnotationLimits(pod({ [ROLE_KEY]: `${BASE.slice(0, -1)}/${'p'.repeat(511)}/app` }), undefined, policy()));
    expect(err.message).toContain('the role path has 513 characters');
    expect(denial(() => checkAnnotationLimits(pod({ [ROLE_KEY]: `${BASE}${'n'.repeat(65)}` }), undefined, policy())).message).toContain('role name has 65');
  });

  test('a 64k value is refused on its length alone', () => {
    const err = denial(() => checkAnnotationLimits(pod({ [ROLE_KEY]: 'a'.repeat(65_536) }), undefined, policy()));
    expect(err.message).toContain('65536 characters; a role ARN has at most 2048');
  });

  test("the review's pattern is never evaluated against an over-long role", () => {
    const matched: string[] = [];
    const started = performance.now();
    for (const length of [600, 65_536]) {
      expect(() => resolveRole(pod({ [ROLE_KEY]: 'a'.repeat(length) }), ns('[".*a.*a.*a.*b"]'), policy(), () => [{ test: (arn) => (matched.push(arn), false) }])).toThrow(BadAnnotation);
    }
    expect(matched).toEqual([]);
    expect(performance.now() - started).toBeLessThan(1000);
  }, 2000);
});

describe("a ServiceAccount's role annotation: the same limits", () => {
  const sa = (role: string) => ({ namespace: 'team-a', name: 'builder', uid: 'sa-u', annotations: { [ROLE_KEY]: role } });

  test('over-long ServiceAccount role refused, naming the ServiceAccount; the matcher never runs', () => {
    const matched: string[] = [];
    const err = denial(() => resolveRole(pod({}), ns('[".*a.*a.*a.*b"]'), policy(), () => [{ test: (arn) => (matched.push(arn), false) }], sa('a'.repeat(600))));
    expect(err.message).toContain(`serviceaccount team-a/builder: annotation ${ROLE_KEY} is invalid: the role name has 600 characters`);
    expect(matched).toEqual([]);
  });

  test("the namespace's allowed-roles limits apply to a role that comes from the ServiceAccount", () => {
    const tooMany = JSON.stringify(Array.from({ length: 257 }, (_, i) => `r${i}`));
    expect(denial(() => checkAnnotationLimits(pod({}), ns(tooMany), policy(), sa('app'))).message).toContain('257 entries; at most 256');
    expect(() => checkAnnotationLimits(pod({}), ns(tooMany), policy())).not.toThrow();
  });
});

// resolveRole throws; call it through the resolver, which returns denials.
describe('resolver: denials are returned', () => {
  test('600-character role under ".*a.*a.*a.*b": a BadAnnotation, and the matcher never runs', () => {
    const resolver = new RoleResolver(policy());
    const result = resolver.resolve(pod({ [ROLE_KEY]: 'a'.repeat(600) }), ns('[".*a.*a.*a.*b"]'));
    expect(result).toBeInstanceOf(BadAnnotation);
    expect((result as Error).message).toContain(ROLE_KEY);
  });

  test('a pod without a role: no pattern evaluation at all', () => {
    let calls = 0;
    const p = policy({ defaultRole: 'default-role' });
    const r = resolveRole(pod({}), ns('[".*a.*a.*a.*b"]'), p, () => {
      calls++;
      return [];
    });
    expect(r.roleName).toBe('default-role');
    expect(calls).toBe(0);
  });
});

describe('other annotations', () => {
  test('external id: 1224 characters at most', () => {
    expect(() => checkAnnotationLimits(pod({ [ROLE_KEY]: 'a', [EXT_KEY]: 'x'.repeat(1224) }), undefined, policy())).not.toThrow();
    expect(denial(() => checkAnnotationLimits(pod({ [ROLE_KEY]: 'a', [EXT_KEY]: 'x'.repeat(1225) }), undefined, policy())).message).toContain(EXT_KEY);
  });

  test('session name: 64 characters at most', () => {
    expect(() => checkAnnotationLimits(pod({ [ROLE_KEY]: 'a', [SESSION_KEY]: 's'.repeat(64) }), undefined, policy())).not.toThrow();
    expect(denial(() => checkAnnotationLimits(pod({ [ROLE_KEY]: 'a', [SESSION_KEY]: 's'.repeat(65) }), undefined, policy())).message).toContain(SESSION_KEY);
  });

  test('allowed-roles: entry count, entry length and total length, naming the namespace', () => {
    const many = JSON.stringify(Array.from({ length: 257 }, (_, i) => `r${i}`));
    expect(denial(() => checkAnnotationLimits(pod({ [ROLE_KEY]: 'a' }), ns(many), policy())).message).toContain(`namespace team-a: annotation ${NS_KEY} is invalid: 257 entries`);
    const long = JSON.stringify(['x'.repeat(513)]);
    expect(denial(() => checkAnnotationLimits(pod({ [ROLE_KEY]: 'a' }), ns(long), policy())).message).toContain('an entry of 513 characters');
    const huge = JSON.stringify(['y'.repeat(70_000)]);
    expect(denial(() => checkAnnotationLimits(pod({ [ROLE_KEY]: 'a' }), ns(huge), policy())).message).toContain('at most 65536');
    // Not checked when it cannot matter: restrictions off, or no role asked for.
    expect(() => checkAnnotationLimits(pod({ [ROLE_KEY]: 'a' }), ns(many), policy({ namespaceRestrictions: false }))).not.toThrow();
    expect(() => checkAnnotationLimits(pod({}), ns(many), policy())).not.toThrow();
  });
});
