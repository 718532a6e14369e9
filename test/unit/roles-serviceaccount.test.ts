/** Roles per ServiceAccount and session tags: resolveRole's additions for the token path. */
import { BadAnnotation, NoRoleForPod, RoleNotAllowed } from '../../src/errors.js';
import type { PodInfo, ServiceAccountInfo } from '../../src/roles.js';
import { RoleResolver, allowedRoles, resolveRole } from '../../src/roles.js';
import { cacheKey } from '../../src/aws/credential-cache.js';
import { rolePolicy } from '../support/role-policy.js';

const BASE = 'arn:aws:iam::123456789012:role/';
const ROLE_KEY = 'iam.amazonaws.com/role';
const policy = rolePolicy;
const pod = (annotations: Record<string, string> = {}, o: Partial<PodInfo> = {}): PodInfo => ({ namespace: 'apps', name: 'web-1', uid: 'uid-1', ips: ['10.1.0.5'], phase: 'Running', hostNetwork: false, createdMs: 1, deleting: false, annotations, serviceAccount: 'web', ...o });
const sa = (role?: string): ServiceAccountInfo => ({ namespace: 'apps', name: 'web', uid: 'sa-uid', annotations: role === undefined ? {} : { [ROLE_KEY]: role } });

test("an unannotated pod gets its ServiceAccount's role; the pod's own annotation wins", () => {
  expect(resolveRole(pod(), undefined, policy(), allowedRoles, sa('reports')).roleArn).toBe(`${BASE}reports`);
  expect(resolveRole(pod(), undefined, policy(), allowedRoles, sa(`${BASE}full-arn`)).roleArn).toBe(`${BASE}full-arn`);
  expect(resolveRole(pod({ [ROLE_KEY]: 'own' }), undefined, policy(), allowedRoles, sa('reports')).roleArn).toBe(`${BASE}own`);
  expect(() => resolveRole(pod(), undefined, policy(), allowedRoles, sa())).toThrow(NoRoleForPod);
  expect(resolveRole(pod(), undefined, policy({ defaultRole: 'fallback' }), allowedRoles, sa()).roleArn).toBe(`${BASE}fallback`);
  expect(() => resolveRole(pod(), undefined, policy(), allowedRoles, sa('bad name!'))).toThrow(/serviceaccount apps\/web/);
  expect(() => resolveRole(pod(), undefined, policy(), allowedRoles, sa('bad name!'))).toThrow(BadAnnotation);
});

test("namespace restrictions apply to the ServiceAccount's role too", () => {
  const ns = { name: 'apps', annotations: { 'iam.amazonaws.com/allowed-roles': '["web-*"]' } };
  const p = policy({ namespaceRestrictions: true });
  expect(() => resolveRole(pod(), ns, p, allowedRoles, sa('reports'))).toThrow(RoleNotAllowed);
  expect(resolveRole(pod(), ns, p, allowedRoles, sa('web-api')).roleArn).toBe(`${BASE}web-api`);
});

test('the resolver follows a ServiceAccount that changes', () => {
  const resolver = new RoleResolver(policy());
  const p = pod();
  expect((resolver.resolve(p, undefined, sa('one')) as { roleName: string }).roleName).toBe('one');
  expect((resolver.resolve(p, undefined, sa('two')) as { roleName: string }).roleName).toBe('two');
  expect(resolver.resolve(p, undefined, undefined)).toBeInstanceOf(NoRoleForPod);
});

test('--session-tags: the tags EKS Pod Identity sets, and they are part of the cache key', () => {
  const tagged = resolveRole(pod({ [ROLE_KEY]: 'r' }), undefined, policy({ sessionTags: true, clusterName: 'prod' }));
  expect(tagged.tags).toEqual([
    ['eks-cluster-name', 'prod'],
    ['kubernetes-namespace', 'apps'],
    ['kubernetes-service-account', 'web'],
    ['kubernetes-pod-name', 'web-1'],
    ['kubernetes-pod-uid', 'uid-1'],
  ]);
  const plain = resolveRole(pod({ [ROLE_KEY]: 'r' }), undefined, policy());
  expect(plain.tags).toBeUndefined();
  const otherUid = resolveRole(pod({ [ROLE_KEY]: 'r' }, { uid: 'uid-2' }), undefined, policy({ sessionTags: true }));
  expect(new Set([cacheKey(tagged), cacheKey(plain), cacheKey(otherUid)]).size).toBe(3);
  expect(resolveRole(pod({ [ROLE_KEY]: 'r' }, { serviceAccount: undefined }), undefined, policy({ sessionTags: true })).tags).toContainEqual(['kubernetes-service-account', 'default']);
});
