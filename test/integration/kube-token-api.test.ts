/**
 * The test API server's token side is faithful: TokenRequest issues bound RS256 JWTs with the
 * real claims layout that verify against its published JWKS, and TokenReview refuses what
 * kube-apiserver refuses (forged, expired, wrong audience, bound pod gone or recreated).
 */
import { createPublicKey, verify } from 'node:crypto';
import { KubeApiServer } from '../support/kube-api-server.js';
import { decode } from '../support/kube-token-api.js';

let kube: KubeApiServer;

beforeAll(async () => {
  kube = await KubeApiServer.start();
  kube.createNamespace({ metadata: { name: 'apps' } });
  kube.createServiceAccount({ metadata: { name: 'web', namespace: 'apps' } });
  kube.createPod({ metadata: { name: 'web-1', namespace: 'apps' }, spec: { nodeName: 'node-1', serviceAccountName: 'web', containers: [] }, status: { phase: 'Running' } });
});
afterAll(() => kube.stop());

async function post(path: string, body: unknown): Promise<{ status: number; body: Record<string, any> }> {
  const r = await fetch(kube.url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, body: (await r.json()) as Record<string, any> };
}

async function tokenFor(pod: string, audiences = ['pods.eks.amazonaws.com'], uid?: string): Promise<{ status: number; body: Record<string, any> }> {
  return post('/api/v1/namespaces/apps/serviceaccounts/web/token', {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: { audiences, expirationSeconds: 86400, boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: pod, uid } },
  });
}

function review(token: string, audiences = ['pods.eks.amazonaws.com']) {
  return post('/apis/authentication.k8s.io/v1/tokenreviews', { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences } });
}

test('TokenRequest issues a pod-bound RS256 JWT with the real claims, verifiable with /openid/v1/jwks', async () => {
  const pod = kube.getPod('apps', 'web-1')!;
  const r = await tokenFor('web-1', ['pods.eks.amazonaws.com'], pod.metadata.uid);
  expect(r.status).toBe(201);
  expect(r.body.kind).toBe('TokenRequest');
  const token = r.body.status.token as string;
  const claims = decode(token)!;
  expect(claims.sub).toBe('system:serviceaccount:apps:web');
  expect(claims.aud).toEqual(['pods.eks.amazonaws.com']);
  expect(claims.exp - claims.iat).toBe(86400);
  expect(claims.nbf).toBe(claims.iat);
  expect(claims['kubernetes.io'].namespace).toBe('apps');
  expect(claims['kubernetes.io'].pod).toEqual({ name: 'web-1', uid: pod.metadata.uid });
  expect(claims['kubernetes.io'].serviceaccount).toEqual({ name: 'web', uid: kube.getServiceAccount('apps', 'web')!.metadata.uid });
  expect(r.body.status.expirationTimestamp).toBe(new Date(claims.exp * 1000).toISOString().replace('.000Z', 'Z'));

  const jwks = (await (await fetch(kube.url + '/openid/v1/jwks')).json()) as { keys: Array<Record<string, string>> };
  const [h, p, s] = token.split('.');
  const header = JSON.parse(Buffer.from(h!, 'base64url').toString()) as { alg: string; kid: string };
  expect(header.alg).toBe('RS256');
  const jwk = jwks.keys.find((k) => k.kid === header.kid)!;
  expect(verify('sha256', Buffer.from(`${h}.${p}`), createPublicKey({ key: jwk as never, format: 'jwk' }), Buffer.from(s!, 'base64url'))).toBe(true);
});

test('TokenRequest refuses what the real server refuses', async () => {
  expect((await tokenFor('nope')).status).toBe(404);
  expect((await tokenFor('web-1', undefined, 'not-the-uid')).status).toBe(409);
  kube.createPod({ metadata: { name: 'other-sa', namespace: 'apps' }, spec: { containers: [] } });
  expect((await tokenFor('other-sa')).status).toBe(400);
  expect((await post('/api/v1/namespaces/apps/serviceaccounts/ghost/token', { spec: {} })).status).toBe(404);
});

test('TokenReview authenticates a good token and says who, refuses forged, expired, other audience, pod gone', async () => {
  const before = kube.tokenApi.reviews;
  const good = (await tokenFor('web-1')).body.status.token as string;
  const ok = await review(good);
  expect(ok.status).toBe(201);
  expect(ok.body.status.authenticated).toBe(true);
  expect(ok.body.status.user.username).toBe('system:serviceaccount:apps:web');
  expect(ok.body.status.user.extra['authentication.kubernetes.io/pod-name']).toEqual(['web-1']);
  expect(ok.body.status.user.extra['authentication.kubernetes.io/pod-uid']).toEqual([kube.getPod('apps', 'web-1')!.metadata.uid]);
  expect(ok.body.status.audiences).toEqual(['pods.eks.amazonaws.com']);

  const refused = async (token: string, audiences?: string[]) => {
    const r = await review(token, audiences);
    expect(r.status).toBe(201);
    expect(r.body.status.authenticated).toBeUndefined();
    expect(r.body.status.error).toMatch(/invalid bearer token/);
  };
  await refused(good, ['sts.amazonaws.com']);
  await refused(kube.tokenApi.sign(decode(good)!, kube.tokenApi.forgeKey()));
  await refused(kube.tokenApi.issue({ namespace: 'apps', serviceAccount: 'web', pod: 'web-1', audiences: ['pods.eks.amazonaws.com'], expirationSeconds: 600, issuedAtOffsetSeconds: -700 }));
  kube.createPod({ metadata: { name: 'web-2', namespace: 'apps' }, spec: { serviceAccountName: 'web', containers: [] } });
  const doomed = kube.tokenApi.issue({ namespace: 'apps', serviceAccount: 'web', pod: 'web-2', audiences: ['pods.eks.amazonaws.com'] });
  expect((await review(doomed)).body.status.authenticated).toBe(true);
  kube.deletePod('apps', 'web-2');
  await refused(doomed);
  // Recreated with the same name: a new uid, the old token stays dead.
  kube.createPod({ metadata: { name: 'web-2', namespace: 'apps' }, spec: { serviceAccountName: 'web', containers: [] } });
  await refused(doomed);
  expect(kube.tokenApi.reviews - before).toBe(7);
});

test('ServiceAccounts list and watch like pods', async () => {
  const list = (await (await fetch(kube.url + '/api/v1/serviceaccounts')).json()) as { kind: string; items: Array<{ metadata: { name: string } }> };
  expect(list.kind).toBe('ServiceAccountList');
  expect(list.items.map((i) => i.metadata.name)).toContain('web');
  const controller = new AbortController();
  const r = await fetch(kube.url + '/api/v1/namespaces/apps/serviceaccounts?watch=true', { signal: controller.signal });
  const reader = r.body!.getReader();
  let seen = '';
  kube.updateServiceAccount('apps', 'web', (sa) => (sa.metadata.annotations = { 'iam.amazonaws.com/role': 'web' }));
  while (!seen.includes('MODIFIED')) seen += Buffer.from((await reader.read()).value!).toString();
  expect(seen).toContain('"ADDED"');
  expect(seen).toContain('iam.amazonaws.com/role');
  controller.abort();
});

test('OIDC discovery and the key set are served as kube-apiserver serves them; key rotation keeps both keys until the old one is retired', async () => {
  const discovery = await fetch(kube.url + '/.well-known/openid-configuration');
  expect(discovery.headers.get('content-type')).toBe('application/json');
  expect(await discovery.json()).toMatchObject({ issuer: 'https://kubernetes.default.svc.cluster.local', jwks_uri: `${kube.url}/openid/v1/jwks`, id_token_signing_alg_values_supported: ['RS256'] });
  const keySet = async () => {
    const r = await fetch(kube.url + '/openid/v1/jwks');
    expect(r.headers.get('content-type')).toBe('application/jwk-set+json');
    return ((await r.json()) as { keys: Array<Record<string, string>> }).keys;
  };
  const before = await keySet();
  expect(before).toHaveLength(1);
  expect(Object.keys(before[0]!).sort()).toEqual(['alg', 'e', 'kid', 'kty', 'n', 'use']);
  expect(before[0]).toMatchObject({ use: 'sig', kty: 'RSA', alg: 'RS256' });

  const oldToken = (await tokenFor('web-1')).body.status.token as string;
  const newKid = kube.tokenApi.rotateKey();
  expect(newKid).not.toBe(before[0]!.kid);
  const newToken = (await tokenFor('web-1')).body.status.token as string;
  expect(JSON.parse(Buffer.from(newToken.split('.')[0]!, 'base64url').toString())).toEqual({ alg: 'RS256', kid: newKid });
  expect((await keySet()).map((k) => k.kid)).toEqual([newKid, before[0]!.kid]);
  expect((await review(oldToken)).body.status.authenticated).toBe(true);
  expect((await review(newToken)).body.status.authenticated).toBe(true);

  kube.tokenApi.rotateKey({ retireOld: true });
  expect((await keySet()).map((k) => k.kid)).toEqual([kube.tokenApi.signingKid()]);
  expect((await review(oldToken)).body.status).toMatchObject({ error: expect.stringContaining('invalid bearer token') });
  expect((await review(oldToken)).body.status.authenticated).toBeUndefined();
  expect((await review(newToken)).body.status.authenticated).toBeUndefined();

  kube.tokenApi.setJwksDown(true);
  expect((await fetch(kube.url + '/openid/v1/jwks')).status).toBe(503);
  kube.tokenApi.setJwksDown(false);
});
