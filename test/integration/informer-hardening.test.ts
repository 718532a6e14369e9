/**
 * Issue 19, the informer half of the second adversarial review: each finding written as the
 * attack, with the sizes and counts of the report, against the test API server.
 *  - A relist that no response cap can fail (objects up to etcd's 1.5 MiB, any count), and a
 *    bound on staleness: out of sync past --watch-deadline, podiam answers 503, never an old view.
 *  - ServiceAccounts and namespaces: metadata only, and only those this node's pods use.
 *  - Start-up holds a request until the first sync instead of refusing it.
 */
import type { PodiamProcess } from '../support/podiam-process.js';
import { sleep, waitFor } from '../support/wait.js';
import { NODE, World } from '../support/world.js';

const CREDS = '/latest/meta-data/iam/security-credentials/';
const METADATA_LIST = 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1';
const METADATA_WATCH = 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1';

/** ~1.2 MB of container env, as a pod can carry (etcd takes objects up to 1.5 MiB). */
const bigEnv = (i: number) => [{ name: 'PAYLOAD', value: `${i}-`.padEnd(1_200_000, 'x') }];
/** ~1.2 MB of imagePullSecrets on a ServiceAccount (20,000 references of 60 bytes). */
const bigPullSecrets = (i: number) => Array.from({ length: 20_000 }, (_, j) => ({ name: `pull-secret-${i}-${j}-`.padEnd(46, 'x') }));

const roleOf = (r: { status: number; body: string }): string => (r.status === 200 ? r.body : `${r.status} ${r.body}`);

describe('finding: a deleted pod’s role handed to the next holder of its IP (60 Failed pods of ~1.2 MB on the node)', () => {
  let world: World;
  let podiam: PodiamProcess;
  beforeAll(async () => {
    world = await World.start();
    world.kube.createNamespace({ metadata: { name: 'victim-ns' } });
    world.kube.createNamespace({ metadata: { name: 'attacker-ns' } });
    world.kube.createServiceAccount({ metadata: { name: 'default', namespace: 'victim-ns' } });
    world.kube.createServiceAccount({ metadata: { name: 'default', namespace: 'attacker-ns' } });
  }, 60_000);
  afterAll(async () => {
    await world?.stop();
  });

  test('after an ordinary relist, the reused IP gets the new pod’s answer, never the victim’s role', async () => {
    const victimIp = world.nextIp();
    world.pod('victim', { namespace: 'victim-ns', ip: victimIp, role: 'victim-role' });
    podiam = await world.podiam();
    expect(roleOf(await podiam.get(CREDS, victimIp))).toBe('victim-role');
    expect((await podiam.get(CREDS + 'victim-role', victimIp)).status).toBe(200);

    // The attacker pins 60 Failed pods of ~1.2 MB each to the node: one page of the node's pods is now ~72 MB.
    for (let i = 0; i < 60; i++) {
      world.kube.createPod({
        metadata: { name: `ballast-${i}`, namespace: 'attacker-ns' },
        spec: { nodeName: NODE, containers: [{ name: 'app', image: 'app', env: bigEnv(i) }] },
        status: { phase: 'Failed', podIP: world.nextIp() },
      });
    }
    // An ordinary relist: the API server's history is compacted and the watches drop (as on a restart).
    world.kube.compact();
    world.kube.dropWatches();
    // The victim goes, and while its IP is released (seconds) the agent relists; then a pod of
    // the attacker's namespace gets the IP.
    world.kube.deletePod('victim-ns', 'victim');
    await waitFor(async () => (await podiam.get(CREDS, victimIp)).status === 404, 10_000).catch(() => undefined);
    world.pod('attacker', { namespace: 'attacker-ns', ip: victimIp });

    const answers: string[] = [];
    const until = Date.now() + 15_000;
    while (Date.now() < until) {
      answers.push(roleOf(await podiam.get(CREDS, victimIp)));
      answers.push(`creds ${(await podiam.get(CREDS + 'victim-role', victimIp)).status}`);
      await sleep(500);
    }
    expect(answers.filter((a) => a === 'victim-role' || a === 'creds 200')).toEqual([]);
    // And the relist went through: the attacker's pod is known (it has no role of its own).
    expect(answers[answers.length - 2]).toMatch(/^404 NoRoleForPod/);
    await podiam.stop();
  }, 120_000);
});

describe('staleness is bounded: out of sync past --watch-deadline, /readyz is 503 and credentials fail closed', () => {
  let world: World;
  beforeAll(async () => {
    world = await World.start();
  }, 60_000);
  afterAll(async () => {
    await world?.stop();
  });

  test('every pods list fails after a relist: 503 naming the pods informer within the deadline, served again once it syncs', async () => {
    const ip = world.nextIp();
    world.pod('stale', { ip, role: 'stale-role' });
    const podiam = await world.podiam(['--watch-deadline=3s']);
    expect(roleOf(await podiam.get(CREDS + 'stale-role', ip))).toMatch(/AccessKeyId/);

    world.kube.setFailNext(1_000_000, 500, 'pods');
    world.kube.compact();
    world.kube.dropWatches();
    const lost = Date.now();
    await waitFor(async () => (await podiam.get('/readyz')).status === 503, 10_000, '/readyz 503');
    expect(Date.now() - lost).toBeLessThan(8_000);
    const readyz = JSON.parse((await podiam.get('/readyz')).body) as { ready: boolean; outOfSync: Array<{ informer: string; resource: string; seconds: number }> };
    expect(readyz.ready).toBe(false);
    expect(readyz.outOfSync).toContainEqual(expect.objectContaining({ informer: 'pods', resource: 'pods' }));
    for (const path of [CREDS, CREDS + 'stale-role']) {
      const r = await podiam.get(path, ip);
      expect(r.status).toBe(503);
      expect(r.body).toMatch(/^NotReady: the pods informer has not been in sync with the API server for \d+s \(--watch-deadline 3s\)/);
    }
    expect(await podiam.metric('podiam_informer_out_of_sync_seconds', { resource: 'pods' })).toBeGreaterThanOrEqual(3);
    expect(await podiam.metric('podiam_ready')).toBe(0);

    world.kube.setFailNext(0);
    await waitFor(async () => (await podiam.get('/readyz')).status === 200, 45_000, '/readyz 200 again');
    expect(roleOf(await podiam.get(CREDS, ip))).toBe('stale-role');
    expect(await podiam.metric('podiam_informer_out_of_sync_seconds', { resource: 'pods' })).toBe(0);
    await podiam.stop();
  }, 120_000);
});

describe('finding: one namespace stops credentials on every node that restarts (56 ServiceAccounts of ~1.2 MB)', () => {
  let world: World;
  beforeAll(async () => {
    world = await World.start();
    world.kube.createNamespace({ metadata: { name: 'attacker-ns' } });
    for (let i = 0; i < 56; i++) {
      world.kube.createServiceAccount({ metadata: { name: `big-${i}`, namespace: 'attacker-ns', annotations: { 'iam.amazonaws.com/role': 'big-role' } }, imagePullSecrets: bigPullSecrets(i) } as never);
    }
  }, 120_000);
  afterAll(async () => {
    await world?.stop();
  });

  test('a restarted agent syncs and serves: ServiceAccounts are read as metadata only, and only the node’s namespaces', async () => {
    const ip = world.nextIp();
    world.pod('app', { ip, role: 'app-role' });
    const inAttackerNs = world.nextIp();
    world.pod('uses-big', { namespace: 'attacker-ns', ip: inAttackerNs, serviceAccount: 'big-7' });
    world.kube.requests.length = 0;
    const podiam = await world.podiam();
    expect(roleOf(await podiam.get(CREDS, ip))).toBe('app-role');
    // Its role from the 1.2 MB ServiceAccount's annotation: read, without its imagePullSecrets.
    expect(roleOf(await podiam.get(CREDS, inAttackerNs))).toBe('big-role');

    const saRequests = world.kube.requests.filter((r) => r.path.endsWith('/serviceaccounts'));
    expect(saRequests.length).toBeGreaterThan(0);
    expect(saRequests.filter((r) => r.path === '/api/v1/serviceaccounts')).toEqual([]);
    for (const r of saRequests) expect(r.accept).toBe(r.query.watch === 'true' ? METADATA_WATCH : METADATA_LIST);
    const nsRequests = world.kube.requests.filter((r) => r.path === '/api/v1/namespaces');
    for (const r of nsRequests) expect(r.accept).toBe(r.query.watch === 'true' ? METADATA_WATCH : METADATA_LIST);
    await podiam.stop();
  }, 60_000);

  test('ServiceAccounts that cannot be listed: 503 naming the serviceaccounts informer, not the pod informer', async () => {
    const ip = world.nextIp();
    world.kube.createNamespace({ metadata: { name: 'sa-down' } });
    world.pod('sa-down', { namespace: 'sa-down', ip, role: 'sa-down-role' });
    world.kube.setFailNext(1_000_000, 500, 'serviceaccounts');
    try {
      const podiam = await world.podiam(['--watch-deadline=2s'], { waitReady: false });
      await sleep(500);
      const r = await podiam.get(CREDS, ip);
      expect(r.status).toBe(503);
      expect(r.body).toMatch(/^NotReady: .*the serviceaccounts informer \(namespace sa-down\)/);
      await waitFor(async () => (await podiam.get('/readyz')).status === 503 && (await podiam.get('/readyz')).body.includes('"serviceaccounts/sa-down"'), 10_000, 'readyz names it');
      await podiam.stop();
    } finally {
      world.kube.setFailNext(0);
    }
  }, 60_000);

  test('not ready until the namespaces of the node’s pods have listed: /readyz never says ready while one is syncing', async () => {
    const ip = world.nextIp();
    world.kube.createNamespace({ metadata: { name: 'sa-slow' } });
    world.pod('sa-slow', { namespace: 'sa-slow', ip, role: 'sa-slow-role' });
    // The first three ServiceAccount lists fail: the namespace's informer syncs after ~1-3 s of backoff.
    world.kube.setFailNext(3, 500, 'serviceaccounts');
    try {
      const podiam = await world.podiam([], { waitReady: false });
      const seen: Array<{ status: number; ready: boolean; serviceaccounts: string }> = [];
      await waitFor(async () => {
        const r = await podiam.get('/readyz');
        const body = JSON.parse(r.body) as { ready: boolean; serviceaccounts: string };
        seen.push({ status: r.status, ready: body.ready, serviceaccounts: body.serviceaccounts });
        return r.status === 200;
      }, 20_000, '/readyz 200');
      expect(seen.filter((s) => s.serviceaccounts === 'syncing').length).toBeGreaterThan(0);
      for (const s of seen) if (s.ready) expect(s).toEqual({ status: 200, ready: true, serviceaccounts: 'watching' });
      expect(roleOf(await podiam.get(CREDS, ip))).toBe('sa-slow-role');
      await podiam.stop();
    } finally {
      world.kube.setFailNext(0);
    }
  }, 60_000);
});

describe('finding: every node holds the whole cluster’s ServiceAccounts (5,000 namespaces, 50,000 ServiceAccounts)', () => {
  let world: World;
  const ips: string[] = [];
  beforeAll(async () => {
    world = await World.start();
    // As `kubectl apply` leaves them: managedFields and the last-applied annotation.
    const applied = (o: object) => ({ 'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify(o) });
    const managed = [{ manager: 'kubectl-client-side-apply', operation: 'Update', apiVersion: 'v1', time: '2026-01-01T00:00:00Z', fieldsType: 'FieldsV1', fieldsV1: { 'f:metadata': { 'f:annotations': { '.': {}, 'f:kubectl.kubernetes.io/last-applied-configuration': {}, 'f:iam.amazonaws.com/role': {} } } } }];
    for (let n = 0; n < 5_000; n++) {
      const name = `team-${n}`;
      world.kube.createNamespace({ metadata: { name, annotations: applied({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } }), managedFields: managed } } as never);
      for (let s = 0; s < 10; s++) {
        const meta = { name: `sa-${s}`, namespace: name, annotations: { 'iam.amazonaws.com/role': `${name}-sa-${s}` } };
        world.kube.createServiceAccount({ metadata: { ...meta, annotations: { ...meta.annotations, ...applied({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta }) }, managedFields: managed } } as never);
      }
    }
    // 110 pods on this node, in 22 of the namespaces; their roles come from their ServiceAccounts.
    for (let p = 0; p < 110; p++) {
      const ip = world.nextIp();
      ips.push(ip);
      world.pod(`app-${p}`, { namespace: `team-${p % 22}`, ip, serviceAccount: `sa-${p % 10}` });
    }
  }, 300_000);
  afterAll(async () => {
    await world?.stop();
  });

  test('the agent lists no namespace or ServiceAccount cluster-wide, and downloads what its 110 pods need', async () => {
    world.kube.requests.length = 0;
    const before = world.kube.bytesSent();
    const podiam = await world.podiam();
    await waitFor(async () => roleOf(await podiam.get(CREDS, ips[109]!)) === 'team-21-sa-9', 10_000, 'the last pod’s role');
    const downloaded = world.kube.bytesSent() - before;
    expect(world.kube.requests.filter((r) => r.path === '/api/v1/serviceaccounts' || (r.path === '/api/v1/namespaces' && r.query.fieldSelector === undefined))).toEqual([]);
    // 22 namespaces and their 220 ServiceAccounts (metadata), and 110 pods: well under 1 MB (the cluster's is ~100 MB).
    expect(downloaded).toBeLessThan(1_000_000);
    expect(JSON.parse((await podiam.get('/readyz')).body)).toMatchObject({ ready: true, pods: 'watching', namespaces: 'watching', serviceaccounts: 'watching' });
    await podiam.stop();
  }, 120_000);
});

describe('start-up holds, not refuses', () => {
  let world: World;
  beforeAll(async () => {
    world = await World.start();
  }, 60_000);
  afterAll(async () => {
    world.kube.setLatency(0);
    await world?.stop();
  });

  test('a pod asking before the first sync is answered once the informers sync (within --pod-wait)', async () => {
    const ip = world.nextIp();
    world.pod('early', { ip, role: 'early-role' });
    world.kube.setLatency(250);
    const podiam = await world.podiam([], { waitReady: false });
    const r = await podiam.get(CREDS, ip);
    world.kube.setLatency(0);
    expect(roleOf(r)).toBe('early-role');
    await podiam.stop();
  }, 60_000);
});
