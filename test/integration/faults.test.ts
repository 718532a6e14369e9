/**
 * Faults survived: STS down or throttling, API server watch drops / restarts / 410 Gone,
 * metadata upstream down or slow. The real CLI against the loopback world.
 */
import { FakeImds } from '../support/imds-server.js';
import type { PodiamProcess } from '../support/podiam-process.js';
import { sleep, waitFor } from '../support/wait.js';
import { BASE_ARN, World } from '../support/world.js';

const CREDS = '/latest/meta-data/iam/security-credentials/';

let world: World;
let podiam: PodiamProcess;

beforeAll(async () => {
  world = await World.start();
  podiam = await world.podiam();
});
afterAll(async () => {
  await world?.stop();
});



describe('STS trouble', () => {
  afterEach(() => world.sts.reset());

  test('STS down: cached credentials keep being served; a role never fetched gets a fast, clear 500; recovery without restart', async () => {
    const cachedIp = world.nextIp();
    world.pod('sts-cached', { ip: cachedIp, role: 'sts-cached' });
    const first = await podiam.get(CREDS + 'sts-cached', cachedIp);
    expect(first.status).toBe(200);

    world.sts.setDown(true);
    const again = await podiam.get(CREDS + 'sts-cached', cachedIp);
    expect(again.status).toBe(200);
    expect(JSON.parse(again.body).AccessKeyId).toBe(JSON.parse(first.body).AccessKeyId);

    const newIp = world.nextIp();
    world.pod('sts-new', { ip: newIp, role: 'sts-new' });
    const t0 = Date.now();
    const denied = await podiam.get(CREDS + 'sts-new', newIp);
    const took = Date.now() - t0;
    expect(denied.status).toBe(500);
    expect(denied.body).toContain('StsUnavailable');
    expect(denied.body).toContain(`${BASE_ARN}sts-new`);
    expect(took).toBeLessThan(2000);
    // Within the backoff window the error is answered from memory, not by calling STS again.
    const t1 = Date.now();
    expect((await podiam.get(CREDS + 'sts-new', newIp)).status).toBe(500);
    expect(Date.now() - t1).toBeLessThan(200);

    world.sts.setDown(false);
    await waitFor(async () => (await podiam.get(CREDS + 'sts-new', newIp)).status === 200, 15_000, 'recovery after STS came back');
    expect(await podiam.metric('podiam_credential_refresh_failures_total')).toBeGreaterThan(0);
  });

  test('throttling: retries back off with jitter, no storm, however hard the pod asks', async () => {
    const ip = world.nextIp();
    const roleArn = `${BASE_ARN}sts-throttled`;
    world.sts.failNext(100_000, { status: 400, code: 'Throttling', message: 'Rate exceeded' });
    world.pod('sts-throttled', { ip, role: 'sts-throttled' });
    // The pod hammers for 5 s, 4 requests at a time.
    const statuses: number[] = [];
    const until = Date.now() + 5000;
    while (Date.now() < until) {
      const batch = await Promise.all(Array.from({ length: 4 }, () => podiam.get(CREDS + 'sts-throttled', ip)));
      statuses.push(...batch.map((b) => b.status));
      await sleep(100);
    }
    expect(statuses.length).toBeGreaterThan(20);
    expect(new Set(statuses)).toEqual(new Set([500]));
    const calls = world.sts.countFor(roleArn);
    console.log(`throttled: ${statuses.length} requests, ${calls} AssumeRole calls`);
    // 3 SDK attempts per fetch; fetches back off 1 s, 2 s, 4 s (jittered): a handful, not hundreds.
    expect(calls).toBeGreaterThan(0);
    expect(calls).toBeLessThanOrEqual(18);
    world.sts.reset();
    await waitFor(async () => (await podiam.get(CREDS + 'sts-throttled', ip)).status === 200, 15_000, 'recovery after throttling');
  });
});

describe('API server trouble', () => {
  test('a dropped watch reconnects and catches up with pods changed meanwhile', async () => {
    const goneIp = world.nextIp();
    const newIp = world.nextIp();
    world.pod('watch-gone', { ip: goneIp, role: 'watch-gone' });
    await waitFor(async () => (await podiam.get(CREDS, goneIp)).status === 200);
    world.kube.dropWatches();
    world.kube.deletePod('default', 'watch-gone');
    world.pod('watch-new', { ip: newIp, role: 'watch-new' });
    await waitFor(async () => (await podiam.get(CREDS, newIp)).body === 'watch-new', 8000, 'new pod after watch drop');
    await waitFor(async () => (await podiam.get(CREDS, goneIp)).status === 404, 8000, 'deleted pod gone after watch drop');
    expect(await podiam.metric('podiam_informer_restarts_total', { resource: 'pods' })).toBeGreaterThan(0);
  });

  test('410 Gone on an old resourceVersion: the informer re-lists and catches up', async () => {
    const goneIp = world.nextIp();
    const newIp = world.nextIp();
    world.pod('gone-410', { ip: goneIp, role: 'gone-410' });
    await waitFor(async () => (await podiam.get(CREDS, goneIp)).status === 200);
    const listsBefore = world.kube.requests.filter((r) => r.path === '/api/v1/pods' && r.query.watch === undefined).length;
    // Changes while the watch is down, then history compacted: resuming at the old version is 410.
    world.kube.dropWatches();
    world.kube.deletePod('default', 'gone-410');
    world.pod('new-410', { ip: newIp, role: 'new-410' });
    world.kube.compact();
    await waitFor(async () => (await podiam.get(CREDS, newIp)).body === 'new-410', 10_000, 'new pod after 410');
    await waitFor(async () => (await podiam.get(CREDS, goneIp)).status === 404, 10_000, 'deleted pod gone after 410');
    const listsAfter = world.kube.requests.filter((r) => r.path === '/api/v1/pods' && r.query.watch === undefined).length;
    expect(listsAfter).toBeGreaterThan(listsBefore);
  });

  test('API server down: /readyz says so, cached pods are still served, and it recovers when the server returns', async () => {
    const ip = world.nextIp();
    world.pod('apidown', { ip, role: 'apidown' });
    await waitFor(async () => (await podiam.get(CREDS + 'apidown', ip)).status === 200);
    await world.kube.stop();
    await waitFor(async () => JSON.parse((await podiam.get('/readyz')).body).pods === 'reconnecting', 8000, 'readyz shows reconnecting');
    expect((await podiam.get(CREDS + 'apidown', ip)).status).toBe(200);
    const laterIp = world.nextIp();
    world.pod('apidown-later', { ip: laterIp, role: 'apidown-later' });
    world.kube.deletePod('default', 'apidown');
    await world.kube.listen();
    await waitFor(async () => JSON.parse((await podiam.get('/readyz')).body).pods === 'watching', 20_000, 'readyz back to watching');
    await waitFor(async () => (await podiam.get(CREDS, laterIp)).body === 'apidown-later', 8000, 'pod created during the outage');
    await waitFor(async () => (await podiam.get(CREDS, ip)).status === 404, 8000, 'pod deleted during the outage');
  });

  test('before the informers have synced: /readyz and credential paths answer 503', async () => {
    world.kube.setLatency(3000);
    try {
      const starting = await world.podiam([], { waitReady: false });
      const ready = await starting.get('/readyz');
      expect(ready.status).toBe(503);
      expect(JSON.parse(ready.body)).toMatchObject({ ready: false, pods: 'syncing' });
      const creds = await starting.get(CREDS, world.nextIp());
      expect(creds.status).toBe(503);
      expect(creds.body).toContain('NotReady');
      world.kube.setLatency(0);
      await waitFor(async () => (await starting.get('/readyz')).status === 200, 10_000, 'ready after sync');
      await starting.stop();
    } finally {
      world.kube.setLatency(0);
    }
  });

  test('a list in chunks (limit/continue): every page is read, the last pods are served', async () => {
    const ips: string[] = [];
    for (let i = 0; i < 1100; i++) {
      const ip = world.nextIp();
      ips.push(ip);
      world.pod(`bulk-${i}`, { ip, role: `bulk-${i % 7}` });
    }
    const listsBefore = world.kube.requests.filter((r) => r.path === '/api/v1/pods' && r.query.watch === undefined).length;
    const fresh = await world.podiam();
    const lists = world.kube.requests.filter((r) => r.path === '/api/v1/pods' && r.query.watch === undefined).slice(listsBefore);
    expect(lists.some((r) => r.query.limit === '500' && r.query.continue === undefined)).toBe(true);
    expect(lists.filter((r) => r.query.continue !== undefined).length).toBeGreaterThanOrEqual(2);
    expect((await fresh.get(CREDS, ips[ips.length - 1]!)).body).toBe(`bulk-${1099 % 7}`);
    expect((await fresh.get(CREDS, ips[0]!)).body).toBe('bulk-0');
    await fresh.stop();
    for (let i = 0; i < 1100; i++) world.kube.deletePod('default', `bulk-${i}`);
  });

  test('an API server restart is survived', async () => {
    const ip = world.nextIp();
    await world.kube.restart();
    world.pod('after-restart', { ip, role: 'after-restart' });
    await waitFor(async () => (await podiam.get(CREDS, ip)).body === 'after-restart', 10_000, 'pod after restart');
  });
});

describe('metadata upstream trouble', () => {
  test('down: 502 within 1 s with a reason; slow: bounded by --metadata-timeout', async () => {
    const ip = world.nextIp();
    world.pod('upstream', { ip, role: 'upstream' });
    // Forwarded paths serve only known pods (a new pod's first request waits --pod-wait for it):
    // let the informer deliver it first, so what is timed below is the metadata service alone.
    await waitFor(async () => (await podiam.get(CREDS, ip)).body === 'upstream', 8000, 'the pod indexed');
    const port = world.imds.port;
    world.imds.setLatency(3000);
    let t0 = Date.now();
    const slow = await podiam.get('/latest/meta-data/instance-id', ip);
    expect(slow.status).toBe(502);
    expect(slow.body).toContain('UpstreamUnavailable');
    expect(Date.now() - t0).toBeLessThan(1500);
    world.imds.setLatency(0);

    await world.imds.stop();
    t0 = Date.now();
    const down = await podiam.get('/latest/meta-data/instance-id', ip);
    expect(down.status).toBe(502);
    expect(down.body).toMatch(/ECONNREFUSED/);
    expect(Date.now() - t0).toBeLessThan(1000);
    const token = await podiam.request('/latest/api/token', { fromIp: ip, method: 'PUT', headers: { 'x-aws-ec2-metadata-token-ttl-seconds': '60' } });
    expect(token.status).toBe(502);
    // Credentials do not depend on the metadata service.
    expect((await podiam.get(CREDS + 'upstream', ip)).status).toBe(200);
    // Back on the same port: served again, no restart.
    const again = await FakeImds.start({ port });
    try {
      expect((await podiam.get('/latest/meta-data/instance-id', ip)).status).toBe(200);
    } finally {
      await again.stop();
    }
  });
});
