import type { PodInfo } from '../../src/roles.js';
import { PodIndex, isServable } from '../../src/kube/pod-index.js';

function pod(name: string, ip: string | string[], overrides: Partial<PodInfo> = {}): PodInfo {
  return {
    namespace: 'default',
    name,
    uid: `uid-${name}`,
    ips: Array.isArray(ip) ? ip : [ip],
    phase: 'Running',
    hostNetwork: false,
    createdMs: 1000,
    deleting: false,
    annotations: {},
    ...overrides,
  };
}

/** Resolves after a macrotask turn: long enough for any already-settled promise to be seen. */
function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

describe('PodIndex lookup', () => {
  it('indexes a running pod by IP', () => {
    const index = new PodIndex();
    const p = pod('a', '10.0.0.1');
    index.upsertPod(p);
    expect(index.lookup('10.0.0.1')).toBe(p);
    expect(index.lookup('10.0.0.2')).toBeUndefined();
    expect(index.podCount()).toBe(1);
    expect(index.ipCount()).toBe(1);
  });

  it('indexes every IP of a dual-stack pod', () => {
    const index = new PodIndex();
    const p = pod('a', ['10.0.0.1', 'fd00::1']);
    index.upsertPod(p);
    expect(index.lookup('10.0.0.1')).toBe(p);
    expect(index.lookup('fd00::1')).toBe(p);
  });

  it.each([
    ['Succeeded', { phase: 'Succeeded' }],
    ['Failed', { phase: 'Failed' }],
    ['hostNetwork', { hostNetwork: true }],
    ['no IP', { ips: [] as string[] }],
  ])('ignores %s pods', (_what, overrides) => {
    const index = new PodIndex();
    const p = pod('a', '10.0.0.1', overrides as Partial<PodInfo>);
    expect(isServable(p)).toBe(false);
    index.upsertPod(p);
    expect(index.lookup('10.0.0.1')).toBeUndefined();
    expect(index.ipCount()).toBe(0);
  });

  it('a Pending pod with an IP is servable', () => {
    const index = new PodIndex();
    const p = pod('a', '10.0.0.1', { phase: 'Pending' });
    index.upsertPod(p);
    expect(index.lookup('10.0.0.1')).toBe(p);
  });

  it('a pod that finishes stops owning its IP', () => {
    const index = new PodIndex();
    index.upsertPod(pod('a', '10.0.0.1'));
    index.upsertPod(pod('a', '10.0.0.1', { phase: 'Succeeded' }));
    expect(index.lookup('10.0.0.1')).toBeUndefined();
    expect(index.podCount()).toBe(1);
  });

  it('an update replaces the old version, including a changed IP', () => {
    const index = new PodIndex();
    index.upsertPod(pod('a', '10.0.0.1'));
    const moved = pod('a', '10.0.0.2', { annotations: { x: 'y' } });
    index.upsertPod(moved);
    expect(index.lookup('10.0.0.1')).toBeUndefined();
    expect(index.lookup('10.0.0.2')).toBe(moved);
    expect(index.podCount()).toBe(1);
  });

  it('the newest Running pod wins when two pods share an IP', () => {
    const index = new PodIndex();
    const older = pod('old', '10.0.0.1', { createdMs: 1000 });
    const newer = pod('new', '10.0.0.1', { createdMs: 2000 });
    index.upsertPod(newer);
    index.upsertPod(older);
    expect(index.lookup('10.0.0.1')).toBe(newer);
    const index2 = new PodIndex();
    index2.upsertPod(older);
    index2.upsertPod(newer);
    expect(index2.lookup('10.0.0.1')).toBe(newer);
  });

  it('a newer Pending pod (the IP was reused) beats an older Running one whose status lags', () => {
    const index = new PodIndex();
    const pending = pod('pend', '10.0.0.1', { createdMs: 2000, phase: 'Pending' });
    index.upsertPod(pending);
    index.upsertPod(pod('run', '10.0.0.1', { createdMs: 1000 }));
    expect(index.lookup('10.0.0.1')).toBe(pending);
  });

  it('a terminating Running pod gives way to the new Pending pod that has its IP', () => {
    const index = new PodIndex();
    const pending = pod('pend', '10.0.0.1', { createdMs: 2000, phase: 'Pending' });
    index.upsertPod(pod('old', '10.0.0.1', { createdMs: 1000, deleting: true }));
    index.upsertPod(pending);
    expect(index.lookup('10.0.0.1')).toBe(pending);
  });

  it('same creation second: Running beats Pending', () => {
    const index = new PodIndex();
    const running = pod('run', '10.0.0.1', { createdMs: 1000 });
    index.upsertPod(pod('pend', '10.0.0.1', { createdMs: 1000, phase: 'Pending' }));
    index.upsertPod(running);
    expect(index.lookup('10.0.0.1')).toBe(running);
  });

  it('a deleting pod gives way to the other pod with its IP', () => {
    const index = new PodIndex();
    const older = pod('old', '10.0.0.1', { createdMs: 1000 });
    index.upsertPod(older);
    index.upsertPod(pod('new', '10.0.0.1', { createdMs: 2000, deleting: true }));
    expect(index.lookup('10.0.0.1')).toBe(older);
  });

  it('deleting the winner falls back to the other pod', () => {
    const index = new PodIndex();
    const older = pod('old', '10.0.0.1', { createdMs: 1000 });
    const newer = pod('new', '10.0.0.1', { createdMs: 2000 });
    index.upsertPod(older);
    index.upsertPod(newer);
    index.deletePod('default', 'new');
    expect(index.lookup('10.0.0.1')).toBe(older);
    index.deletePod('default', 'old');
    expect(index.lookup('10.0.0.1')).toBeUndefined();
    expect(index.ipCount()).toBe(0);
    expect(index.podCount()).toBe(0);
  });

  it('delete removes the IP; deleting an unknown pod is a no-op', () => {
    const index = new PodIndex();
    index.upsertPod(pod('a', '10.0.0.1'));
    index.deletePod('default', 'nope');
    index.deletePod('other', 'a');
    expect(index.lookup('10.0.0.1')).toBeDefined();
    index.deletePod('default', 'a');
    expect(index.lookup('10.0.0.1')).toBeUndefined();
  });

  it('pods with the same name in different namespaces are different pods', () => {
    const index = new PodIndex();
    const a = pod('p', '10.0.0.1', { namespace: 'ns1' });
    const b = pod('p', '10.0.0.2', { namespace: 'ns2' });
    index.upsertPod(a);
    index.upsertPod(b);
    expect(index.lookup('10.0.0.1')).toBe(a);
    expect(index.lookup('10.0.0.2')).toBe(b);
    index.deletePod('ns1', 'p');
    expect(index.lookup('10.0.0.2')).toBe(b);
  });

  it('a reused IP maps to the new pod', () => {
    const index = new PodIndex();
    index.upsertPod(pod('job-1', '10.0.0.9', { createdMs: 1000 }));
    // The old pod completes (keeps status.podIP), the IP is handed to a new pod.
    index.upsertPod(pod('job-1', '10.0.0.9', { createdMs: 1000, phase: 'Succeeded' }));
    const fresh = pod('web-2', '10.0.0.9', { createdMs: 5000 });
    index.upsertPod(fresh);
    expect(index.lookup('10.0.0.9')).toBe(fresh);
    // Even if the new pod's event comes first, the newest Running one wins.
    const index2 = new PodIndex();
    index2.upsertPod(pod('job-1', '10.0.0.9', { createdMs: 1000 }));
    index2.upsertPod(fresh);
    expect(index2.lookup('10.0.0.9')).toBe(fresh);
    index2.deletePod('default', 'job-1');
    expect(index2.lookup('10.0.0.9')).toBe(fresh);
  });

  it('snapshot maps each IP to its winning pod', () => {
    const index = new PodIndex();
    index.upsertPod(pod('old', '10.0.0.1', { createdMs: 1 }));
    index.upsertPod(pod('new', '10.0.0.1', { createdMs: 2 }));
    index.upsertPod(pod('b', '10.0.0.2'));
    expect(index.snapshot()).toEqual({ '10.0.0.1': 'default/new', '10.0.0.2': 'default/b' });
  });

  it('calls onPodServable listeners for servable pods only', () => {
    const index = new PodIndex();
    const seen: string[] = [];
    index.onPodServable((p) => seen.push(p.name));
    index.upsertPod(pod('a', '10.0.0.1'));
    index.upsertPod(pod('h', '10.0.0.2', { hostNetwork: true }));
    index.upsertPod(pod('s', '10.0.0.3', { phase: 'Succeeded' }));
    expect(seen).toEqual(['a']);
  });

  it('stores namespaces', () => {
    const index = new PodIndex();
    index.upsertNamespace({ name: 'ns1', annotations: { k: 'v' } });
    expect(index.namespace('ns1')?.annotations.k).toBe('v');
    index.deleteNamespace('ns1');
    expect(index.namespace('ns1')).toBeUndefined();
  });
});

describe('PodIndex waitFor', () => {
  it('resolves immediately when the IP is known', async () => {
    const index = new PodIndex();
    const p = pod('a', '10.0.0.1');
    index.upsertPod(p);
    let result: PodInfo | undefined | 'pending' = 'pending';
    void index.waitFor('10.0.0.1', 60_000).then((r) => (result = r));
    await tick();
    expect(result).toBe(p);
    expect(index.waiting()).toBe(0);
  });

  it('resolves on upsert, before the timeout (event-driven)', async () => {
    const index = new PodIndex();
    const started = Date.now();
    let result: PodInfo | undefined | 'pending' = 'pending';
    const waiting = index.waitFor('10.0.0.1', 60_000).then((r) => (result = r));
    await tick();
    expect(result).toBe('pending');
    expect(index.waiting()).toBe(1);
    const p = pod('a', '10.0.0.1');
    index.upsertPod(p);
    await tick();
    expect(result).toBe(p);
    await waiting;
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(index.waiting()).toBe(0);
  });

  it('wakes every waiter for the IP, and only those', async () => {
    const index = new PodIndex();
    const a = index.waitFor('10.0.0.1', 60_000);
    const b = index.waitFor('10.0.0.1', 60_000);
    let other: PodInfo | undefined | 'pending' = 'pending';
    const c = index.waitFor('10.0.0.2', 50).then((r) => (other = r));
    const p = pod('a', '10.0.0.1');
    index.upsertPod(p);
    expect(await a).toBe(p);
    expect(await b).toBe(p);
    expect(other).toBe('pending');
    await c;
    expect(other).toBeUndefined();
  });

  it('a non-servable upsert does not wake a waiter', async () => {
    const index = new PodIndex();
    let result: PodInfo | undefined | 'pending' = 'pending';
    const waiting = index.waitFor('10.0.0.1', 50).then((r) => (result = r));
    index.upsertPod(pod('h', '10.0.0.1', { hostNetwork: true }));
    await tick();
    expect(result).toBe('pending');
    await waiting;
    expect(result).toBeUndefined();
  });

  it('resolves undefined after the timeout', async () => {
    const index = new PodIndex();
    const started = Date.now();
    const r = await index.waitFor('10.0.0.1', 50);
    const elapsed = Date.now() - started;
    expect(r).toBeUndefined();
    expect(elapsed).toBeGreaterThanOrEqual(45);
    expect(elapsed).toBeLessThan(2_000);
    expect(index.waiting()).toBe(0);
  });

  it('with ms <= 0 answers at once', async () => {
    const index = new PodIndex();
    expect(await index.waitFor('10.0.0.1', 0)).toBeUndefined();
    expect(index.waiting()).toBe(0);
  });
});

describe('what the broker tells agents of', () => {
  it('a policy change is a namespace or ServiceAccount whose annotations changed, or that went; a relist that changes nothing is none', () => {
    const index = new PodIndex();
    const seen: string[] = [];
    index.onPolicyChange((ns, sa) => seen.push(sa === undefined ? ns : `${ns}/${sa}`));
    index.upsertNamespace({ name: 'team', annotations: { 'iam.amazonaws.com/allowed-roles': '["a"]' } });
    index.upsertNamespace({ name: 'team', annotations: { 'iam.amazonaws.com/allowed-roles': '["a"]' } });
    index.upsertNamespace({ name: 'team', annotations: { 'iam.amazonaws.com/allowed-roles': '["b"]' } });
    index.upsertServiceAccount({ namespace: 'team', name: 'builder', uid: 'u1', annotations: {} });
    index.upsertServiceAccount({ namespace: 'team', name: 'builder', uid: 'u1', annotations: {} });
    index.upsertServiceAccount({ namespace: 'team', name: 'builder', uid: 'u1', annotations: { 'iam.amazonaws.com/role': 'x' } });
    index.deleteServiceAccount('team', 'builder');
    index.deleteServiceAccount('team', 'builder');
    index.deleteNamespace('team');
    expect(seen).toEqual(['team', 'team', 'team/builder', 'team/builder', 'team/builder', 'team']);
  });

  it('hasPodsOn counts the pods of each namespace on each node, as pods come, move and go', () => {
    const index = new PodIndex();
    index.upsertPod(pod('a', '10.0.0.1', { namespace: 'team', nodeName: 'n1' }));
    index.upsertPod(pod('b', '10.0.0.2', { namespace: 'team', nodeName: 'n1' }));
    expect([index.hasPodsOn('n1', 'team'), index.hasPodsOn('n2', 'team'), index.hasPodsOn('n1', 'other')]).toEqual([true, false, false]);
    index.deletePod('team', 'a');
    expect(index.hasPodsOn('n1', 'team')).toBe(true);
    // Rescheduled (a new pod of the same name, another uid, on another node).
    index.upsertPod(pod('b', '10.0.0.2', { namespace: 'team', nodeName: 'n2', uid: 'b-2' }));
    expect([index.hasPodsOn('n1', 'team'), index.hasPodsOn('n2', 'team')]).toEqual([false, true]);
    index.deletePod('team', 'b');
    expect(index.hasPodsOn('n2', 'team')).toBe(false);
  });

  it('hasPodsOn with a ServiceAccount: only the ServiceAccounts the node\'s pods run as (none named: default)', () => {
    const index = new PodIndex();
    index.upsertPod(pod('a', '10.0.0.1', { namespace: 'team', nodeName: 'n1', serviceAccount: 'builder' }));
    index.upsertPod(pod('b', '10.0.0.2', { namespace: 'team', nodeName: 'n1' }));
    index.upsertPod(pod('c', '10.0.0.3', { namespace: 'team', nodeName: 'n2', serviceAccount: 'deployer' }));
    const on = (node: string, sa: string) => index.hasPodsOn(node, 'team', sa);
    expect([on('n1', 'builder'), on('n1', 'default'), on('n1', 'deployer'), on('n2', 'deployer'), on('n2', 'builder')]).toEqual([true, true, false, true, false]);
    index.deletePod('team', 'a');
    expect([on('n1', 'builder'), index.hasPodsOn('n1', 'team')]).toEqual([false, true]);
    index.deletePod('team', 'b');
    expect(index.hasPodsOn('n1', 'team')).toBe(false);
  });
});
