/**
 * The broker replicas' shared cache (src/broker/peers.ts): who owns a key (rendezvous hashing over
 * the running replicas), asking the owner before STS and falling back to STS, and the owner's
 * side of the cache (CredentialCache.lasting).
 */
import { CredentialCache, cacheKey } from '../../src/aws/credential-cache.js';
import type { AwsCredentials, RoleAssumer } from '../../src/aws/sts.js';
import { Urgency } from '../../src/aws/sts.js';
import { BadRequest, StsUnavailable } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import type { PodInfo, RoleRequest } from '../../src/roles.js';
import type { PeerMember } from '../../src/broker/peers.js';
import { NOT_READY_GRACE_MS, PEER_DOWN_MS, PeerForwarding, PeerSet, Unreachable, parsePeerRequest } from '../../src/broker/peers.js';
import { toPodInfo } from '../../src/kube/convert.js';
import { FakeClock, flushPromises } from '../support/fake-clock.js';

const log = createLogger({ level: 'error', format: 'json' });

function brokerPod(name: string, overrides: Partial<PodInfo> = {}): PodInfo {
  return { namespace: 'kube-system', name, uid: `uid-${name}`, ips: [`10.0.0.${name.length}`], phase: 'Running', hostNetwork: false, createdMs: 0, deleting: false, annotations: {}, serviceAccount: 'podiam-broker', ...overrides };
}

function request(i: number, overrides: Partial<RoleRequest> = {}): RoleRequest {
  return { roleArn: `arn:aws:iam::123456789012:role/r${i}`, roleName: `r${i}`, externalId: undefined, sessionName: `ns.pod-${i}`, pod: `ns/pod-${i}`, ...overrides };
}

function set(self: string, pods: PodInfo[], now = () => 0): PeerSet {
  return new PeerSet({ namespace: 'kube-system', serviceAccount: 'podiam-broker', self, pods: { allPods: () => pods }, now });
}

describe('PeerSet', () => {
  it('the replicas are the running pods of the brokers\' ServiceAccount, this one excepted', () => {
    const pods = [
      brokerPod('b-self'),
      brokerPod('b-2'),
      brokerPod('b-gone', { deleting: true }),
      brokerPod('b-pending', { phase: 'Pending' }),
      brokerPod('b-noip', { ips: [] }),
      brokerPod('b-host', { hostNetwork: true }),
      brokerPod('other-sa', { serviceAccount: 'default' }),
      brokerPod('other-ns', { namespace: 'default' }),
    ];
    expect(set('b-self', pods).others().map((m) => m.name)).toEqual(['b-2']);
  });

  it('every replica agrees on each key\'s owner, keys spread evenly, and a replica leaving moves only its own keys', () => {
    const names = ['b-1', 'b-2', 'b-3'];
    const pods = names.map((n) => brokerPod(n));
    const views = names.map((n) => set(n, pods));
    const keys = Array.from({ length: 3000 }, (_, i) => cacheKey(request(i)));
    const ownerName = (view: PeerSet, self: string, key: string): string => view.owner(key)?.name ?? self;
    const owners = keys.map((k) => ownerName(views[0]!, 'b-1', k));
    // The same answer from each replica's own view.
    for (let v = 1; v < 3; v++) expect(keys.map((k) => ownerName(views[v]!, names[v]!, k))).toEqual(owners);
    for (const n of names) {
      const share = owners.filter((o) => o === n).length / keys.length;
      expect(share).toBeGreaterThan(0.28);
      expect(share).toBeLessThan(0.39);
    }
    // b-3 goes: its keys are spread over b-1 and b-2, theirs stay where they were.
    const after = set('b-1', pods.slice(0, 2));
    keys.forEach((k, i) => {
      const now = ownerName(after, 'b-1', k);
      if (owners[i] !== 'b-3') expect(now).toBe(owners[i]);
      else expect(['b-1', 'b-2']).toContain(now);
    });
  });

  it('alone, it owns everything; the membership is read again after the refresh interval', () => {
    let t = 0;
    const pods: PodInfo[] = [brokerPod('b-1')];
    const view = set('b-1', pods, () => t);
    expect(view.owner('k')).toBeUndefined();
    pods.push(brokerPod('b-2'));
    expect(view.others()).toHaveLength(0);
    t += 2_000;
    expect(view.others().map((m) => m.name)).toEqual(['b-2']);
  });
});

describe('PeerSet: readiness', () => {
  const T0 = 1_000_000;
  const notReady = (sinceMs: number) => ({ readiness: { ready: false, sinceMs } });

  it('a replica not ready for longer than the grace (its node lost, its probe failing) owns nothing; one just started still counts', () => {
    const t = T0 + NOT_READY_GRACE_MS;
    const pods = [
      brokerPod('b-self', { readiness: { ready: true, sinceMs: 0 } }),
      brokerPod('b-ready', { readiness: { ready: true, sinceMs: 0 } }),
      brokerPod('b-starting', notReady(T0 + 1)),
      brokerPod('b-lost', notReady(T0)),
      brokerPod('b-no-conditions'),
    ];
    expect(set('b-self', pods, () => t).others().map((m) => m.name)).toEqual(['b-no-conditions', 'b-ready', 'b-starting']);
    // No key is owned by the lost replica, from any replica's view.
    const view = set('b-self', pods, () => t);
    for (let i = 0; i < 500; i++) expect(view.owner(cacheKey(request(i)))?.name).not.toBe('b-lost');
  });

  it('this replica, not ready for longer than the grace in its own view, forwards every key to the others; alone, it still owns them', () => {
    const t = T0 + NOT_READY_GRACE_MS + 1;
    const pods = [brokerPod('b-self', notReady(T0)), brokerPod('b-2'), brokerPod('b-3')];
    const view = set('b-self', pods, () => t);
    expect(view.selfMember()).toBe(false);
    const owners = new Set(Array.from({ length: 300 }, (_, i) => view.owner(cacheKey(request(i)))?.name));
    expect(owners).toEqual(new Set(['b-2', 'b-3']));
    // The others agree: b-self is not among their members.
    expect(set('b-2', pods, () => t).others().map((m) => m.name)).toEqual(['b-3']);
    // With no other replica that may own keys, this one does (it calls STS, as without --peers).
    expect(set('b-self', [pods[0]!], () => t).owner('k')).toBeUndefined();
  });

  it('when the rule leaves no replica at all (every one slow to start), the running ones own the keys, and every replica agrees', () => {
    const t = T0 + NOT_READY_GRACE_MS + 1;
    const pods = ['b-1', 'b-2', 'b-3'].map((n) => brokerPod(n, notReady(T0)));
    const views = ['b-1', 'b-2', 'b-3'].map((n) => set(n, pods, () => t));
    for (const v of views) expect(v.selfMember()).toBe(true);
    const owners = (i: number) => Array.from({ length: 300 }, (_, k) => views[i]!.owner(cacheKey(request(k)))?.name ?? ['b-1', 'b-2', 'b-3'][i]);
    expect(owners(1)).toEqual(owners(0));
    expect(owners(2)).toEqual(owners(0));
    expect(new Set(owners(0))).toEqual(new Set(['b-1', 'b-2', 'b-3']));
    // One of them ready again: it owns every key, in every view.
    pods[2] = brokerPod('b-3', { readiness: { ready: true, sinceMs: 0 } });
    const after = ['b-1', 'b-2', 'b-3'].map((n) => set(n, pods, () => t));
    expect(after[0]!.owner('k')?.name).toBe('b-3');
    expect(after[1]!.owner('k')?.name).toBe('b-3');
    expect(after[2]!.owner('k')).toBeUndefined();
  });

  it('a Ready condition without a transition time counts the replica (no time to judge by)', () => {
    const pods = [brokerPod('b-self'), brokerPod('b-2', notReady(0))];
    expect(set('b-self', pods, () => T0).others().map((m) => m.name)).toEqual(['b-2']);
  });

  it('the Ready condition is read from the pod with its transition time', () => {
    const pod = (conditions: unknown) => toPodInfo({ metadata: { name: 'p', namespace: 'n' }, status: { phase: 'Running', conditions } }, []);
    expect(pod([{ type: 'PodScheduled', status: 'True' }, { type: 'Ready', status: 'False', lastTransitionTime: '2026-12-05T10:00:00Z' }]).readiness).toEqual({ ready: false, sinceMs: Date.parse('2026-12-05T10:00:00Z') });
    expect(pod([{ type: 'Ready', status: 'True', lastTransitionTime: '2026-12-05T10:00:00Z' }]).readiness?.ready).toBe(true);
    expect(pod([{ type: 'Ready', status: 'Unknown' }]).readiness).toEqual({ ready: false, sinceMs: 0 });
    expect(pod([{ type: 'ContainersReady', status: 'True' }]).readiness).toBeUndefined();
    expect(pod('not a list').readiness).toBeUndefined();
  });
});

class Sts implements RoleAssumer {
  calls = 0;
  assume(_r: RoleRequest, _u?: Urgency): Promise<AwsCredentials> {
    this.calls++;
    return Promise.resolve({ accessKeyId: `STS${this.calls}`, secretAccessKey: 's', sessionToken: 't', expiration: new Date(Date.now() + 3600_000) });
  }
}

describe('PeerForwarding', () => {
  const other: PeerMember = { name: 'b-2', ip: '10.0.0.2' };
  function forwarding(owner: PeerMember | undefined, answer: () => Promise<AwsCredentials>) {
    const sts = new Sts();
    const asked: Array<{ urgent: boolean }> = [];
    const outcomes: string[] = [];
    const f = new PeerForwarding({
      peers: { owner: () => owner },
      client: { credentials: (_o, _r, opts) => (asked.push({ urgent: opts.urgent }), answer()) },
      minValidMs: 21 * 60_000,
      log,
      onForward: (o) => outcomes.push(o),
    });
    return { sts, asked, outcomes, assumer: f.wrap(sts), f };
  }
  const lasting = (): Promise<AwsCredentials> => Promise.resolve({ accessKeyId: 'PEER', secretAccessKey: 's', sessionToken: 't', expiration: new Date(Date.now() + 3600_000) });

  it('this replica owns the key: STS', async () => {
    const { sts, asked, assumer } = forwarding(undefined, lasting);
    expect((await assumer.assume(request(1))).accessKeyId).toBe('STS1');
    expect([sts.calls, asked.length]).toEqual([1, 0]);
  });

  it('another replica owns it: its answer, no STS call', async () => {
    const { sts, asked, outcomes, assumer } = forwarding(other, lasting);
    expect((await assumer.assume(request(1))).accessKeyId).toBe('PEER');
    expect([sts.calls, asked, outcomes]).toEqual([0, [{ urgent: true }], ['ok']]);
  });

  it('a pod waiting, the owner failing or answering credentials that would not outlive the refresh lead: STS here, once', async () => {
    const down = forwarding(other, () => Promise.reject(new Error('500: StsUnavailable')));
    expect((await down.assumer.assume(request(1))).accessKeyId).toBe('STS1');
    expect([down.sts.calls, down.outcomes]).toEqual([1, ['error']]);
    const short = forwarding(other, () => Promise.resolve({ accessKeyId: 'OLD', secretAccessKey: 's', sessionToken: 't', expiration: new Date(Date.now() + 10 * 60_000) }));
    expect((await short.assumer.assume(request(1))).accessKeyId).toBe('STS1');
    expect(short.outcomes).toEqual(['error']);
  });

  it('in the background, only an owner that cannot be reached is replaced by STS here; a late or failed answer is retried later', async () => {
    const background = new Urgency(false);
    const slow = forwarding(other, () => Promise.reject(new Error('no answer within 15000 ms')));
    await expect(slow.assumer.assume(request(1), background)).rejects.toThrow('no answer');
    expect(slow.sts.calls).toBe(0);
    const gone = forwarding(other, () => Promise.reject(new Unreachable('connect ECONNREFUSED 10.0.0.2:8443')));
    expect((await gone.assumer.assume(request(1), background)).accessKeyId).toBe('STS1');
  });

  it('STS refused the role to the owner: the same refusal here, no STS call', async () => {
    const refused = forwarding(other, () => Promise.reject(new StsUnavailable('arn:aws:iam::1:role/r', 'not trusted', { refusal: 'RoleNotTrusted' })));
    await expect(refused.assumer.assume(request(1))).rejects.toMatchObject({ code: 'RoleNotTrusted', status: 403 });
    expect(refused.sts.calls).toBe(0);
  });

  it('an unreachable owner is not asked again for a while: STS here at once', async () => {
    let t = 1_000_000;
    const sts = new Sts();
    let asked = 0;
    const f = new PeerForwarding({ peers: { owner: () => other }, client: { credentials: () => (asked++, Promise.reject(new Unreachable('ECONNREFUSED'))) }, minValidMs: 60_000, log, now: () => t });
    const assumer = f.wrap(sts);
    await assumer.assume(request(1));
    await assumer.assume(request(2));
    expect([asked, sts.calls]).toEqual([1, 2]);
    t += PEER_DOWN_MS;
    await assumer.assume(request(3));
    expect([asked, sts.calls]).toEqual([2, 3]);
  });

  it('a chained role\'s second hop, and a key being fetched for a peer, are never forwarded', async () => {
    const { sts, asked, assumer, f } = forwarding(other, lasting);
    await assumer.assume(request(1), undefined, { accessKeyId: 'A', secretAccessKey: 's', sessionToken: 't', expiration: new Date() });
    await f.serving(request(2), () => assumer.assume(request(2)));
    expect([sts.calls, asked.length]).toEqual([2, 0]);
    // Once served, the key is forwarded again.
    await assumer.assume(request(2));
    expect(asked.length).toBe(1);
  });
});

describe('parsePeerRequest', () => {
  it('reads a request with tags and a source role; refuses what is malformed with a 400', () => {
    const r = request(1, { externalId: 'ext', tags: [['k', 'v']], sourceRole: request(2) });
    const parsed = parsePeerRequest(JSON.stringify({ request: r, urgent: true, minValidMs: 60_000 }));
    expect(parsed).toEqual({ request: r, urgent: true, minValidMs: 60_000 });
    expect(cacheKey(parsed.request)).toBe(cacheKey(r));
    for (const bad of ['nope', '[]', JSON.stringify({ request: { roleArn: 1 } }), JSON.stringify({ request: { ...r, tags: [['k']] } }), JSON.stringify({ request: { ...r, sourceRole: { ...request(2), sourceRole: request(3) } } })]) {
      expect(() => parsePeerRequest(bad)).toThrow(BadRequest);
    }
  });
});

describe('CredentialCache.lasting (the owner answering a peer)', () => {
  function cache() {
    const clock = new FakeClock();
    const calls: Urgency[] = [];
    let n = 0;
    const c = new CredentialCache({
      clock,
      render: () => Buffer.from('{}'),
      assumer: { assume: (_r, u) => (calls.push(u!), Promise.resolve({ accessKeyId: `K${++n}`, secretAccessKey: 's', sessionToken: 't', expiration: new Date(clock.now() + 3600_000) })) },
    });
    return { c, clock, calls };
  }

  it('from memory while the credentials outlive minValidMs, else fetched now (paced unless urgent)', async () => {
    const { c, clock, calls } = cache();
    const first = await c.lasting(request(1), 21 * 60_000, false);
    expect([first.accessKeyId, calls.map((u) => u.urgent)]).toEqual(['K1', [false]]);
    await clock.advance(30 * 60_000);
    expect((await c.lasting(request(1), 21 * 60_000, true)).accessKeyId).toBe('K1');
    await clock.advance(10 * 60_000);
    // 20 minutes left: under the 21 asked for.
    expect((await c.lasting(request(1), 21 * 60_000, true)).accessKeyId).toBe('K2');
    expect(calls.map((u) => u.urgent)).toEqual([false, true]);
    c.stop();
  });

  it('credentials another replica held count their lifetime from its issue: the refresh lead is the full one', async () => {
    const clock = new FakeClock();
    const c = new CredentialCache({
      clock,
      render: () => Buffer.from('{}'),
      // Issued 39 minutes ago by the owner, 21 minutes left.
      assumer: { assume: () => Promise.resolve({ accessKeyId: 'K', secretAccessKey: 's', sessionToken: 't', expiration: new Date(clock.now() + 21 * 60_000), issuedMs: clock.now() - 39 * 60_000 }) },
    });
    const got = await c.get(request(1));
    expect(got.issuedMs).toBe(clock.now() - 39 * 60_000);
    // Refreshed 20 minutes before expiry (one minute from now), not at half of the 21 minutes left.
    expect(c.refreshAtMs(got)).toBe(clock.now() + 60_000);
    c.stop();
  });

  it('a refresh is background work until the credentials held would be served under 15 minutes, then urgent', async () => {
    const clock = new FakeClock();
    const calls: Array<{ atMs: number; urgent: boolean }> = [];
    let failing = false;
    let expiresMs = 0;
    const c = new CredentialCache({
      clock,
      render: () => Buffer.from('{}'),
      random: () => 0.5,
      assumer: {
        assume: (_r, u) => {
          calls.push({ atMs: clock.now(), urgent: u!.urgent });
          if (failing) return Promise.reject(new Error('slow'));
          expiresMs = clock.now() + 3600_000;
          return Promise.resolve({ accessKeyId: 'K', secretAccessKey: 's', sessionToken: 't', expiration: new Date(expiresMs) });
        },
      },
    });
    await c.get(request(1));
    // The refresh is due at 40 minutes (20 left) and keeps failing: retried with backoff until 50 minutes.
    failing = true;
    for (let m = 0; m < 50; m++) {
      await clock.advance(60_000);
      await flushPromises();
    }
    const refreshes = calls.slice(1);
    expect(refreshes.length).toBeGreaterThan(3);
    // Each one urgent exactly when the credentials held had under 15 minutes left.
    expect(refreshes.map((r) => r.urgent)).toEqual(refreshes.map((r) => expiresMs - r.atMs < 15 * 60_000));
    expect(refreshes.some((r) => r.urgent) && refreshes.some((r) => !r.urgent)).toBe(true);
    c.stop();
  });

  it('shares a fetch already in flight', async () => {
    const { c, calls } = cache();
    const [a, b] = await Promise.all([c.lasting(request(1), 60_000, false), c.lasting(request(1), 60_000, false), flushPromises()]);
    expect([a.accessKeyId, b.accessKeyId, calls.length]).toEqual(['K1', 'K1', 1]);
    c.stop();
  });
});
