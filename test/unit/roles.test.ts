import type { NamespaceInfo, PodInfo, RolePolicy } from '../../src/roles.js';
import { globToRegExp, resolveRole, sanitizeSessionName, sessionNameOf, toRoleArn } from '../../src/roles.js';
import { BadAnnotation, NoRoleForPod, RoleNotAllowed } from '../../src/errors.js';
import { rolePolicy } from '../support/role-policy.js';

const ACCOUNT = '123456789012';
const BASE = `arn:aws:iam::${ACCOUNT}:role/`;
const ROLE_KEY = 'iam.amazonaws.com/role';
const EXT_KEY = 'iam.amazonaws.com/external-id';
const SESSION_KEY = 'iam.amazonaws.com/session-name';
const NS_KEY = 'iam.amazonaws.com/allowed-roles';

const policy = rolePolicy;

function pod(annotations: Record<string, string> = {}, overrides: Partial<PodInfo> = {}): PodInfo {
  return {
    namespace: 'team-a',
    name: 'web-1',
    uid: 'uid-1',
    ips: ['10.1.0.5'],
    phase: 'Running',
    hostNetwork: false,
    createdMs: 1000,
    deleting: false,
    annotations,
    ...overrides,
  };
}

function ns(allowed: string | undefined, name = 'team-a'): NamespaceInfo {
  return { name, annotations: allowed === undefined ? {} : { [NS_KEY]: allowed } };
}

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a throw');
}

describe('resolveRole: which role', () => {
  it('appends a role name to the base ARN', () => {
    const r = resolveRole(pod({ [ROLE_KEY]: 'app-a' }), undefined, policy());
    expect(r.roleArn).toBe(`${BASE}app-a`);
    expect(r.roleName).toBe('app-a');
    expect(r.pod).toBe('team-a/web-1');
  });

  it('trims the annotation and drops leading slashes of a role name', () => {
    expect(resolveRole(pod({ [ROLE_KEY]: '  app-a ' }), undefined, policy()).roleArn).toBe(`${BASE}app-a`);
    expect(resolveRole(pod({ [ROLE_KEY]: '/app-a' }), undefined, policy()).roleArn).toBe(`${BASE}app-a`);
  });

  it('takes a full ARN as it is', () => {
    const arn = 'arn:aws:iam::210987654321:role/other';
    const r = resolveRole(pod({ [ROLE_KEY]: arn }), undefined, policy());
    expect(r.roleArn).toBe(arn);
    expect(r.roleName).toBe('other');
  });

  it('a full ARN works without a base ARN, and in other partitions', () => {
    const arn = 'arn:aws-cn:iam::210987654321:role/cn-role';
    expect(resolveRole(pod({ [ROLE_KEY]: arn }), undefined, policy({ baseRoleArn: undefined })).roleArn).toBe(arn);
  });

  it('an ARN with a path has the last segment as role name', () => {
    const arn = `${BASE}team/sub/app-a`;
    const r = resolveRole(pod({ [ROLE_KEY]: arn }), undefined, policy());
    expect(r.roleArn).toBe(arn);
    expect(r.roleName).toBe('app-a');
    const named = resolveRole(pod({ [ROLE_KEY]: 'team/app-b' }), undefined, policy());
    expect(named.roleArn).toBe(`${BASE}team/app-b`);
    expect(named.roleName).toBe('app-b');
  });

  it.each([
    'arn:aws:iam::123:role/x',
    'arn:aws:iam::123456789012:user/bob',
    `${BASE}`,
    `${BASE}a b`,
    'arn:aws:s3:::bucket',
  ])('a bad ARN %j is a BadAnnotation naming the annotation', (value) => {
    const err = thrown(() => resolveRole(pod({ [ROLE_KEY]: value }), undefined, policy()));
    expect(err).toBeInstanceOf(BadAnnotation);
    expect((err as BadAnnotation).annotation).toBe(ROLE_KEY);
    expect(err.message).toContain(ROLE_KEY);
    expect(err.message).toContain('team-a/web-1');
    expect((err as BadAnnotation).status).toBe(403);
  });

  it('a role name without a base ARN is a BadAnnotation', () => {
    const err = thrown(() => resolveRole(pod({ [ROLE_KEY]: 'app-a' }), undefined, policy({ baseRoleArn: undefined })));
    expect(err).toBeInstanceOf(BadAnnotation);
    expect(err.message).toContain(ROLE_KEY);
    expect(err.message).toContain('--base-role-arn');
  });

  it('an invalid role name is a BadAnnotation', () => {
    expect(thrown(() => resolveRole(pod({ [ROLE_KEY]: 'bad name!' }), undefined, policy()))).toBeInstanceOf(BadAnnotation);
    expect(thrown(() => resolveRole(pod({ [ROLE_KEY]: 'dir/' }), undefined, policy()))).toBeInstanceOf(BadAnnotation);
  });

  it('no annotation and no default role -> NoRoleForPod', () => {
    const err = thrown(() => resolveRole(pod(), undefined, policy()));
    expect(err).toBeInstanceOf(NoRoleForPod);
    expect(err.message).toContain('team-a/web-1');
    expect(err.message).toContain(ROLE_KEY);
    expect(thrown(() => resolveRole(pod({ [ROLE_KEY]: '   ' }), undefined, policy()))).toBeInstanceOf(NoRoleForPod);
  });

  it('no annotation -> the default role (name or ARN)', () => {
    expect(resolveRole(pod(), undefined, policy({ defaultRole: 'fallback' })).roleArn).toBe(`${BASE}fallback`);
    const arn = 'arn:aws:iam::210987654321:role/fallback';
    expect(resolveRole(pod(), undefined, policy({ defaultRole: arn })).roleArn).toBe(arn);
    expect(resolveRole(pod({ [ROLE_KEY]: '' }), undefined, policy({ defaultRole: 'fallback' })).roleArn).toBe(`${BASE}fallback`);
  });

  it('an annotation beats the default role', () => {
    expect(resolveRole(pod({ [ROLE_KEY]: 'app-a' }), undefined, policy({ defaultRole: 'fallback' })).roleArn).toBe(`${BASE}app-a`);
  });

  it('a default role name without a base ARN blames the flag', () => {
    const err = thrown(() => resolveRole(pod(), undefined, policy({ baseRoleArn: undefined, defaultRole: 'fallback' })));
    expect(err).toBeInstanceOf(BadAnnotation);
    expect(err.message).toContain('--default-role');
  });

  it('honours custom annotation keys', () => {
    const r = resolveRole(pod({ 'example.com/role': 'custom' }), undefined, policy({ roleKey: 'example.com/role' }));
    expect(r.roleArn).toBe(`${BASE}custom`);
  });

  it('toRoleArn', () => {
    expect(toRoleArn('x', BASE)).toBe(`${BASE}x`);
    expect(toRoleArn('x', undefined)).toBeUndefined();
    expect(toRoleArn(`${BASE}x/`, BASE)).toBeUndefined();
    expect(toRoleArn('x y', BASE)).toBeUndefined();
  });
});

describe('resolveRole: namespace restrictions (glob)', () => {
  const restricted = policy({ namespaceRestrictions: true });
  const resolve = (role: string, allowed: string | undefined, p: RolePolicy = restricted) => resolveRole(pod({ [ROLE_KEY]: role }), ns(allowed), p);

  it('allows roles matching a relative glob and denies others', () => {
    expect(resolve('app-a', '["app-*"]').roleArn).toBe(`${BASE}app-a`);
    const err = thrown(() => resolve('db-a', '["app-*"]'));
    expect(err).toBeInstanceOf(RoleNotAllowed);
    expect(err.message).toContain(`${BASE}db-a`);
    expect(err.message).toContain('team-a');
    expect(err.message).toContain(NS_KEY);
  });

  it('a glob is anchored: app-* does not allow xapp-a', () => {
    expect(thrown(() => resolve('xapp-a', '["app-*"]'))).toBeInstanceOf(RoleNotAllowed);
    expect(thrown(() => resolve('app', '["app-*"]'))).toBeInstanceOf(RoleNotAllowed);
  });

  it('an exact entry allows only that role', () => {
    expect(resolve('app-a', '["app-a"]').roleName).toBe('app-a');
    expect(thrown(() => resolve('app-ab', '["app-a"]'))).toBeInstanceOf(RoleNotAllowed);
  });

  it('full-ARN globs', () => {
    expect(resolve('app-a', `["${BASE}app-*"]`).roleName).toBe('app-a');
    expect(resolve('arn:aws:iam::210987654321:role/x', '["arn:aws:iam::210987654321:role/*"]').roleName).toBe('x');
    expect(thrown(() => resolve('app-a', '["arn:aws:iam::210987654321:role/*"]'))).toBeInstanceOf(RoleNotAllowed);
  });

  it('* crosses /', () => {
    expect(resolve('team/sub/app-a', '["team/*"]').roleName).toBe('app-a');
    expect(resolve('team/sub/app-a', '["*"]').roleName).toBe('app-a');
    expect(resolve(`${BASE}x/y/z`, '["arn:aws:iam::*:role/*"]').roleName).toBe('z');
  });

  it('glob special characters other than * are literal', () => {
    expect(thrown(() => resolve('appXa', '["app.a"]'))).toBeInstanceOf(RoleNotAllowed);
    expect(resolve('app.a', '["app.a"]').roleName).toBe('app.a');
    expect(globToRegExp('a+b', undefined).test('a+b')).toBe(true);
    expect(globToRegExp('a+b', undefined).test('aab')).toBe(false);
  });

  it('any of several entries allows', () => {
    expect(resolve('db-a', '["app-*", "db-a"]').roleName).toBe('db-a');
  });

  it('no annotation, an empty list or no namespace -> denied', () => {
    expect(thrown(() => resolve('app-a', undefined))).toBeInstanceOf(RoleNotAllowed);
    expect(thrown(() => resolve('app-a', '[]'))).toBeInstanceOf(RoleNotAllowed);
    expect(thrown(() => resolve('app-a', ' '))).toBeInstanceOf(RoleNotAllowed);
    expect(thrown(() => resolveRole(pod({ [ROLE_KEY]: 'app-a' }), undefined, restricted))).toBeInstanceOf(RoleNotAllowed);
  });

  it('restrictions off -> any role, whatever the namespace says', () => {
    expect(resolve('db-a', '["app-*"]', policy()).roleName).toBe('db-a');
  });

  it('the default role is allowed regardless of namespace restrictions', () => {
    const p = policy({ namespaceRestrictions: true, defaultRole: 'fallback' });
    expect(resolveRole(pod(), ns('["app-*"]'), p).roleArn).toBe(`${BASE}fallback`);
    expect(resolveRole(pod(), ns(undefined), p).roleArn).toBe(`${BASE}fallback`);
    expect(resolveRole(pod(), undefined, p).roleArn).toBe(`${BASE}fallback`);
    // Even a broken namespace annotation does not block the default role.
    expect(resolveRole(pod(), ns('not json'), p).roleArn).toBe(`${BASE}fallback`);
  });

  // kube2iam (mappings/mapper.go checkRoleForNamespace) allows the default role by ARN
  // (`roleArn == r.defaultRoleARN`), so a pod that names the default role explicitly is allowed too.
  it('a pod that names the default role explicitly is allowed too (kube2iam compatibility)', () => {
    const p = policy({ namespaceRestrictions: true, defaultRole: 'fallback' });
    expect(resolveRole(pod({ [ROLE_KEY]: 'fallback' }), ns('["app-*"]'), p).roleArn).toBe(`${BASE}fallback`);
  });

  it('invalid JSON -> BadAnnotation naming the namespace and the annotation', () => {
    const err = thrown(() => resolve('app-a', '[app-*'));
    expect(err).toBeInstanceOf(BadAnnotation);
    expect((err as BadAnnotation).object).toBe('namespace team-a');
    expect((err as BadAnnotation).annotation).toBe(NS_KEY);
    expect(err.message).toContain('namespace team-a');
    expect(err.message).toContain(NS_KEY);
    expect(err.message).toContain('JSON');
  });

  it.each(['"app-*"', '{"roles":["app-*"]}', '[1]', '["app-*", null]', 'null'])('non-array-of-strings JSON %s -> BadAnnotation', (raw) => {
    const err = thrown(() => resolve('app-a', raw));
    expect(err).toBeInstanceOf(BadAnnotation);
    expect(err.message).toContain('namespace team-a');
    expect(err.message).toContain(NS_KEY);
  });
});

describe('resolveRole: external id', () => {
  it('is taken from the annotation when valid', () => {
    expect(resolveRole(pod({ [ROLE_KEY]: 'app-a', [EXT_KEY]: 'ext-id:1/2=3' }), undefined, policy()).externalId).toBe('ext-id:1/2=3');
  });

  it('is undefined without (or with an empty) annotation', () => {
    expect(resolveRole(pod({ [ROLE_KEY]: 'app-a' }), undefined, policy()).externalId).toBeUndefined();
    expect(resolveRole(pod({ [ROLE_KEY]: 'app-a', [EXT_KEY]: '' }), undefined, policy()).externalId).toBeUndefined();
  });

  it.each(['x', 'has space', 'bad\u00e9', 'a'.repeat(1225), 'semi;colon'])('invalid %j -> BadAnnotation naming the annotation', (value) => {
    const err = thrown(() => resolveRole(pod({ [ROLE_KEY]: 'app-a', [EXT_KEY]: value }), undefined, policy()));
    expect(err).toBeInstanceOf(BadAnnotation);
    expect(err.message).toContain(EXT_KEY);
    expect(err.message).toContain('team-a/web-1');
  });

  it('accepts 2 and 1224 characters', () => {
    expect(resolveRole(pod({ [ROLE_KEY]: 'app-a', [EXT_KEY]: 'ab' }), undefined, policy()).externalId).toBe('ab');
    const long = 'a'.repeat(1224);
    expect(resolveRole(pod({ [ROLE_KEY]: 'app-a', [EXT_KEY]: long }), undefined, policy()).externalId).toBe(long);
  });
});

describe('session names', () => {
  const STS_NAME = /^[\w+=,.@-]{2,64}$/;

  it('default to namespace.pod', () => {
    expect(resolveRole(pod({ [ROLE_KEY]: 'app-a' }), undefined, policy()).sessionName).toBe('team-a.web-1');
  });

  it('come from the annotation, sanitised to [\\w+=,.@-]', () => {
    const r = resolveRole(pod({ [ROLE_KEY]: 'app-a', [SESSION_KEY]: 'my session/name:1!' }), undefined, policy());
    expect(r.sessionName).toBe('team-a.my-session-name-1-');
    expect(r.sessionName).toMatch(STS_NAME);
    expect(sessionNameOf({ namespace: 'n', name: 'p', annotations: { [SESSION_KEY]: 'ok+=,.@-_x' } }, SESSION_KEY)).toBe('n.ok+=,.@-_x');
  });

  it("never name another namespace's pod: the annotation is prefixed with the pod's own namespace", () => {
    expect(sessionNameOf({ namespace: 'attacker', name: 'p', annotations: { [SESSION_KEY]: 'victims.db-0' } }, SESSION_KEY)).toBe('attacker.victims.db-0');
    // A namespace name has no dots, so `attacker.` can only mean namespace attacker.
    expect(sessionNameOf({ namespace: 'attack', name: 'p', annotations: { [SESSION_KEY]: 'attacker.db-0' } }, SESSION_KEY)).toBe('attack.attacker.db-0');
    // Already naming its own namespace: used as it is.
    expect(sessionNameOf({ namespace: 'team-a', name: 'p', annotations: { [SESSION_KEY]: 'team-a.batch' } }, SESSION_KEY)).toBe('team-a.batch');
  });

  it('a blank annotation falls back to namespace.pod', () => {
    expect(sessionNameOf({ namespace: 'n', name: 'p', annotations: { [SESSION_KEY]: '  ' } }, SESSION_KEY)).toBe('n.p');
  });

  it('are at most 64 characters', () => {
    const name = sanitizeSessionName('x'.repeat(300));
    expect(name.length).toBeLessThanOrEqual(64);
    expect(name).toMatch(STS_NAME);
    expect(sanitizeSessionName('y'.repeat(64))).toBe('y'.repeat(64));
  });

  it('long names are truncated to 64 with a hash, so two long names differ', () => {
    const common = 'a-very-long-namespace-name-for-testing.' + 'a-very-long-pod-name-that-keeps-going-';
    const a = sessionNameOf({ namespace: 'ns', name: 'p', annotations: { [SESSION_KEY]: `${common}one` } }, SESSION_KEY);
    const b = sessionNameOf({ namespace: 'ns', name: 'p', annotations: { [SESSION_KEY]: `${common}two` } }, SESSION_KEY);
    expect(a).toHaveLength(64);
    expect(b).toHaveLength(64);
    expect(a).not.toBe(b);
    expect(a.slice(0, 40)).toBe(`ns.${common}`.slice(0, 40));
    expect(a).toMatch(STS_NAME);
    // Stable: the same input gives the same name.
    expect(sanitizeSessionName(`ns.${common}one`)).toBe(a);
  });

  it('a long default name (long namespace and pod) is truncated too', () => {
    const r = resolveRole(pod({ [ROLE_KEY]: 'app-a' }, { namespace: 'n'.repeat(63), name: 'p'.repeat(63) }), undefined, policy());
    expect(r.sessionName).toHaveLength(64);
    expect(r.sessionName).toMatch(STS_NAME);
  });

  it('a one-character name is padded to the STS minimum of 2', () => {
    expect(sanitizeSessionName('a')).toMatch(STS_NAME);
  });
});
