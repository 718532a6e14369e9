/**
 * The PodIdentityAssociation CRD as shipped (manifests/base/podidentityassociation-crd.yaml):
 * a structural schema (every field typed), cluster-scoped (only the platform team creates it),
 * a status subresource, the agent's path (group, version, plural), and validation. The
 * OpenAPI patterns are evaluated here (as the API server does); CEL rules cannot be evaluated
 * without an API server, so they are checked for presence and wording.
 */
import { parse } from 'yaml';
import { readFileSync } from 'node:fs';
import { ASSOCIATIONS_PATH } from '../../src/kube/association-index.js';
import { isRoleArn } from '../../src/config.js';
import { CRD_FILE, associationSchema, validateAgainst } from '../support/kube-association-api.js';

type Obj = Record<string, any>;
const crd = parse(readFileSync(CRD_FILE, 'utf8')) as Obj;
const schema = associationSchema();
const spec = schema.properties.spec as Obj;

function errorsFor(value: Obj): string[] {
  const errors: string[] = [];
  validateAgainst({ type: 'object', properties: { spec }, required: ['spec'] }, { spec: value }, '', errors);
  return errors;
}

test('cluster-scoped, served at the path the agent lists and watches, with a status subresource', () => {
  expect(crd.spec.scope).toBe('Cluster');
  const version = crd.spec.versions.find((v: Obj) => v.storage);
  expect(`/apis/${crd.spec.group}/${version.name}/${crd.spec.names.plural}`).toBe(ASSOCIATIONS_PATH);
  expect(crd.metadata.name).toBe(`${crd.spec.names.plural}.${crd.spec.group}`);
  expect(version.subresources).toEqual({ status: {} });
});

test('structural: every property has a type, all the way down', () => {
  const untyped: string[] = [];
  const walk = (s: Obj, at: string): void => {
    if (s.type === undefined) untyped.push(at);
    for (const [k, sub] of Object.entries((s.properties ?? {}) as Record<string, Obj>)) walk(sub, `${at}.${k}`);
    if (s.items !== undefined) walk(s.items as Obj, `${at}[]`);
  };
  walk(schema, '');
  expect(untyped).toEqual([]);
  expect(spec.required).toEqual(['namespace', 'serviceAccount', 'roleArn']);
});

test('the ARN patterns: a well-formed role ARN passes, malformed ones are rejected, and they agree with the agent’s own check', () => {
  const ok = { namespace: 'shop', serviceAccount: 'web', roleArn: 'arn:aws:iam::123456789012:role/team/web' };
  expect(errorsFor(ok)).toEqual([]);
  expect(errorsFor({ ...ok, targetRoleArn: 'arn:aws-cn:iam::210987654321:role/x', externalId: 'ext-1', disableSessionTags: true })).toEqual([]);
  const malformed = ['arn:aws:iam::12345:role/short', 'arn:aws:iam::123456789012:user/alice', 'arn:aws:sts::123456789012:role/x', 'web', 'arn:aws:iam::123456789012:role/', 'arn:aws:iam::123456789012:role/a b'];
  for (const roleArn of malformed) {
    expect([roleArn, errorsFor({ ...ok, roleArn })]).toEqual([roleArn, [expect.stringMatching(/^spec\.roleArn: Invalid value/)]]);
    expect(errorsFor({ ...ok, targetRoleArn: roleArn })).toEqual([expect.stringMatching(/^spec\.targetRoleArn: Invalid value/)]);
    expect(isRoleArn(roleArn) && !roleArn.endsWith('/')).toBe(false);
  }
  expect(errorsFor({ ...ok, externalId: 'x' })).toEqual([expect.stringMatching(/^spec\.externalId/)]);
  expect(errorsFor({ ...ok, namespace: 'Shop' })).toEqual([expect.stringMatching(/^spec\.namespace/)]);
  expect(errorsFor({ namespace: 'shop', serviceAccount: 'web' })).toEqual(['spec.roleArn: Required value']);
});

test('CEL rules: ARNs name a role (no trailing /), the target differs, namespace and serviceAccount are immutable', () => {
  const rules = (s: Obj): string[] => ((s['x-kubernetes-validations'] ?? []) as Obj[]).map((r) => r.rule as string);
  expect(rules(spec.properties.roleArn)).toEqual(["!self.endsWith('/')"]);
  expect(rules(spec.properties.targetRoleArn)).toEqual(["!self.endsWith('/')"]);
  expect(rules(spec)).toEqual(['self.namespace == oldSelf.namespace && self.serviceAccount == oldSelf.serviceAccount', '!has(self.targetRoleArn) || self.targetRoleArn != self.roleArn']);
  for (const r of [...(spec['x-kubernetes-validations'] as Obj[]), ...(spec.properties.roleArn['x-kubernetes-validations'] as Obj[])]) expect(r.message).toMatch(/\w{4,}/);
  // The trailing-slash ARN passes the pattern: the CEL rule is what refuses it (and the agent's status says InvalidArn).
  expect(errorsFor({ namespace: 'shop', serviceAccount: 'web', roleArn: 'arn:aws:iam::123456789012:role/path/' })).toEqual([]);
});

test('status: the Accepted condition the agent writes fits the schema', () => {
  const errors: string[] = [];
  validateAgainst(schema.properties.status as Obj, { observedGeneration: 2, conditions: [{ type: 'Accepted', status: 'False', reason: 'InvalidArn', message: 'm', observedGeneration: 2, lastTransitionTime: '2026-12-05T01:00:00Z' }] }, 'status', errors);
  expect(errors).toEqual([]);
  validateAgainst(schema.properties.status as Obj, { conditions: [{ type: 'Accepted', status: 'Maybe' }] }, 'status', errors);
  expect(errors).toEqual([expect.stringMatching(/status\.conditions\[0\]\.status/)]);
});
