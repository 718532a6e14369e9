/** admit(): every way through one AdmissionReview, with in-memory Namespaces and ServiceAccounts. */
import { admit } from '../../src/webhook/admission.js';
import type { Lookups } from '../../src/webhook/lookups.js';
import type { MutateOptions, ObjectFacts } from '../../src/webhook/mutate.js';

type Obj = Record<string, any>;
const OPTIONS: MutateOptions = { tokenAudience: 'pods.eks.amazonaws.com', roleKey: 'iam.amazonaws.com/role', optInKey: 'podiam.io/token-identity', injectAllWithRole: false };
const ROLE = 'arn:aws:iam::123456789012:role/app';

function fakeLookups(namespaces: Record<string, ObjectFacts>, serviceAccounts: Record<string, ObjectFacts>, fail?: 'namespace' | 'serviceaccount') {
  const calls: string[] = [];
  const lookups: Lookups = {
    async namespace(name) {
      calls.push(`ns ${name}`);
      if (fail === 'namespace') throw new Error('namespace x: no answer within 1000 ms');
      return namespaces[name];
    },
    async serviceAccount(ns, name) {
      calls.push(`sa ${ns}/${name}`);
      if (fail === 'serviceaccount') throw new Error('HTTP 403');
      return serviceAccounts[`${ns}/${name}`];
    },
  };
  return { lookups, calls };
}

function review(object: unknown, request: Obj = {}): Obj {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: { uid: 'req-1', kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, operation: 'CREATE', namespace: 'team-a', object, ...request },
  };
}

function pod(annotations: Record<string, string> = {}, extra: Obj = {}): Obj {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { generateName: 'web-', annotations }, spec: { serviceAccountName: 'app', containers: [{ name: 'app', image: 'x' }], ...extra } };
}
const facts = (labels: Record<string, string> = {}, annotations: Record<string, string> = {}): ObjectFacts => ({ labels, annotations });
const OPT_IN = { 'podiam.io/token-identity': 'true' };

test('an opted-in pod with a role on its ServiceAccount is mutated: the patch is base64 JSON Patch for the pod', async () => {
  const { lookups, calls } = fakeLookups({}, { 'team-a/app': facts({}, { 'iam.amazonaws.com/role': ROLE }) });
  const { review: out, outcome } = await admit(review(pod(OPT_IN)), lookups, OPTIONS);
  expect(outcome).toMatchObject({ result: 'mutated', reason: 'injected', pod: 'team-a/web-*', uid: 'req-1', role: ROLE });
  expect(calls).toEqual(['sa team-a/app']); // the pod's own opt-in needs no namespace read
  const response = (out as Obj).response;
  expect(out).toMatchObject({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' });
  expect(response).toMatchObject({ uid: 'req-1', allowed: true, patchType: 'JSONPatch' });
  expect(response.warnings).toBeUndefined();
  const patch = JSON.parse(Buffer.from(response.patch, 'base64').toString()) as Obj[];
  expect(patch.map((op) => op.path)).toEqual(['/spec/volumes', '/spec/containers/0/env', '/spec/containers/0/volumeMounts']);
});

test('a ServiceAccount with IRSA’s eks.amazonaws.com/role-arn is a role (the node agent reads it too); podiam’s key comes first', async () => {
  const { lookups } = fakeLookups({}, { 'team-a/app': facts({}, { 'eks.amazonaws.com/role-arn': ROLE }) });
  expect((await admit(review(pod(OPT_IN)), lookups, OPTIONS)).outcome).toMatchObject({ result: 'mutated', role: ROLE });
  const both = fakeLookups({}, { 'team-a/app': facts({}, { 'eks.amazonaws.com/role-arn': ROLE, 'iam.amazonaws.com/role': 'own' }) });
  expect((await admit(review(pod(OPT_IN)), both.lookups, OPTIONS)).outcome).toMatchObject({ result: 'mutated', role: 'own' });
});

test('a pod with its own role annotation needs no ServiceAccount read', async () => {
  const { lookups, calls } = fakeLookups({ 'team-a': facts({ 'podiam.io/token-identity': 'true' }) }, {});
  const { outcome } = await admit(review(pod({ 'iam.amazonaws.com/role': 'app' })), lookups, OPTIONS);
  expect(outcome).toMatchObject({ result: 'mutated', role: 'app' });
  expect(calls).toEqual(['ns team-a']);
});

describe('skips, each with its reason and no patch', () => {
  test.each([
    ['kube-system is never touched', review(pod(OPT_IN), { namespace: 'kube-system' }), {}, {}, false, 'protected-namespace'],
    ['the pod opts out', review(pod({ 'podiam.io/token-identity': 'false', 'iam.amazonaws.com/role': ROLE })), { 'team-a': facts({ 'podiam.io/token-identity': 'true' }) }, {}, true, 'opted-out'],
    ['the namespace opts out', review(pod({ 'iam.amazonaws.com/role': ROLE })), { 'team-a': facts({ 'podiam.io/token-identity': 'false' }) }, {}, true, 'opted-out'],
    ['nobody opts in', review(pod({ 'iam.amazonaws.com/role': ROLE })), { 'team-a': facts() }, {}, false, 'not-opted-in'],
    ['opted in but no role anywhere', review(pod(OPT_IN)), {}, { 'team-a/app': facts() }, false, 'no-role'],
    ['opted in, ServiceAccount missing', review(pod(OPT_IN)), {}, {}, false, 'no-role'],
    ['a bad opt-in value', review(pod({ 'podiam.io/token-identity': 'yes' })), {}, {}, false, 'bad-opt-in-value'],
    // What IRSA's webhook injects (amazon-eks-pod-identity-webhook): any one of it is enough.
    ['IRSA env on a container (AWS_ROLE_ARN)', review(pod({ ...OPT_IN, 'iam.amazonaws.com/role': ROLE }, { containers: [{ name: 'app', image: 'x', env: [{ name: 'AWS_ROLE_ARN', value: ROLE }] }] })), {}, {}, false, 'irsa-injected'],
    ['IRSA env on an init container (AWS_WEB_IDENTITY_TOKEN_FILE)', review(pod({ ...OPT_IN, 'iam.amazonaws.com/role': ROLE }, { initContainers: [{ name: 'init', image: 'x', env: [{ name: 'AWS_WEB_IDENTITY_TOKEN_FILE', value: '/var/run/secrets/eks.amazonaws.com/serviceaccount/token' }] }] })), {}, {}, false, 'irsa-injected'],
    ['the IRSA token volume', review(pod({ ...OPT_IN, 'iam.amazonaws.com/role': ROLE }, { volumes: [{ name: 'aws-iam-token', projected: { sources: [] } }] })), {}, {}, false, 'irsa-injected'],
    ['a mount of the eks.amazonaws.com token', review(pod({ ...OPT_IN, 'iam.amazonaws.com/role': ROLE }, { containers: [{ name: 'app', image: 'x', volumeMounts: [{ name: 'token', mountPath: '/var/run/secrets/eks.amazonaws.com/serviceaccount' }] }] })), {}, {}, false, 'irsa-injected'],
    ['an UPDATE', review(pod(OPT_IN), { operation: 'UPDATE' }), {}, {}, false, 'not-a-pod-create'],
    ['a subresource', review(pod(OPT_IN), { subResource: 'ephemeralcontainers' }), {}, {}, false, 'not-a-pod-create'],
    ['not a pod', review({}, { kind: { group: 'apps', version: 'v1', kind: 'Deployment' } }), {}, {}, false, 'not-a-pod-create'],
  ])('%s', async (_n, body, namespaces, serviceAccounts, all, reason) => {
    const { lookups } = fakeLookups(namespaces as Record<string, ObjectFacts>, serviceAccounts as Record<string, ObjectFacts>);
    const { review: out, outcome } = await admit(body, lookups, { ...OPTIONS, injectAllWithRole: all as boolean });
    expect(outcome).toMatchObject({ result: 'skipped', reason });
    expect((out as Obj).response).toMatchObject({ uid: 'req-1', allowed: true });
    expect((out as Obj).response.patch).toBeUndefined();
  });

  test('an already injected pod: skipped as already-injected', async () => {
    const { lookups } = fakeLookups({}, {});
    const first = await admit(review(pod({ ...OPT_IN, 'iam.amazonaws.com/role': ROLE })), lookups, OPTIONS);
    const p = pod({ ...OPT_IN, 'iam.amazonaws.com/role': ROLE });
    for (const op of JSON.parse(Buffer.from((first.review as Obj).response.patch, 'base64').toString()) as Obj[]) {
      const parts = (op.path as string).split('/').slice(1);
      let at: Obj = p;
      for (const k of parts.slice(0, -1)) at = at[k];
      const last = parts[parts.length - 1]!;
      if (last === '-') (at as unknown as unknown[]).push(op.value);
      else at[last] = op.value;
    }
    expect((await admit(review(p), lookups, OPTIONS)).outcome).toMatchObject({ result: 'skipped', reason: 'already-injected' });
  });
});

describe('bad input and failed reads: allowed, with a warning', () => {
  test.each([
    ['not an object', undefined, 'bad-review', ''],
    ['a v1beta1 review', { ...review(pod()), apiVersion: 'admission.k8s.io/v1beta1' }, 'bad-review', ''],
    ['no uid', { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { operation: 'CREATE' } }, 'bad-review', ''],
    ['object is not a pod', review('x'), 'bad-pod', 'req-1'],
    ['containers is not a list', review({ metadata: {}, spec: { containers: { a: 1 } } }), 'bad-pod', 'req-1'],
    ['no containers', review({ metadata: {}, spec: { containers: [] } }), 'bad-pod', 'req-1'],
    ['no namespace anywhere', review(pod(OPT_IN), { namespace: '' }), 'bad-pod', 'req-1'],
    ['a namespace that is not a string', review(pod(OPT_IN), { namespace: 42 }), 'bad-pod', 'req-1'],
  ])('%s', async (_n, body, reason, uid) => {
    const { lookups } = fakeLookups({}, {});
    const { review: out, outcome } = await admit(body, lookups, OPTIONS);
    expect(outcome).toMatchObject({ result: 'error', reason });
    expect((out as Obj).response).toMatchObject({ uid, allowed: true });
    expect((out as Obj).response.warnings[0]).toMatch(new RegExp(`^podiam: token identity not injected \\(${reason}\\)`));
  });

  test.each([
    ['namespace', pod({ 'iam.amazonaws.com/role': ROLE })],
    ['serviceaccount', pod(OPT_IN)],
  ] as const)('the %s read fails', async (fail, p) => {
    const { lookups } = fakeLookups({}, {}, fail);
    const { review: out, outcome } = await admit(review(p), lookups, OPTIONS);
    expect(outcome).toMatchObject({ result: 'error', reason: 'lookup-failed' });
    expect((out as Obj).response).toMatchObject({ uid: 'req-1', allowed: true });
    expect((out as Obj).response.patch).toBeUndefined();
    expect((out as Obj).response.warnings[0]).toMatch(/lookup-failed/);
  });
});

test('--inject-all-with-role: a pod with a role in a namespace that says nothing is mutated; one without a role is not', async () => {
  const { lookups, calls } = fakeLookups({ 'team-a': facts() }, { 'team-a/app': facts({}, { 'iam.amazonaws.com/role': ROLE }), 'team-a/plain': facts() });
  const all = { ...OPTIONS, injectAllWithRole: true };
  expect((await admit(review(pod()), lookups, all)).outcome).toMatchObject({ result: 'mutated', role: ROLE });
  expect(calls).toEqual(['ns team-a', 'sa team-a/app']);
  expect((await admit(review(pod({}, { serviceAccountName: 'plain' })), lookups, all)).outcome).toMatchObject({ result: 'skipped', reason: 'no-role' });
  // Without the flag, the same pod is not opted in and its ServiceAccount is not read.
  calls.length = 0;
  expect((await admit(review(pod()), lookups, OPTIONS)).outcome).toMatchObject({ result: 'skipped', reason: 'not-opted-in' });
  expect(calls).toEqual(['ns team-a']);
});

describe('only the request’s namespace is ever read (issue 19: the webhook answers anyone)', () => {
  const withRole = { 'team-a/app': facts({}, { 'iam.amazonaws.com/role': ROLE }), 'victim/app': facts({}, { 'iam.amazonaws.com/role': ROLE }) };

  test('the pod’s own namespace, when it agrees with the request’s, is fine', async () => {
    const { lookups, calls } = fakeLookups({}, withRole);
    const p = pod(OPT_IN);
    p.metadata.namespace = 'team-a';
    expect((await admit(review(p), lookups, OPTIONS)).outcome.result).toBe('mutated');
    expect(calls).toEqual(['sa team-a/app']);
  });

  test.each([
    ['the pod names another namespace than the request', { namespace: 'team-a' }, { namespace: 'victim' }, 'app'],
    ['a namespace no object can have', {}, { namespace: 'Team_A' }, 'app'],
    ['a ServiceAccount name with a slash', {}, {}, 'x/../../victim'],
    ['a ServiceAccount name of dots', {}, {}, '..'],
    ['an upper-case ServiceAccount name', {}, {}, 'App'],
  ])('%s: no read at all, not injected', async (_name, metadata, request, serviceAccountName) => {
    const { lookups, calls } = fakeLookups({}, withRole);
    const p = pod(OPT_IN, { serviceAccountName });
    Object.assign(p.metadata, metadata);
    const { review: out, outcome } = await admit(review(p, request), lookups, OPTIONS);
    expect(outcome).toMatchObject({ result: 'error', reason: 'bad-pod' });
    expect(calls).toEqual([]);
    expect((out as Obj).response.patch).toBeUndefined();
    expect((out as Obj).response.allowed).toBe(true);
  });
});
