/**
 * Proves the KubeApiServer test double is faithful enough for the REAL @kubernetes/client-node:
 * CoreV1Api lists/reads/events, raw Watch streams, and ListWatch (the informer) including its
 * 410-driven re-list after compaction.
 */
import { ApiException, CoreV1Api, KubeConfig, ListWatch, Watch } from '@kubernetes/client-node';
import type { CoreV1Event, KubernetesObject, V1Pod } from '@kubernetes/client-node';
import { KubeApiServer } from '../support/kube-api-server.js';

function kubeConfig(url: string, token?: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 't', server: url, skipTLSVerify: true }],
    users: [token === undefined ? { name: 'u' } : { name: 'u', token }],
    contexts: [{ name: 'c', cluster: 't', user: 'u' }],
    currentContext: 'c',
  });
  return kc;
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function pod(name: string, nodeName: string, extra: { namespace?: string; labels?: Record<string, string> } = {}): V1Pod {
  return {
    metadata: { name, namespace: extra.namespace ?? 'default', labels: extra.labels ?? {} },
    spec: { nodeName, containers: [{ name: 'app', image: 'busybox' }] },
    status: { phase: 'Running', podIP: `10.0.0.${name.length}` },
  };
}

/** A ListWatch over /api/v1/pods for node-1, recording what it reports. */
function nodeListWatch(kc: KubeConfig, autoStart: boolean): { lw: ListWatch<V1Pod>; log: string[]; errors: unknown[] } {
  const api = kc.makeApiClient(CoreV1Api);
  const fieldSelector = 'spec.nodeName=node-1';
  const lw = new ListWatch<V1Pod>(
    '/api/v1/pods',
    new Watch(kc),
    () => api.listPodForAllNamespaces({ fieldSelector }),
    autoStart,
    undefined,
    fieldSelector,
  );
  const log: string[] = [];
  const errors: unknown[] = [];
  lw.on('add', (p) => log.push(`add ${p.metadata?.name}`));
  lw.on('update', (p) => log.push(`update ${p.metadata?.name} ${p.status?.phase}`));
  lw.on('delete', (p) => log.push(`delete ${p.metadata?.name}`));
  lw.on('error', (err) => errors.push(err));
  return { lw, log, errors };
}

describe('KubeApiServer with the real @kubernetes/client-node', () => {
  let server: KubeApiServer;
  let kc: KubeConfig;
  const cleanups: Array<() => unknown> = [];

  beforeEach(async () => {
    server = await KubeApiServer.start({ historyLimit: 50 });
    server.createNamespace({ metadata: { name: 'default' } });
    server.createNamespace({ metadata: { name: 'team-a', labels: { team: 'a' } } });
    server.createPod(pod('web', 'node-1', { labels: { app: 'web' } }));
    server.createPod(pod('db', 'node-2', { labels: { app: 'db' } }));
    server.createPod(pod('job', 'node-1', { namespace: 'team-a', labels: { app: 'job' } }));
    kc = kubeConfig(server.url);
  });

  afterEach(async () => {
    for (const c of cleanups.splice(0)) await c();
    await server.stop();
  });

  test('stores objects with resourceVersion, uid and creationTimestamp', () => {
    const p = server.getPod('default', 'web')!;
    expect(p.kind).toBe('Pod');
    expect(p.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(p.metadata.creationTimestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(Number(p.metadata.resourceVersion)).toBeGreaterThan(0);
    const before = server.resourceVersion();
    // An update that changes nothing is a no-op, as in the real apiserver.
    expect(server.updatePod('default', 'web', () => {}).metadata.resourceVersion).toBe(p.metadata.resourceVersion);
    expect(server.resourceVersion()).toBe(before);
    const updated = server.updatePod('default', 'web', (x) => {
      x.metadata.labels = { ...x.metadata.labels, v: '2' };
    });
    expect(Number(updated.metadata.resourceVersion)).toBe(Number(before) + 1);
    expect(updated.metadata.uid).toBe(p.metadata.uid);
    expect(() => server.createPod(pod('web', 'node-1'))).toThrow(/already exists/);
  });

  test('CoreV1Api: list with field and label selectors, read, 404, 400', async () => {
    const api = kc.makeApiClient(CoreV1Api);

    const all = await api.listPodForAllNamespaces();
    expect(all.kind).toBe('PodList');
    expect(all.metadata?.resourceVersion).toBe(server.resourceVersion());
    expect(all.items.map((p) => p.metadata?.name).sort()).toEqual(['db', 'job', 'web']);

    const node1 = await api.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=node-1' });
    expect(node1.items.map((p) => p.metadata?.name).sort()).toEqual(['job', 'web']);
    expect(node1.items[0]!.kind).toBe('Pod');

    const node1Default = await api.listNamespacedPod({ namespace: 'default', fieldSelector: 'spec.nodeName==node-1,status.phase=Running' });
    expect(node1Default.items.map((p) => p.metadata?.name)).toEqual(['web']);

    const notWeb = await api.listPodForAllNamespaces({ labelSelector: 'app!=web' });
    expect(notWeb.items.map((p) => p.metadata?.name).sort()).toEqual(['db', 'job']);
    const inSet = await api.listPodForAllNamespaces({ labelSelector: 'app in (db,job),app' });
    expect(inSet.items.map((p) => p.metadata?.name).sort()).toEqual(['db', 'job']);

    const read = await api.readNamespacedPod({ name: 'web', namespace: 'default' });
    expect(read.spec?.nodeName).toBe('node-1');
    expect(read.metadata?.creationTimestamp).toBeInstanceOf(Date);

    const nsList = await api.listNamespace({ labelSelector: 'team=a' });
    expect(nsList.kind).toBe('NamespaceList');
    expect(nsList.items.map((n) => n.metadata?.name)).toEqual(['team-a']);
    const ns = await api.readNamespace({ name: 'team-a' });
    expect(ns.status?.phase).toBe('Active');
    expect(ns.metadata?.labels?.['kubernetes.io/metadata.name']).toBe('team-a');

    const missing = await api.readNamespacedPod({ name: 'nope', namespace: 'default' }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ApiException);
    expect((missing as ApiException<string>).code).toBe(404);
    expect(JSON.parse((missing as ApiException<string>).body)).toMatchObject({ kind: 'Status', reason: 'NotFound', code: 404 });

    const bad = await api.listPodForAllNamespaces({ fieldSelector: 'spec.bogus=x' }).catch((e: unknown) => e);
    expect((bad as ApiException<string>).code).toBe(400);

    server.setFailNext(1, 500);
    const failed = await api.listPodForAllNamespaces().catch((e: unknown) => e);
    expect((failed as ApiException<string>).code).toBe(500);
    expect((await api.listPodForAllNamespaces()).items).toHaveLength(3);

    const unknown = await fetch(`${server.url}/api/v1/configmaps`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ kind: 'Status', code: 404 });
  });

  test('ListWatch on spec.nodeName=node-1 sees add/update/delete for node-1 only', async () => {
    const { lw, log, errors } = nodeListWatch(kc, true);
    cleanups.push(() => lw.stop());
    await waitFor('initial list', () => log.length === 2 && server.watchCount() === 1);
    expect([...log].sort()).toEqual(['add job', 'add web']);

    server.createPod(pod('api', 'node-1'));
    server.createPod(pod('other', 'node-2'));
    server.updatePod('default', 'web', (p) => {
      p.status = { ...p.status, phase: 'Succeeded' };
    });
    server.updatePod('default', 'db', (p) => {
      p.status = { ...p.status, phase: 'Failed' };
    });
    server.deletePod('team-a', 'job');
    server.deletePod('default', 'other');
    await waitFor('live events', () => log.length === 5);
    expect(log.slice(2)).toEqual(['add api', 'update web Succeeded', 'delete job']);
    expect(lw.list().map((p) => p.metadata?.name).sort()).toEqual(['api', 'web']);
    expect(lw.latestResourceVersion()).toBe('10'); // the last event it saw: job's deletion

    const watches = server.requests.filter((r) => r.path === '/api/v1/pods' && r.query['watch'] === 'true');
    expect(watches).toHaveLength(1);
    expect(watches[0]!.query['fieldSelector']).toBe('spec.nodeName=node-1');
    expect(watches[0]!.query['resourceVersion']).toBe('5'); // 2 namespaces + 3 pods
    expect(errors).toEqual([]);
  });

  test('after compact() + dropWatches() the ListWatch gets 410, re-lists and catches up', async () => {
    const { lw, log, errors } = nodeListWatch(kc, true);
    cleanups.push(() => lw.stop());
    await waitFor('initial list', () => log.length === 2 && server.watchCount() === 1);
    const rvBefore = lw.latestResourceVersion();

    server.dropWatches();
    // client-node reports an abrupt disconnect as an error and does NOT restart by itself.
    await waitFor('error from dropped watch', () => errors.length === 1);
    expect((errors[0] as { code?: string }).code).toBe('ERR_STREAM_PREMATURE_CLOSE');
    expect(server.watchCount()).toBe(0);

    // Changes while disconnected, then history is compacted past the ListWatch's resourceVersion.
    server.deletePod('default', 'web');
    server.createPod(pod('late', 'node-1'));
    server.updatePod('team-a', 'job', (p) => {
      p.status = { ...p.status, phase: 'Succeeded' };
    });
    server.compact();

    server.requests.length = 0;
    await lw.start();
    await waitFor('re-list after 410', () => log.length === 5 && server.watchCount() === 1);
    expect(log.slice(2).sort()).toEqual(['add late', 'delete web', 'update job Succeeded']);
    expect(lw.list().map((p) => p.metadata?.name).sort()).toEqual(['job', 'late']);

    // The sequence the real apiserver provokes: watch(old RV) -> ERROR 410 -> list -> watch(new RV).
    const seq = server.requests.map((r) => `${r.query['watch'] === 'true' ? 'watch' : 'list'}@${r.query['resourceVersion'] ?? ''}`);
    expect(seq).toEqual([`watch@${rvBefore}`, 'list@', `watch@${server.resourceVersion()}`]);
    expect(errors).toHaveLength(1);
  });

  test('raw Watch: replay from resourceVersion, selector transitions, 410 ERROR event, bookmarks, timeoutSeconds', async () => {
    const watch = new Watch(kc);
    const events: Array<{ type: string; name?: string; rv?: string; code?: number }> = [];
    const record = (type: string, obj: KubernetesObject & { code?: number }): void => {
      const e: { type: string; name?: string; rv?: string; code?: number } = { type };
      if (obj.metadata?.name !== undefined) e.name = obj.metadata.name;
      if (obj.metadata?.resourceVersion !== undefined) e.rv = obj.metadata.resourceVersion;
      if (obj.code !== undefined) e.code = obj.code;
      events.push(e);
    };
    const start = server.resourceVersion();
    server.updatePod('default', 'db', (p) => {
      p.spec = { ...p.spec, nodeName: 'node-1' }; // moves into the selector
    });
    server.updatePod('default', 'web', (p) => {
      p.spec = { ...p.spec, nodeName: 'node-3' }; // moves out of the selector
    });

    let done: unknown = 'pending';
    const ctl = await watch.watch(
      '/api/v1/namespaces/default/pods',
      { resourceVersion: start, fieldSelector: 'spec.nodeName=node-1', allowWatchBookmarks: true, timeoutSeconds: 1 },
      record,
      (err) => {
        done = err;
      },
    );
    await waitFor('replayed events', () => events.length === 2);
    expect(events.map((e) => `${e.type} ${e.name}`)).toEqual(['ADDED db', 'DELETED web']);
    expect(events[1]!.rv).toBe(server.getPod('default', 'web')!.metadata.resourceVersion);

    server.createPod(pod('new', 'node-1', { namespace: 'team-a' })); // other namespace: not seen
    server.createPod(pod('new', 'node-1'));
    server.sendBookmarks();
    await waitFor('live + bookmark', () => events.length === 4);
    expect(events.slice(2)).toEqual([
      { type: 'ADDED', name: 'new', rv: server.getPod('default', 'new')!.metadata.resourceVersion },
      { type: 'BOOKMARK', rv: server.resourceVersion() },
    ]);
    // timeoutSeconds=1: the server ends the stream cleanly, done(null).
    await waitFor('timeout', () => done !== 'pending');
    expect(done).toBeNull();
    ctl.abort();

    // Watch without resourceVersion: synthetic ADDED for the current state.
    events.length = 0;
    done = 'pending';
    const ctl2 = await watch.watch('/api/v1/namespaces', {}, record, (err) => {
      done = err;
    });
    await waitFor('initial namespaces', () => events.length === 2);
    expect(events.map((e) => `${e.type} ${e.name}`)).toEqual(['ADDED default', 'ADDED team-a']);
    server.deleteNamespace('team-a'); // Terminating, its pods deleted, then DELETED
    await waitFor('namespace deletion', () => events.length === 4);
    expect(events.slice(2).map((e) => `${e.type} ${e.name}`)).toEqual(['MODIFIED team-a', 'DELETED team-a']);
    expect(server.getPod('team-a', 'job')).toBeUndefined();
    ctl2.abort();
    await waitFor('aborted', () => done !== 'pending' && server.watchCount() === 0);

    // Too old resourceVersion: a 200 stream carrying one ERROR (410 Expired) event, then the end.
    server.compact();
    events.length = 0;
    done = 'pending';
    await watch.watch('/api/v1/pods', { resourceVersion: start }, record, (err) => {
      done = err;
    });
    await waitFor('expired', () => done !== 'pending');
    expect(done).toBeNull();
    expect(events).toEqual([{ type: 'ERROR', code: 410 }]);
  });

  test('restart() drops connections, keeps the store and serves on the same port', async () => {
    const { lw, log, errors } = nodeListWatch(kc, true);
    cleanups.push(() => lw.stop());
    await waitFor('initial list', () => log.length === 2 && server.watchCount() === 1);
    const port = server.port;

    await server.restart();
    expect(server.port).toBe(port);
    await waitFor('error from dropped watch', () => errors.length === 1);

    server.createPod(pod('after', 'node-1'));
    await lw.start(); // resumes from its resourceVersion: no re-list needed
    await waitFor('resumed', () => log.length === 3);
    expect(log[2]).toBe('add after');
    const api = kc.makeApiClient(CoreV1Api);
    expect((await api.listPodForAllNamespaces()).items).toHaveLength(4);
  });

  test('events: POST (core and events.k8s.io) stored, PATCH merged', async () => {
    const api = kc.makeApiClient(CoreV1Api);
    const body: CoreV1Event = {
      metadata: { generateName: 'web.' },
      involvedObject: { kind: 'Pod', name: 'web', namespace: 'default' },
      reason: 'CredentialsIssued',
      message: 'issued role arn:aws:iam::123456789012:role/web',
      type: 'Normal',
      count: 1,
    };
    const created = await api.createNamespacedEvent({ namespace: 'default', body });
    expect(created.metadata.name).toMatch(/^web\.[a-z0-9]{5}$/);
    expect(created.metadata.namespace).toBe('default');
    expect(created.metadata.resourceVersion).toBe(server.resourceVersion());

    // client-node's default PATCH content type is application/json-patch+json.
    const patched = await api.patchNamespacedEvent({
      name: created.metadata.name!,
      namespace: 'default',
      body: [{ op: 'replace', path: '/count', value: 2 }],
    });
    expect(patched.count).toBe(2);
    const merged = await fetch(`${server.url}/api/v1/namespaces/default/events/${created.metadata.name}`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/merge-patch+json' },
      body: JSON.stringify({ count: 3, message: 'again' }),
    });
    expect(merged.status).toBe(200);

    const dup = await api.createNamespacedEvent({ namespace: 'default', body: { ...body, metadata: { name: created.metadata.name! } } }).catch((e: unknown) => e);
    expect((dup as ApiException<string>).code).toBe(409);

    const res = await fetch(`${server.url}/apis/events.k8s.io/v1/namespaces/team-a/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ metadata: { name: 'e2' }, regarding: { kind: 'Pod', name: 'job' }, reason: 'X', note: 'n', action: 'A' }),
    });
    expect(res.status).toBe(201);

    const stored = server.events();
    expect(stored).toHaveLength(2);
    expect(stored[0]).toMatchObject({ reason: 'CredentialsIssued', count: 3, message: 'again', kind: 'Event', apiVersion: 'v1' });
    expect(stored[1]).toMatchObject({ metadata: { name: 'e2', namespace: 'team-a' }, apiVersion: 'events.k8s.io/v1' });
  });

  test('pods: POST creates (Pending, server-owned metadata, 409 on a taken name), PATCH status as the kubelet reports', async () => {
    const api = kc.makeApiClient(CoreV1Api);
    const lw = nodeListWatch(kc, true);
    cleanups.push(() => lw.lw.stop());
    await waitFor('the initial list', () => lw.log.includes('add web'));
    const created = await api.createNamespacedPod({
      namespace: 'team-a',
      body: { metadata: { name: 'made', uid: 'client-uid', annotations: { a: '1' } }, spec: { nodeName: 'node-1', containers: [{ name: 'app', image: 'busybox' }] }, status: { phase: 'Running', podIP: '10.9.9.9' } },
    });
    expect(created.metadata).toMatchObject({ name: 'made', namespace: 'team-a', annotations: { a: '1' } });
    expect(created.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.status).toEqual({ phase: 'Pending' });
    await waitFor('the created pod seen by the informer', () => lw.log.includes('add made'));
    const taken = await api.createNamespacedPod({ namespace: 'team-a', body: { metadata: { name: 'made' }, spec: { containers: [{ name: 'app', image: 'busybox' }] } } }).catch((e: unknown) => e);
    expect((taken as ApiException<string>).code).toBe(409);
    const elsewhere = await api.createNamespacedPod({ namespace: 'team-a', body: { metadata: { name: 'x', namespace: 'default' }, spec: { containers: [] } } }).catch((e: unknown) => e);
    expect((elsewhere as ApiException<string>).code).toBe(400);
    const generated = await api.createNamespacedPod({ namespace: 'default', body: { metadata: { generateName: 'web-' }, spec: { containers: [{ name: 'app', image: 'busybox' }] } } });
    expect(generated.metadata?.name).toMatch(/^web-[a-z0-9]{5}$/);

    const status = (body: object, type = 'application/merge-patch+json') =>
      fetch(`${server.url}/api/v1/namespaces/team-a/pods/made/status`, { method: 'PATCH', headers: { 'content-type': type }, body: JSON.stringify(body) });
    const patched = await status({ status: { phase: 'Running', podIP: '10.1.2.3', podIPs: [{ ip: '10.1.2.3' }] }, spec: { nodeName: 'node-2' } });
    expect(patched.status).toBe(200);
    const stored = server.getPod('team-a', 'made')!;
    expect(stored.status).toEqual({ phase: 'Running', podIP: '10.1.2.3', podIPs: [{ ip: '10.1.2.3' }] });
    expect(stored.spec).toMatchObject({ nodeName: 'node-1' }); // only the status changes
    await waitFor('the status update seen by the informer', () => lw.log.includes('update made Running'));
    expect((await status({ status: {} }, 'application/json-patch+json')).status).toBe(415);
    expect((await fetch(`${server.url}/api/v1/namespaces/team-a/pods/absent/status`, { method: 'PATCH', headers: { 'content-type': 'application/merge-patch+json' }, body: '{}' })).status).toBe(404);
  });

  test('bearer token auth, latency and the request log', async () => {
    const secured = await KubeApiServer.start({ token: 's3cret' });
    cleanups.push(() => secured.stop());
    secured.createNamespace({ metadata: { name: 'default' } });

    const denied = await kubeConfig(secured.url).makeApiClient(CoreV1Api).listNamespace().catch((e: unknown) => e);
    expect((denied as ApiException<string>).code).toBe(401);
    const allowed = await kubeConfig(secured.url, 's3cret').makeApiClient(CoreV1Api).listNamespace();
    expect(allowed.items).toHaveLength(1);

    secured.setLatency(150);
    const t0 = Date.now();
    await kubeConfig(secured.url, 's3cret').makeApiClient(CoreV1Api).readNamespace({ name: 'default' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(secured.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      'GET /api/v1/namespaces',
      'GET /api/v1/namespaces',
      'GET /api/v1/namespaces/default',
    ]);
  });
  test('metadata-only views: PartialObjectMetadataList lists (chunked, selected), PartialObjectMetadata watches and gets, 406 otherwise', async () => {
    const LIST = 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1';
    const ONE = 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1';
    server.createServiceAccount({ metadata: { name: 'sa-1', namespace: 'team-a', annotations: { 'iam.amazonaws.com/role': 'r1' } }, imagePullSecrets: [{ name: 'x'.repeat(1000) }] } as never);
    server.createServiceAccount({ metadata: { name: 'sa-2', namespace: 'team-a' } });
    server.createServiceAccount({ metadata: { name: 'sa-3', namespace: 'default' } });
    const get = async (path: string, accept: string) => {
      const r = await fetch(`${server.url}${path}`, { headers: { accept } });
      return { status: r.status, body: (await r.json()) as Record<string, any> };
    };
    const page1 = await get('/api/v1/namespaces/team-a/serviceaccounts?limit=1', LIST);
    expect(page1.status).toBe(200);
    expect(page1.body).toMatchObject({ kind: 'PartialObjectMetadataList', apiVersion: 'meta.k8s.io/v1', metadata: { resourceVersion: server.resourceVersion() } });
    expect(page1.body.items).toEqual([{ kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: expect.objectContaining({ name: 'sa-1', namespace: 'team-a', annotations: { 'iam.amazonaws.com/role': 'r1' } }) }]);
    expect(JSON.stringify(page1.body)).not.toContain('imagePullSecrets');
    const page2 = await get(`/api/v1/namespaces/team-a/serviceaccounts?limit=1&continue=${page1.body.metadata.continue}`, LIST);
    expect(page2.body.items.map((i: { metadata: { name: string } }) => i.metadata.name)).toEqual(['sa-2']);
    expect((await get('/api/v1/namespaces?fieldSelector=metadata.name%3Dteam-a', `application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, ${LIST}`)).body.items).toEqual([
      { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: expect.objectContaining({ name: 'team-a', labels: expect.objectContaining({ team: 'a' }) }) },
    ]);
    // A list asked as single objects (or the reverse) cannot be served: 406, unless JSON is an alternative.
    expect((await get('/api/v1/serviceaccounts', ONE)).status).toBe(406);
    expect((await get('/api/v1/namespaces/team-a/serviceaccounts/sa-1', LIST)).status).toBe(406);
    expect((await get('/api/v1/serviceaccounts', `${ONE}, application/json`)).body.kind).toBe('ServiceAccountList');
    expect((await get('/api/v1/namespaces/team-a/serviceaccounts/sa-1', ONE)).body).toEqual({ kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: expect.objectContaining({ name: 'sa-1' }) });
    expect(server.requests.at(-1)?.accept).toBe(ONE);

    // A watch: events carry PartialObjectMetadata; a 410 is still a Status.
    const rv = server.resourceVersion();
    const controller = new AbortController();
    cleanups.push(() => controller.abort());
    const res = await fetch(`${server.url}/api/v1/namespaces/team-a/serviceaccounts?watch=true&resourceVersion=${rv}`, { headers: { accept: ONE }, signal: controller.signal });
    const reader = res.body!.getReader();
    server.updateServiceAccount('team-a', 'sa-2', (sa) => {
      sa.metadata.annotations = { 'iam.amazonaws.com/role': 'r2' };
    });
    server.deleteServiceAccount('team-a', 'sa-1');
    let text = '';
    while (text.split('\n').length < 3) text += new TextDecoder().decode((await reader.read()).value);
    const events = text.trim().split('\n').map((l) => JSON.parse(l) as { type: string; object: { kind: string; metadata: { name: string; resourceVersion: string } } });
    expect(events.map((e) => `${e.type} ${e.object.kind} ${e.object.metadata.name}`)).toEqual(['MODIFIED PartialObjectMetadata sa-2', 'DELETED PartialObjectMetadata sa-1']);
    expect(Number(events[1]!.object.metadata.resourceVersion)).toBeGreaterThan(Number(rv));
    server.compact();
    const gone = await fetch(`${server.url}/api/v1/namespaces/team-a/serviceaccounts?watch=true&resourceVersion=${rv}`, { headers: { accept: ONE } });
    expect(JSON.parse((await gone.text()).trim())).toMatchObject({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } });
  });
});
