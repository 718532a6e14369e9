/**
 * The adversarial review's findings, each written as the attack (issue #10): from a pod, from a
 * host that is not a pod of this node, and through the Kubernetes API. Every refused request is
 * also checked at the fake metadata service: it must never have reached it.
 */
import { USER_DATA } from '../support/imds-server.js';
import type { PodiamProcess } from '../support/podiam-process.js';
import { waitFor } from '../support/wait.js';
import { World } from '../support/world.js';

const CREDS = '/latest/meta-data/iam/security-credentials/';
const TTL = 'x-aws-ec2-metadata-token-ttl-seconds';
const TOKEN = 'x-aws-ec2-metadata-token';

let world: World;
let podiam: PodiamProcess;
let podIp: string;

beforeAll(async () => {
  world = await World.start();
  podiam = await world.podiam();
  podIp = world.nextIp();
  world.pod('app', { ip: podIp, role: 'app-role' });
  expect((await podiam.get(CREDS, podIp)).body).toBe('app-role');
});
afterAll(async () => {
  await world?.stop();
});

/** Runs `attack` and fails if it made any request to the real (fake) metadata service. */
async function withoutUpstream<T>(attack: () => Promise<T>): Promise<T> {
  const before = world.imds.requests.length;
  const result = await attack();
  expect(world.imds.requests.slice(before).map((r) => `${r.method} ${r.path}`)).toEqual([]);
  return result;
}

const putToken = (path: string, fromIp: string) => podiam.request(path, { fromIp, method: 'PUT', headers: { [TTL]: '21600' } });

describe('finding 1: no spelling of the token PUT but the exact one gets a token, and none reaches the metadata service', () => {
  test.each([
    '/latest/api/token/',
    '/latest/api/token.',
    '/latest/api/token;',
    '/latest/api/token%20',
    '/latest/api/token%2F',
    '/latest/api/Token',
    '/LATEST/api/token',
    '/latest/api/token/x',
    '/latest./api/token',
    '/api/token',
    '/1.0/api/token',
    '/2021-03-23/api/token',
    '/2021-03-23/api/token/',
  ])('PUT %s', async (path) => {
    const r = await withoutUpstream(() => putToken(path, podIp));
    expect([400, 403, 405]).toContain(r.status);
    expect(r.headers[TTL]).toBeUndefined();
    expect(r.body).toMatch(/^BadRequest: /);
  });

  test('no PUT but the token route is ever forwarded; other methods neither', async () => {
    for (const path of ['/latest/meta-data/instance-id', '/latest/user-data', '/latest/meta-data/', '/']) {
      expect((await withoutUpstream(() => podiam.request(path, { fromIp: podIp, method: 'PUT', headers: { [TTL]: '60' } }))).status).toBe(405);
    }
    for (const method of ['POST', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE']) {
      expect((await withoutUpstream(() => podiam.request('/latest/api/token', { fromIp: podIp, method, headers: { [TTL]: '60' } }))).status).toBe(405);
      expect((await withoutUpstream(() => podiam.request('/latest/user-data', { fromIp: podIp, method }))).status).toBe(405);
    }
    expect((await withoutUpstream(() => podiam.request('/latest/api/token', { fromIp: podIp, method: 'GET' }))).status).toBe(405);
  });

  test('the exact route still works: one PUT upstream, and the pod gets podiam’s token', async () => {
    const before = world.imds.requests.length;
    const r = await putToken('/latest/api/token', podIp);
    expect(r.status).toBe(200);
    expect(world.imds.requests.slice(before).map((q) => `${q.method} ${q.path}`)).toEqual(['PUT /latest/api/token']);
    expect((await podiam.request('/latest/meta-data/instance-id', { fromIp: podIp, headers: { [TOKEN]: r.body } })).status).toBe(200);
  });
});

describe('finding 3: paths the metadata service might read differently are refused before it', () => {
  test.each([
    '/latest/meta-data/iam;/security-credentials/',
    '/latest/meta-data/iam%20/security-credentials/',
    '/latest/meta-data/iam./security-credentials/',
    '/latest./meta-data/iam/security-credentials/',
    '/meta-data/iam/security-credentials/',
    '/latest/dynamic/instance-identity/pkcs7;',
    '/latest/dynamic/instance-identity/pkcs7%20',
    '/latest/dynamic/instance-identity/signature.',
    '/latest/meta-data/identity-credentials;/ec2/security-credentials/ec2-instance',
    '/latest/user-data;',
    '/latest/user-data%3b',
    '/latest/meta-data/.hidden./x',
    '/latest/meta-data/~root',
    '/favicon.ico',
  ])('GET %s', async (path) => {
    const r = await withoutUpstream(() => podiam.get(path, podIp));
    expect(r.status).toBe(400);
    expect(r.body).toMatch(/^BadRequest: /);
  });

  test("EC2's own spellings still reach it: versions, listings, MAC addresses", async () => {
    const before = world.imds.requests.length;
    expect((await podiam.get('/latest/meta-data/instance-id', podIp)).status).toBe(200);
    expect((await podiam.get('/2021-03-23/meta-data/instance-id', podIp)).status).toBe(200);
    expect((await podiam.get('/latest/meta-data/', podIp)).status).toBe(200);
    await podiam.get('/latest/meta-data/network/interfaces/macs/02:29:96:8f:6a:2d/local-ipv4s', podIp);
    expect(world.imds.requests.slice(before).map((q) => q.path)).toEqual([
      '/latest/meta-data/instance-id',
      '/2021-03-23/meta-data/instance-id',
      '/latest/meta-data/',
      '/latest/meta-data/network/interfaces/macs/02:29:96:8f:6a:2d/local-ipv4s',
    ]);
  });
});

describe('finding 2: only this node’s pods and the node itself use the metadata service through podiam', () => {
  test('a non-pod address gets 403 on user-data and the token route, never reaching the service; a pod (not its user-data: hardening-imds.test.ts) and the node get 200', async () => {
    const stranger = world.nextIp();
    const denied = await withoutUpstream(async () => [await podiam.get('/latest/user-data', stranger), await putToken('/latest/api/token', stranger), await podiam.get('/latest/dynamic/instance-identity/document', stranger)]);
    for (const r of denied) {
      expect(r.status).toBe(403);
      expect(r.body).toContain(`CallerNotAllowed: ${stranger} is neither this node nor a pod on it`);
      expect(r.body).not.toContain('#!/bin/bash');
    }
    expect((await podiam.get('/latest/dynamic/instance-identity/document', podIp)).status).toBe(200);
    // The node itself (no source address given: 127.0.0.1).
    expect((await podiam.get('/latest/user-data')).body).toBe(USER_DATA);
    expect((await putToken('/latest/api/token', '127.0.0.1')).status).toBe(200);
    expect(await podiam.metric('podiam_denials_total', { code: 'CallerNotAllowed' })).toBeGreaterThanOrEqual(3);
  });

  test('Prometheus and the kubelet still reach /metrics and the health endpoints from anywhere', async () => {
    const stranger = world.nextIp();
    const metrics = await podiam.get('/metrics', stranger);
    expect(metrics.status).toBe(200);
    expect(metrics.body).toContain('podiam_denials_total');
    expect((await podiam.get('/healthz', stranger)).status).toBe(200);
    expect((await podiam.get('/readyz', stranger)).status).toBe(200);
    // podiam's own endpoints are GET only, and never forwarded.
    expect((await withoutUpstream(() => podiam.request('/metrics', { fromIp: stranger, method: 'POST' }))).status).toBe(405);
    expect((await withoutUpstream(() => podiam.get('/debug/store', stranger))).status).toBe(404);
  });
});

describe('finding 4: an annotation cannot stall podiam', () => {
  test("a 600- and a 64k-character role under the review's pattern are refused in milliseconds while other pods are served", async () => {
    world.kube.createNamespace({ metadata: { name: 'review', annotations: { 'iam.amazonaws.com/allowed-roles': '[".*a.*a.*a.*b"]' } } });
    const strict = await world.podiam(['--namespace-restrictions', '--namespace-restriction-format=regexp']);
    const served = world.nextIp();
    world.pod('served', { ip: served, role: 'data-lab', namespace: 'review' });
    expect((await strict.get(CREDS + 'data-lab', served)).status).toBe(200);

    const long = { 600: world.nextIp(), 65_536: world.nextIp() };
    // Created together: the informer delivers both (and prefetch looks at both) on podiam's event loop.
    for (const [length, ip] of Object.entries(long)) world.pod(`long-${length}`, { ip, role: 'a'.repeat(Number(length)), namespace: 'review' });
    const timed = async (ip: string, path: string) => {
      const t0 = performance.now();
      const r = await strict.get(path, ip);
      return { ...r, ms: performance.now() - t0 };
    };
    const [r600, r64k, other] = await Promise.all([timed(long[600], CREDS), timed(long[65_536], CREDS), timed(served, CREDS + 'data-lab')]);
    for (const r of [r600, r64k]) {
      expect(r.status).toBe(403);
      expect(r.body).toContain('annotation iam.amazonaws.com/role is invalid');
      // Seconds to hours before the limits; a generous bound for a loaded CI machine.
      expect(r.ms).toBeLessThan(1500);
    }
    expect(r600.body).toContain('the role name has 600 characters; IAM allows at most 64');
    expect(r64k.body).toContain('65536 characters; a role ARN has at most 2048');
    expect(other.status).toBe(200);
    expect(other.ms).toBeLessThan(1500);
  });
});

describe('finding 6: tokens and sessions', () => {
  test("a token minted for a deleted pod is refused from the new pod on its IP", async () => {
    const ip = world.nextIp();
    world.pod('first', { ip, role: 'first-role' });
    const token = await putToken('/latest/api/token', ip);
    expect(token.status).toBe(200);
    expect((await podiam.request('/latest/meta-data/instance-id', { fromIp: ip, headers: { [TOKEN]: token.body } })).status).toBe(200);

    world.kube.deletePod('default', 'first');
    world.pod('second', { ip, role: 'second-role' });
    await waitFor(async () => (await podiam.get(CREDS, ip)).body === 'second-role', 8000, 'the IP to belong to the new pod');
    const reused = await withoutUpstream(() => podiam.request('/latest/meta-data/instance-id', { fromIp: ip, headers: { [TOKEN]: token.body } }));
    expect(reused.status).toBe(401);
    // Its own token works.
    const own = await putToken('/latest/api/token', ip);
    expect((await podiam.request('/latest/meta-data/instance-id', { fromIp: ip, headers: { [TOKEN]: own.body } })).status).toBe(200);
  });

  test("filling the token table from one address does not evict another pod's token", async () => {
    const victim = world.nextIp();
    const attacker = world.nextIp();
    world.pod('token-victim', { ip: victim, role: 'v' });
    world.pod('token-flooder', { ip: attacker, role: 'a' });
    const victimToken = (await putToken('/latest/api/token', victim)).body;
    const mine: string[] = [];
    for (let i = 0; i < 200; i++) {
      const r = await putToken('/latest/api/token', attacker);
      expect(r.status).toBe(200);
      mine.push(r.body);
    }
    expect((await podiam.request('/latest/meta-data/instance-id', { fromIp: victim, headers: { [TOKEN]: victimToken } })).status).toBe(200);
    // The flooder only ever evicts its own: its first tokens are gone, its last still work.
    expect((await podiam.request('/latest/meta-data/instance-id', { fromIp: attacker, headers: { [TOKEN]: mine[0]! } })).status).toBe(401);
    expect((await podiam.request('/latest/meta-data/instance-id', { fromIp: attacker, headers: { [TOKEN]: mine.at(-1)! } })).status).toBe(200);
  });

  test('a token minted by a previous podiam is 401 after a restart (as EC2 answers an expired token), and a new PUT works', async () => {
    const previous = await world.podiam();
    const old = await previous.request('/latest/api/token', { fromIp: podIp, method: 'PUT', headers: { [TTL]: '21600' } });
    expect(old.status).toBe(200);
    await previous.stop();
    // `podiam` plays the restarted one: same node, same pods, no memory of the old tokens.
    const stale = await withoutUpstream(() => podiam.request('/latest/meta-data/instance-id', { fromIp: podIp, headers: { [TOKEN]: old.body } }));
    expect(stale.status).toBe(401);
    expect(stale.body).toContain('PUT /latest/api/token for a new one');
    const fresh = await putToken('/latest/api/token', podIp);
    expect((await podiam.request('/latest/meta-data/instance-id', { fromIp: podIp, headers: { [TOKEN]: fresh.body } })).status).toBe(200);
  });

  test("a session name claiming another namespace's pod is not used as is", async () => {
    const ip = world.nextIp();
    world.pod('mallory', { ip, role: 'shared-role', namespace: 'attackers', annotations: { 'iam.amazonaws.com/session-name': 'payments.ledger-0' } });
    const r = await podiam.get(CREDS + 'shared-role', ip);
    expect(r.status).toBe(200);
    const arn = await world.callerArn(JSON.parse(r.body) as { AccessKeyId: string; SecretAccessKey: string; Token: string });
    expect(arn).toBe('arn:aws:sts::123456789012:assumed-role/shared-role/attackers.payments.ledger-0');
  });
});

// Last: silencing the test API server's watches affects every podiam of this world.
describe('finding 5: a silently dead watch', () => {
  test('is replaced within the deadline, and a pod deleted meanwhile loses its IP mapping', async () => {
    const watching = await world.podiam(['--watch-deadline=2s']);
    const ip = world.nextIp();
    world.pod('doomed', { ip, role: 'doomed-role' });
    expect((await watching.get(CREDS, ip)).body).toBe('doomed-role');

    expect(world.kube.silenceWatches()).toBeGreaterThan(0);
    const silencedAt = Date.now();
    world.kube.deletePod('default', 'doomed');
    // The DELETED went nowhere: only a replaced watch can tell podiam.
    await waitFor(async () => (await watching.get(CREDS, ip)).status === 404, 20_000, 'the deleted pod to lose its IP');
    expect(Date.now() - silencedAt).toBeLessThan(20_000);
    expect(await watching.metric('podiam_informer_watch_timeouts_total', { resource: 'pods' })).toBeGreaterThanOrEqual(1);
    const ready = JSON.parse((await watching.get('/readyz')).body) as { ready: boolean; watchTimeouts: { pods: number } };
    expect(ready.watchTimeouts.pods).toBeGreaterThanOrEqual(1);
    expect(ready.ready).toBe(true);
    // A new watch of this node's pods, on a new connection, after the old one fell silent.
    expect(world.kube.requests.some((q) => q.path === '/api/v1/pods' && q.query['watch'] === 'true' && q.query['fieldSelector'] === 'spec.nodeName=node-1' && q.time >= silencedAt)).toBe(true);
  }, 40_000);
});
