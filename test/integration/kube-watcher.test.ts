/**
 * KubeWatcher (src/kube/pods.ts) in process, against the test API server: the scopes a node's
 * pods open and close, the informer a NotReady names, and the cluster-wide metadata-only mode a
 * cluster-wide service (the broker) would run.
 */
import { Writable } from 'node:stream';
import { createKubeConfig } from '../../src/kube/api.js';
import { PodIndex } from '../../src/kube/pod-index.js';
import { KubeWatcher } from '../../src/kube/pods.js';
import { createLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';
import { NotReady } from '../../src/errors.js';
import { KubeApiServer } from '../support/kube-api-server.js';
import { waitFor } from '../support/wait.js';

const ROLE = 'iam.amazonaws.com/role';
const METADATA_LIST = 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1';

let kube: KubeApiServer;
const watchers: KubeWatcher[] = [];
beforeEach(async () => {
  kube = await KubeApiServer.start();
});
afterEach(async () => {
  for (const w of watchers.splice(0)) await w.stop();
  await kube.stop();
});

function watcher(opts: { node?: string; metadataScope: 'used' | 'all'; lingerMs?: number; deadlineMs?: number }): { w: KubeWatcher; index: PodIndex } {
  const index = new PodIndex();
  const w = new KubeWatcher(createKubeConfig({ kubeconfig: undefined, apiServer: kube.url, apiToken: undefined, insecure: true }), index, {
    node: opts.node,
    metadataScope: opts.metadataScope,
    annotationKeys: { pod: [ROLE], namespace: ['iam.amazonaws.com/allowed-roles'], serviceAccount: [ROLE] },
    log: createLogger({ format: 'json', level: 'error', stream: new Writable({ write: (_c, _e, done) => done() }) }),
    metrics: createMetrics({ defaultMetrics: false }),
    watchDeadlineMs: opts.deadlineMs ?? 2000,
    lingerMs: opts.lingerMs,
  });
  watchers.push(w);
  w.start();
  return { w, index };
}

const pod = (name: string, namespace: string, node: string, ip: string) => ({
  metadata: { name, namespace, annotations: { other: 'x'.repeat(1000) } },
  spec: { nodeName: node, serviceAccountName: 'app', containers: [] },
  status: { phase: 'Running', podIP: ip },
});

test('a node watches the metadata of its pods’ namespaces only, keeps only the keys it reads, and forgets a namespace after its last pod', async () => {
  for (const ns of ['a', 'b', 'c']) {
    kube.createNamespace({ metadata: { name: ns, annotations: { 'iam.amazonaws.com/allowed-roles': `["${ns}-*"]`, noise: 'y'.repeat(1000) } } });
    kube.createServiceAccount({ metadata: { name: 'app', namespace: ns, annotations: { [ROLE]: `${ns}-role`, noise: 'z' } } });
  }
  kube.createPod(pod('p1', 'a', 'node-1', '10.0.0.1'));
  kube.createPod(pod('p2', 'b', 'node-2', '10.0.0.2'));
  const { w, index } = watcher({ node: 'node-1', metadataScope: 'used', lingerMs: 200 });
  await w.ready(5000);
  const p1 = index.lookup('10.0.0.1')!;
  await w.ready(5000, p1);
  expect(p1.annotations).toEqual({});
  expect(index.namespace('a')).toEqual({ name: 'a', annotations: { 'iam.amazonaws.com/allowed-roles': '["a-*"]' } });
  expect(index.serviceAccountOf(p1)?.annotations).toEqual({ [ROLE]: 'a-role' });
  expect(index.namespace('b')).toBeUndefined();
  expect(w.watchedNamespaces()).toEqual(['a']);
  const metadataRequests = kube.requests.filter((r) => r.path.includes('serviceaccounts') || r.path === '/api/v1/namespaces');
  expect(metadataRequests.every((r) => r.accept?.includes('as=PartialObjectMetadata'))).toBe(true);
  expect(metadataRequests.some((r) => r.path === '/api/v1/namespaces' && r.query.fieldSelector === 'metadata.name=a' && r.accept === METADATA_LIST)).toBe(true);

  // A change to the ServiceAccount arrives by its watch.
  kube.updateServiceAccount('a', 'app', (sa) => {
    sa.metadata.annotations = { [ROLE]: 'a-role-2' };
  });
  await waitFor(() => index.serviceAccountOf(p1)?.annotations[ROLE] === 'a-role-2', 5000, 'the update');

  // A pod in c: c is watched from then on.
  kube.createPod(pod('p3', 'c', 'node-1', '10.0.0.3'));
  await waitFor(() => index.lookup('10.0.0.3') !== undefined, 5000, 'p3');
  await w.ready(5000, index.lookup('10.0.0.3'));
  expect(index.namespace('c')?.name).toBe('c');

  // The last pod of a goes: after the linger, a's metadata is forgotten and its watches end.
  // Watches: the pods', and a's and c's two each.
  await waitFor(() => kube.watchCount() === 5, 5000, 'five watches');
  kube.deletePod('a', 'p1');
  await waitFor(() => index.namespace('a') === undefined && w.watchedNamespaces().join() === 'c', 5000, 'a dropped');
  expect(index.serviceAccountOf(p1)).toBeUndefined();
  await waitFor(() => kube.watchCount() === 3, 5000, 'its two watches closed');
  expect(w.healthy()).toBe(true);
});

test('a namespace whose ServiceAccounts cannot be listed: NotReady names that informer, after waiting; other namespaces are served', async () => {
  kube.createNamespace({ metadata: { name: 'ok' } });
  kube.createNamespace({ metadata: { name: 'down' } });
  kube.createPod(pod('fine', 'ok', 'node-1', '10.0.1.1'));
  const { w, index } = watcher({ node: 'node-1', metadataScope: 'used', deadlineMs: 6000 });
  await w.ready(5000, await index.waitFor('10.0.1.1', 5000));
  // The pods' watch and ok's two are open before the ServiceAccounts start failing.
  await waitFor(() => kube.watchCount() === 3, 5000, 'three watches');
  kube.setFailNext(1_000_000, 500, 'serviceaccounts');
  kube.createPod(pod('stuck', 'down', 'node-1', '10.0.1.2'));
  const stuck = (await index.waitFor('10.0.1.2', 5000))!;
  const t0 = Date.now();
  const err = await w.ready(300, stuck).catch((e: unknown) => e);
  expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
  expect(err).toBeInstanceOf(NotReady);
  expect((err as Error).message).toBe('podiam is starting: the serviceaccounts informer (namespace down) not synced yet, try again');
  expect(w.synced(stuck)).toBe(false);
  expect(w.synced(index.lookup('10.0.1.1'))).toBe(true);
  // Past the deadline without a sync, /readyz would say so.
  await waitFor(() => !w.healthy(), 15_000, 'unhealthy');
  expect(w.outOfSync()).toContainEqual(expect.objectContaining({ informer: 'serviceaccounts/down', resource: 'serviceaccounts' }));
  kube.setFailNext(0);
  await w.ready(40_000, stuck);
  expect(w.healthy()).toBe(true);
}, 60_000);

test('cluster-wide (no node, metadata scope all): every pod, and namespaces and ServiceAccounts listed once, metadata only', async () => {
  kube.createNamespace({ metadata: { name: 'x' } });
  kube.createServiceAccount({ metadata: { name: 'app', namespace: 'x', annotations: { [ROLE]: 'x-role' } }, imagePullSecrets: [{ name: 'p'.repeat(10_000) }] } as never);
  kube.createPod(pod('q1', 'x', 'node-7', '10.0.2.1'));
  kube.createPod(pod('q2', 'x', 'node-8', '10.0.2.2'));
  const { w, index } = watcher({ metadataScope: 'all' });
  await w.ready(5000);
  expect(index.podCount()).toBe(2);
  expect(index.serviceAccountOf(index.lookup('10.0.2.2')!)?.annotations).toEqual({ [ROLE]: 'x-role' });
  expect(w.watchedNamespaces()).toEqual([]);
  const lists = kube.requests.filter((r) => r.query.watch === undefined).map((r) => `${r.path} ${r.accept}`);
  expect(lists).toEqual(expect.arrayContaining([`/api/v1/namespaces ${METADATA_LIST}`, `/api/v1/serviceaccounts ${METADATA_LIST}`, '/api/v1/pods application/json']));
});
