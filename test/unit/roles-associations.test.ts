/**
 * Role resolution with associations as data (pure): precedence association > pod annotation >
 * ServiceAccount annotation (podiam's key, then IRSA's) > default role; --role-sources; the six
 * EKS session tags and disableSessionTags; role chaining requests; the association verdicts.
 */
import { parseConfig } from '../../src/config.js';
import { cacheKey } from '../../src/aws/credential-cache.js';
import { roleScoped } from '../../src/aws/session-scope.js';
import type { AssociationInfo, PodInfo, ServiceAccountInfo } from '../../src/roles.js';
import { RoleResolver, resolveRole } from '../../src/roles.js';
import { BASE_ROLE_ARN, rolePolicy } from '../support/role-policy.js';

const pod = (annotations: Record<string, string> = {}): PodInfo => ({ namespace: 'shop', name: 'web-1', uid: 'uid-1', ips: ['10.0.0.1'], phase: 'Running', hostNetwork: false, createdMs: 0, deleting: false, annotations, serviceAccount: 'web' });
const sa = (annotations: Record<string, string>): ServiceAccountInfo => ({ namespace: 'shop', name: 'web', uid: 'sa-uid', annotations });
const assoc = (over: Partial<AssociationInfo> = {}): AssociationInfo => ({ name: 'shop-web', namespace: 'shop', serviceAccount: 'web', roleArn: `${BASE_ROLE_ARN}from-association`, disableSessionTags: false, ...over });
const all = (p: PodInfo, s?: ServiceAccountInfo, a?: AssociationInfo, policy = rolePolicy({ defaultRole: 'fallback' })) => resolveRole(p, undefined, policy, undefined, s, a);

test('precedence: association > pod annotation > ServiceAccount (podiam key > IRSA) > default role', () => {
  const annotatedPod = pod({ 'iam.amazonaws.com/role': 'from-pod' });
  const bothKeys = sa({ 'iam.amazonaws.com/role': 'from-sa', 'eks.amazonaws.com/role-arn': `${BASE_ROLE_ARN}from-irsa` });
  expect(all(annotatedPod, bothKeys, assoc()).roleName).toBe('from-association');
  expect(all(annotatedPod, bothKeys).roleName).toBe('from-pod');
  expect(all(pod(), bothKeys).roleName).toBe('from-sa');
  expect(all(pod(), sa({ 'eks.amazonaws.com/role-arn': `${BASE_ROLE_ARN}from-irsa` })).roleName).toBe('from-irsa');
  expect(all(pod(), sa({})).roleName).toBe('fallback');
});

test('--role-sources=associations: only the association; annotations and the default role are not read', () => {
  const policy = rolePolicy({ defaultRole: 'fallback', roleSources: new Set(['associations'] as const) });
  expect(all(pod({ 'iam.amazonaws.com/role': 'from-pod' }), undefined, assoc(), policy).roleName).toBe('from-association');
  expect(() => all(pod({ 'iam.amazonaws.com/role': 'from-pod' }), sa({ 'iam.amazonaws.com/role': 'x' }), undefined, policy)).toThrow(/no role from the sources --role-sources allows \(associations\)/);
  // Associations left out: the association is ignored.
  const noAssoc = rolePolicy({ roleSources: new Set(['pod-annotation'] as const) });
  expect(all(pod({ 'iam.amazonaws.com/role': 'from-pod' }), undefined, assoc(), noAssoc).roleName).toBe('from-pod');
});

test('an association tags its sessions with all six EKS tags unless disableSessionTags', () => {
  const policy = rolePolicy({ clusterArn: 'arn:aws:eks:eu-west-1:123456789012:cluster/prod', clusterName: 'prod' });
  expect(all(pod(), undefined, assoc(), policy).tags).toEqual([
    ['eks-cluster-arn', 'arn:aws:eks:eu-west-1:123456789012:cluster/prod'],
    ['eks-cluster-name', 'prod'],
    ['kubernetes-namespace', 'shop'],
    ['kubernetes-service-account', 'web'],
    ['kubernetes-pod-name', 'web-1'],
    ['kubernetes-pod-uid', 'uid-1'],
  ]);
  expect(all(pod(), undefined, assoc({ disableSessionTags: true }), policy).tags).toBeUndefined();
});

test('targetRoleArn: a chained request whose first hop is roleArn; the external id is the target’s; part of the cache key', () => {
  const chained = all(pod(), undefined, assoc({ targetRoleArn: 'arn:aws:iam::210987654321:role/target', externalId: 'ext-1' }));
  expect(chained).toMatchObject({ roleArn: 'arn:aws:iam::210987654321:role/target', roleName: 'target', externalId: 'ext-1', association: 'shop-web' });
  expect(chained.sourceRole).toMatchObject({ roleArn: `${BASE_ROLE_ARN}from-association`, externalId: undefined });
  const direct = all(pod({ 'iam.amazonaws.com/role': 'arn:aws:iam::210987654321:role/target' }));
  expect(cacheKey(chained)).not.toBe(cacheKey({ ...direct, externalId: 'ext-1' }));
  // --session-scope=role keeps the chain (shared, untagged).
  const scoped = roleScoped({ resolve: () => chained }, 'node-1').resolve(pod(), undefined);
  expect(scoped).toMatchObject({ roleArn: chained.roleArn, sourceRole: { roleArn: chained.sourceRole!.roleArn } });
  expect((scoped as { tags?: unknown }).tags).toBeUndefined();
});

test('verdicts: InvalidArn for an ARN the schema’s CEL rule refuses; namespace restrictions apply to the role the pod ends with', () => {
  const resolver = new RoleResolver(rolePolicy({ namespaceRestrictions: true }));
  const ns = { name: 'shop', annotations: { 'iam.amazonaws.com/allowed-roles': '["from-*"]' } };
  expect(resolver.checkAssociation(assoc(), ns)).toBeUndefined();
  expect(resolver.checkAssociation(assoc({ roleArn: `${BASE_ROLE_ARN}path/` }), ns)).toMatchObject({ code: 'InvalidAssociation' });
  expect(resolver.checkAssociation(assoc({ targetRoleArn: 'arn:aws:iam::210987654321:role/target' }), ns)).toMatchObject({ code: 'RoleNotAllowed' });
  // The resolver memoises per association object: a new object is resolved again.
  const p = pod();
  const a = assoc();
  expect(resolver.resolve(p, ns, undefined, a)).toBe(resolver.resolve(p, ns, undefined, a));
  expect(resolver.resolve(p, ns, undefined, assoc({ roleArn: `${BASE_ROLE_ARN}from-other` }))).toMatchObject({ roleName: 'from-other' });
});

test('flags: --role-sources and --cluster-arn (cluster name derived), with errors naming the flag', () => {
  const run = (...args: string[]) => {
    const r = parseConfig(['--node=n', ...args], {});
    if (r.kind !== 'run') throw new Error('not a run');
    return r.config;
  };
  expect(run().roleSources).toBeUndefined();
  expect([...run('--role-sources=associations,default-role').roleSources!]).toEqual(['associations', 'default-role']);
  expect(() => run('--role-sources=associatons')).toThrow(/--role-sources.*"associatons" is not a role source/);
  expect(run('--cluster-arn=arn:aws:eks:eu-west-1:123456789012:cluster/prod-eu')).toMatchObject({ clusterArn: 'arn:aws:eks:eu-west-1:123456789012:cluster/prod-eu', clusterName: 'prod-eu' });
  expect(run('--cluster-arn=arn:aws:eks:eu-west-1:123456789012:cluster/prod-eu', '--cluster-name=other').clusterName).toBe('other');
  expect(() => run('--cluster-arn=prod-eu')).toThrow(/--cluster-arn.*not an EKS cluster ARN/);
});
