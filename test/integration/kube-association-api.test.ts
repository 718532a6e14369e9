/**
 * The test API server's PodIdentityAssociation resource (test/support/kube-association-api.ts),
 * over HTTP as the agent uses it: list and watch with resourceVersions, the status subresource
 * (status only through it; generation only on spec changes), validation and pruning from the
 * shipped CRD's schema, 404 while the CRD is not installed.
 */
import http from 'node:http';
import { KubeApiServer } from '../support/kube-api-server.js';

const PATH = '/apis/podiam.io/v1alpha1/podidentityassociations';
const ARN = 'arn:aws:iam::123456789012:role/app';
type Obj = Record<string, any>;

let kube: KubeApiServer;
beforeAll(async () => {
  kube = await KubeApiServer.start();
});
afterAll(async () => {
  await kube?.stop();
});

async function call(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; body: Obj }> {
  const r = await fetch(kube.url + path, { method, headers: body === undefined ? {} : { 'Content-Type': contentType }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json()) as Obj };
}

/** Watch events until `count` arrived (or 3 s). */
function watch(query: string, count: number): Promise<Obj[]> {
  return new Promise((resolve, reject) => {
    const events: Obj[] = [];
    const req = http.get(`${kube.url}${PATH}?watch=1&${query}`, (res) => {
      let buf = '';
      res.on('data', (c: Buffer) => {
        buf += c.toString();
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          events.push(JSON.parse(buf.slice(0, nl)) as Obj);
          buf = buf.slice(nl + 1);
          if (events.length >= count) {
            req.destroy();
            resolve(events);
          }
        }
      });
    });
    req.on('error', (err) => (events.length >= count ? undefined : reject(err)));
    setTimeout(() => {
      req.destroy();
      resolve(events);
    }, 3000).unref();
  });
}

test('create, get, list: cluster-scoped, generation 1, status dropped, unknown fields pruned, defaults set', async () => {
  const created = await call('POST', PATH, { apiVersion: 'podiam.io/v1alpha1', kind: 'PodIdentityAssociation', metadata: { name: 'a', namespace: 'ignored' }, spec: { namespace: 'shop', serviceAccount: 'web', roleArn: ARN, extra: 'x' }, status: { conditions: [{ type: 'Accepted', status: 'True' }] } });
  expect(created.status).toBe(201);
  expect(created.body).toMatchObject({ apiVersion: 'podiam.io/v1alpha1', kind: 'PodIdentityAssociation', metadata: { name: 'a', generation: 1 }, spec: { namespace: 'shop', serviceAccount: 'web', roleArn: ARN, disableSessionTags: false } });
  expect(created.body.metadata.namespace).toBeUndefined();
  expect(created.body.spec.extra).toBeUndefined();
  expect(created.body.status).toBeUndefined();
  expect((await call('GET', `${PATH}/a`)).body.metadata.uid).toBe(created.body.metadata.uid);
  const list = await call('GET', PATH);
  expect(list.body).toMatchObject({ kind: 'PodIdentityAssociationList', apiVersion: 'podiam.io/v1alpha1', metadata: { resourceVersion: kube.resourceVersion() } });
  expect(list.body.items.map((i: Obj) => i.metadata.name)).toEqual(['a']);
  expect((await call('POST', PATH, { metadata: { name: 'a' }, spec: { namespace: 'shop', serviceAccount: 'web', roleArn: ARN } })).status).toBe(409);
  expect((await call('GET', `${PATH}/missing`)).status).toBe(404);
});

test('the status subresource: only status changes, generation does not; a spec change through the resource bumps generation and keeps status', async () => {
  const before = (await call('GET', `${PATH}/a`)).body;
  const patched = await call('PATCH', `${PATH}/a/status`, { status: { observedGeneration: 1, conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', message: 'ok', observedGeneration: 1, lastTransitionTime: '2026-12-05T00:00:00Z' }] }, spec: { roleArn: 'arn:aws:iam::123456789012:role/other' } }, 'application/merge-patch+json');
  expect(patched.status).toBe(200);
  expect(patched.body.spec).toEqual(before.spec);
  expect(patched.body.metadata.generation).toBe(1);
  expect(Number(patched.body.metadata.resourceVersion)).toBeGreaterThan(Number(before.metadata.resourceVersion));
  // The same status again: a no-op, no new resourceVersion.
  const again = await call('PATCH', `${PATH}/a/status`, { status: { observedGeneration: 1 } }, 'application/merge-patch+json');
  expect(again.body.metadata.resourceVersion).toBe(patched.body.metadata.resourceVersion);
  // A bad status is refused by the schema.
  expect((await call('PATCH', `${PATH}/a/status`, { status: { conditions: [{ type: 'Accepted', status: 'Maybe' }] } }, 'application/merge-patch+json')).status).toBe(422);
  const put = await call('PUT', `${PATH}/a`, { ...patched.body, spec: { ...patched.body.spec, roleArn: 'arn:aws:iam::123456789012:role/v2' }, status: {} });
  expect(put.status).toBe(200);
  expect(put.body.metadata.generation).toBe(2);
  expect(put.body.status.conditions[0].reason).toBe('Accepted');
});

test('watch: from a resourceVersion, the changes since; from none, the current state as ADDED', async () => {
  const rv = kube.resourceVersion();
  const events = watch(`resourceVersion=${rv}`, 3);
  await new Promise((r) => setTimeout(r, 100));
  kube.associationApi.create({ metadata: { name: 'b' }, spec: { namespace: 'shop', serviceAccount: 'api', roleArn: ARN } });
  kube.associationApi.update('b', (spec) => (spec['disableSessionTags'] = true));
  kube.associationApi.remove('b');
  expect((await events).map((e) => [e.type, e.object.metadata.name, e.object.metadata.generation])).toEqual([
    ['ADDED', 'b', 1],
    ['MODIFIED', 'b', 2],
    ['DELETED', 'b', 2],
  ]);
  const initial = await watch('', 1);
  expect(initial.map((e) => [e.type, e.object.metadata.name])).toEqual([['ADDED', 'a']]);
});

test('validation from the CRD schema: a malformed ARN, a missing field, a wrong type are 422 Invalid naming the field', async () => {
  const post = (spec: Obj) => call('POST', PATH, { metadata: { name: 'bad' }, spec });
  const cases: Array<[Obj, RegExp]> = [
    [{ namespace: 'shop', serviceAccount: 'web', roleArn: 'arn:aws:iam::1234:role/x' }, /spec\.roleArn: Invalid value/],
    [{ namespace: 'shop', serviceAccount: 'web', roleArn: ARN, targetRoleArn: 'role/x' }, /spec\.targetRoleArn: Invalid value/],
    [{ namespace: 'shop', roleArn: ARN }, /spec\.serviceAccount: Required value/],
    [{ namespace: 'shop', serviceAccount: 'web', roleArn: ARN, disableSessionTags: 'yes' }, /spec\.disableSessionTags: Invalid value.*boolean/],
  ];
  for (const [spec, message] of cases) {
    const r = await post(spec);
    expect([r.status, r.body.reason]).toEqual([422, 'Invalid']);
    expect(r.body.message).toMatch(message);
  }
  expect(kube.associationApi.get('bad')).toBeUndefined();
});

test('without the CRD installed every path of the group is a 404', async () => {
  kube.associationApi.installed = false;
  try {
    expect((await call('GET', PATH)).status).toBe(404);
    expect((await call('GET', `${PATH}/a`)).status).toBe(404);
  } finally {
    kube.associationApi.installed = true;
  }
  expect((await call('GET', PATH)).status).toBe(200);
});
