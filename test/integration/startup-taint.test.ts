/**
 * src/kube/startup-taint.ts against the test API server (nodes GET/PATCH with resourceVersions):
 * the races a start-up taint's removal meets on a real node, made certain with
 * interleaveBeforeNextNodePatch (another writer's change lands between podiam's read and its patch).
 */
import { Writable } from 'node:stream';
import { createKubeConfig } from '../../src/kube/api.js';
import { StartupTaint } from '../../src/kube/startup-taint.js';
import { createLogger } from '../../src/log.js';
import { KubeApiServer } from '../support/kube-api-server.js';

const TAINT = { key: 'podiam.io/agent-not-ready', effect: 'NoSchedule' };
const CILIUM = { key: 'node.cilium.io/agent-not-ready', value: 'true', effect: 'NoSchedule' };
const GPU = { key: 'example.com/gpu', effect: 'NoSchedule' };

let kube: KubeApiServer;
let lines: string[];
beforeEach(async () => {
  kube = await KubeApiServer.start();
  lines = [];
});
afterEach(async () => {
  await kube.stop();
});

function taint(key = TAINT.key): StartupTaint {
  const log = createLogger({ format: 'json', level: 'info', stream: new Writable({ write: (c, _e, done) => (lines.push(String(c)), done()) }) });
  return new StartupTaint(createKubeConfig({ apiServer: kube.url, insecure: true, kubeconfig: undefined, apiToken: undefined }), { node: 'n1', key, log, backoffMs: { first: 20, max: 50 } });
}

test('removes only its taint; another agent removing its own taint meanwhile (an index shift) makes podiam re-read, and both removals hold', async () => {
  kube.createNode({ metadata: { name: 'n1' }, spec: { taints: [CILIUM, TAINT, GPU] } });
  // Cilium removes its taint between podiam's GET and its PATCH: index 1 is now the GPU taint.
  kube.interleaveBeforeNextNodePatch(() => kube.updateNode('n1', (n) => ((n.spec as { taints: unknown[] }).taints = [TAINT, GPU])));
  expect(await taint().remove()).toBe('removed');
  expect(kube.getNode('n1')!.spec!['taints']).toEqual([GPU]);
  expect(kube.nodePatches()).toHaveLength(1);
});

test('a kubelet status write meanwhile (same taints, new resourceVersion) does not stop the patch', async () => {
  kube.createNode({ metadata: { name: 'n1' }, spec: { taints: [TAINT] } });
  kube.interleaveBeforeNextNodePatch(() => kube.updateNode('n1', (n) => (n.status = { conditions: [{ type: 'Ready', status: 'True' }] })));
  expect(await taint().remove()).toBe('removed');
  expect(kube.getNode('n1')!.spec!['taints']).toEqual([]);
});

test('a taint that is not there (or only with another effect): nothing written', async () => {
  kube.createNode({ metadata: { name: 'n1' }, spec: { taints: [{ key: TAINT.key, effect: 'NoExecute' }] } });
  expect(await taint().remove()).toBe('absent');
  expect(kube.nodePatches()).toEqual([]);
});

test('API errors are retried with backoff, said at warn; stop() ends the retries', async () => {
  // No such node yet: 404s, then the node appears and the taint is removed.
  const t = taint();
  const done = t.remove();
  await new Promise((r) => setTimeout(r, 100));
  kube.createNode({ metadata: { name: 'n1' }, spec: { taints: [TAINT] } });
  expect(await done).toBe('removed');
  expect(lines.some((l) => l.includes('could not remove the start-up taint; retrying') && l.includes('404'))).toBe(true);
  const stopped = taint('other.io/never');
  kube.interleaveBeforeNextNodePatch(() => undefined);
  await kube.stop();
  const p = stopped.remove();
  await new Promise((r) => setTimeout(r, 60));
  stopped.stop();
  expect(await p).toBe('stopped');
});
