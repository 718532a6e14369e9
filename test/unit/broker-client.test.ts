/**
 * The agent's broker client (src/credentials/broker-client.ts) over a fake broker and a fake
 * clock: answers kept in memory (the hot path never leaves the process), asked again ahead of
 * expiry, still-valid credentials served while the broker is down, denials remembered briefly,
 * an answer dropped when the pod's annotations change or the pod goes.
 */
import { BrokerCredentials } from '../../src/credentials/broker-client.js';
import type { BrokerLink } from '../../src/credentials/broker-client.js';
import { BrokerUnavailable, PodiamError } from '../../src/errors.js';
import type { PodInfo } from '../../src/roles.js';
import { FakeClock, flushPromises } from '../support/fake-clock.js';

const MINUTE = 60_000;

function podInfo(name: string, annotations: Record<string, string> = { 'iam.amazonaws.com/role': name }): PodInfo {
  return { namespace: 'default', name, uid: `${name}-uid`, ips: ['10.0.0.1'], phase: 'Running', hostNetwork: false, createdMs: 0, deleting: false, annotations, serviceAccount: 'default', nodeName: 'node-a' };
}

class FakeBroker implements BrokerLink {
  readonly calls: Array<{ path: string; body: Record<string, unknown> }> = [];
  down = false;
  deny: PodiamError | undefined;
  /** pod name -> the role the broker decides now (default: the pod's name). */
  readonly roles = new Map<string, string>();
  private keys = 0;
  constructor(private readonly clock: FakeClock, private readonly lifetimeMs = 60 * MINUTE) {}
  async post(path: string, body: object): Promise<unknown> {
    this.calls.push({ path, body: body as Record<string, unknown> });
    if (this.down) throw new BrokerUnavailable('connection refused');
    if (this.deny !== undefined) throw this.deny;
    const name = this.roles.get((body as { name: string }).name) ?? (body as { name: string }).name;
    const role = { roleArn: `arn:aws:iam::123456789012:role/${name}`, roleName: name, sessionName: `default.${name}` };
    if (path === '/v1/role') return role;
    const now = this.clock.now();
    return { ...role, credentials: { AccessKeyId: `ASIA${++this.keys}`, SecretAccessKey: 's', Token: 't', Expiration: new Date(now + this.lifetimeMs).toISOString().replace(/\.\d{3}Z$/, 'Z') }, issuedMs: now };
  }
}

function setup() {
  const clock = new FakeClock();
  const broker = new FakeBroker(clock);
  const client = new BrokerCredentials({ broker, clock });
  return { clock, broker, client };
}

test('a miss asks the broker once (concurrent askers share it); then the answer comes from memory', async () => {
  const { broker, client } = setup();
  const pod = podInfo('app');
  expect(client.peek(pod)).toBeUndefined();
  const [a, b] = await Promise.all([client.credentials(pod, { kind: 'ip' }), client.credentials(pod, { kind: 'ip' })]);
  expect(a).toBe(b);
  expect(broker.calls.map((c) => c.path)).toEqual(['/v1/credentials']);
  // Only the pod's coordinates and the proof are sent: the broker decides the rest.
  expect(broker.calls[0]!.body).toEqual({ namespace: 'default', name: 'app', uid: 'app-uid', proof: { kind: 'ip' } });
  expect(client.peek(pod)).toBe(a);
  expect(await client.credentials(pod, { kind: 'ip' })).toBe(a);
  expect((await client.role(pod)).roleName).toBe('app');
  expect(broker.calls).toHaveLength(1);
  // The EC2 body, rendered as a standalone agent renders it.
  expect(Object.keys(JSON.parse(a.creds.body.toString()) as object)).toEqual(['Code', 'LastUpdated', 'Type', 'AccessKeyId', 'SecretAccessKey', 'Token', 'Expiration']);
});

test('asked again ahead of expiry, so served credentials always keep 15 minutes', async () => {
  const { clock, broker, client } = setup();
  const pod = podInfo('app');
  const first = await client.credentials(pod, { kind: 'ip' });
  await clock.advance(42 * MINUTE);
  expect(broker.calls).toHaveLength(1);
  await clock.advance(1 * MINUTE);
  await flushPromises();
  expect(broker.calls).toHaveLength(2);
  const second = client.peek(pod)!;
  expect(second.creds.accessKeyId).not.toBe(first.creds.accessKeyId);
  expect(second.creds.expirationMs - clock.now()).toBeGreaterThan(15 * MINUTE);
});

test('broker down: still-valid credentials keep being served; none held: BrokerUnavailable', async () => {
  const { clock, broker, client } = setup();
  const pod = podInfo('app');
  const held = await client.credentials(pod, { kind: 'ip' });
  broker.down = true;
  await clock.advance(50 * MINUTE);
  // Stale (under 15 min left) but valid: served while the broker is away.
  expect(client.peek(pod)).toBeUndefined();
  expect(await client.credentials(pod, { kind: 'ip' })).toBe(held);
  await expect(client.credentials(podInfo('new'), { kind: 'ip' })).rejects.toMatchObject({ code: 'BrokerUnavailable', status: 503 });
  broker.down = false;
  await clock.advance(30_000);
  await flushPromises();
  expect(client.peek(pod)?.creds.accessKeyId).not.toBe(held.creds.accessKeyId);
});

test('a denial is answered from memory briefly, and drops what was held', async () => {
  const { clock, broker, client } = setup();
  const pod = podInfo('app');
  await client.credentials(pod, { kind: 'ip' });
  broker.deny = new PodiamError('RoleNotAllowed', 403, 'not allowed');
  // The refresh (at 42.5 minutes) is denied: the namespace no longer allows the role.
  await clock.advance(42.5 * MINUTE + 1000);
  await flushPromises();
  expect(client.peek(pod)).toBeUndefined();
  const calls = broker.calls.length;
  await expect(client.role(pod)).rejects.toMatchObject({ code: 'RoleNotAllowed' });
  await expect(client.credentials(pod, { kind: 'ip' })).rejects.toMatchObject({ code: 'RoleNotAllowed' });
  expect(broker.calls.length).toBe(calls);
  broker.deny = undefined;
  await clock.advance(5000);
  expect((await client.credentials(pod, { kind: 'ip' })).role.roleName).toBe('app');
});

test("the pod's annotations change: the answer is dropped and the broker asked again; a gone pod is forgotten", async () => {
  const { broker, client } = setup();
  const pod = podInfo('app');
  await client.credentials(pod, { kind: 'ip' });
  // The informer replaces the object on every change: a status-only change keeps the answer.
  const sameAgain = { ...pod, phase: 'Running' };
  expect(client.peek(sameAgain)).toBeDefined();
  const changed = podInfo('app', { 'iam.amazonaws.com/role': 'other' });
  expect(client.peek(changed)).toBeUndefined();
  await client.credentials(changed, { kind: 'ip' });
  expect(broker.calls).toHaveLength(2);
  client.forget(pod.uid);
  expect(client.size()).toBe(0);
  expect(client.peek(changed)).toBeUndefined();
});

test("the broker refusing the agent itself (its token) keeps the pods' held credentials, unlike a pod's denial", async () => {
  const { clock, broker, client } = setup();
  const pod = podInfo('app');
  const held = await client.credentials(pod, { kind: 'ip' });
  broker.deny = new PodiamError('AgentTokenInvalid', 403, 'the token has expired');
  await clock.advance(42.5 * MINUTE + 1000);
  expect(await client.credentials(pod, { kind: 'ip' })).toBe(held);
  await expect(client.credentials(podInfo('new'), { kind: 'ip' })).rejects.toMatchObject({ code: 'AgentTokenInvalid', status: 403 });
  broker.deny = undefined;
  await clock.advance(30_000);
  await flushPromises();
  expect(client.peek(pod)?.creds.accessKeyId).not.toBe(held.creds.accessKeyId);
});

describe('policy changes from the broker (namespaces, ServiceAccounts, associations the agent cannot see)', () => {
  const paths = (broker: FakeBroker, from = 0): string[] => broker.calls.slice(from).map((c) => c.path);

  test("a change of the pod's namespace or ServiceAccount holds it until the broker has said its role again: the same role keeps its credentials, another gets new ones", async () => {
    const { broker, client } = setup();
    const pod = podInfo('app');
    const first = await client.credentials(pod, { kind: 'ip' });
    // Other namespaces, other ServiceAccounts: nothing to do.
    expect(client.policyChanged([{ namespace: 'other' }, { namespace: 'default', serviceAccount: 'other-sa' }], false)).toBe(0);
    expect(client.peek(pod)).toBe(first);

    const from = broker.calls.length;
    expect(client.policyChanged([{ namespace: 'default' }], false)).toBe(1);
    // Held: the hot path has nothing to serve until the broker answers.
    expect(client.peek(pod)).toBeUndefined();
    expect(await client.credentials(pod, { kind: 'ip' })).toBe(first);
    expect(paths(broker, from)).toEqual(['/v1/role']);
    expect(client.peek(pod)).toBe(first);

    broker.roles.set('app', 'app-two');
    expect(client.policyChanged([{ namespace: 'default', serviceAccount: 'default' }], false)).toBe(1);
    expect(client.peek(pod)).toBeUndefined();
    const second = await client.credentials(pod, { kind: 'ip' });
    expect(second.role.roleName).toBe('app-two');
    expect(second.creds.accessKeyId).not.toBe(first.creds.accessKeyId);
    expect((await client.role(pod)).roleName).toBe('app-two');
    expect(paths(broker, from + 1)).toEqual(['/v1/role', '/v1/credentials']);
  });

  test('a change the broker now denies: nothing is served, the denial is what the pod gets', async () => {
    const { broker, client } = setup();
    const pod = podInfo('app');
    await client.credentials(pod, { kind: 'ip' });
    broker.deny = new PodiamError('RoleNotAllowed', 403, 'namespace default may not assume app');
    client.policyChanged([{ namespace: 'default' }], false);
    expect(client.peek(pod)).toBeUndefined();
    await expect(client.credentials(pod, { kind: 'ip' })).rejects.toMatchObject({ code: 'RoleNotAllowed' });
    await expect(client.role(pod)).rejects.toMatchObject({ code: 'RoleNotAllowed' });
    expect(client.peek(pod)).toBeUndefined();
    // Allowed again: the held denial is dropped by the next change, and the pod served again.
    broker.deny = undefined;
    client.policyChanged([{ namespace: 'default' }], false);
    expect((await client.credentials(pod, { kind: 'ip' })).role.roleName).toBe('app');
  });

  test('a change while the broker cannot be reached: the held pod is not served from memory (fail closed)', async () => {
    const { broker, client } = setup();
    const pod = podInfo('app');
    await client.credentials(pod, { kind: 'ip' });
    broker.down = true;
    client.policyChanged([{ namespace: 'default' }], false);
    await expect(client.credentials(pod, { kind: 'ip' })).rejects.toBeInstanceOf(BrokerUnavailable);
    expect(client.peek(pod)).toBeUndefined();
  });

  test('reset (a replica that cannot say what changed): every pod asked again, spread over 30 s, and served meanwhile', async () => {
    const { clock, broker, client } = setup();
    const pods = [podInfo('a'), podInfo('b'), podInfo('c')];
    const held = await Promise.all(pods.map((p) => client.credentials(p, { kind: 'ip' })));
    const from = broker.calls.length;
    expect(client.policyChanged([], true)).toBe(3);
    pods.forEach((p, i) => expect(client.peek(p)).toBe(held[i]));
    expect(paths(broker, from)).toEqual([]);
    broker.roles.set('b', 'b-two');
    await clock.advance(30_000);
    await flushPromises();
    expect(paths(broker, from).sort()).toEqual(['/v1/credentials', '/v1/role', '/v1/role', '/v1/role']);
    expect(client.peek(pods[0]!)).toBe(held[0]);
    expect(client.peek(pods[1]!)?.role.roleName).toBe('b-two');
  });

  test('a pod whose first ask is in flight when its policy changes: what that ask brings is not kept', async () => {
    const { broker, client } = setup();
    const pod = podInfo('app');
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const post = broker.post.bind(broker);
    broker.post = async (path, body) => {
      await gate;
      return post(path, body);
    };
    const first = client.credentials(pod, { kind: 'ip' });
    broker.roles.set('app', 'app-two');
    client.policyChanged([{ namespace: 'default' }], false);
    release();
    // The ask made before the change answers its own caller...
    expect((await first).role.roleName).toBe('app-two');
    // ...but the next request is not served from it: it asks afresh.
    broker.post = post;
    const from = broker.calls.length;
    expect((await client.credentials(pod, { kind: 'ip' })).role.roleName).toBe('app-two');
    expect(broker.calls.length - from).toBe(1);
  });

  test('two changes in a row: a request waits for the last check, never the credentials of the role before', async () => {
    const { broker, client } = setup();
    const pod = podInfo('app');
    await client.credentials(pod, { kind: 'ip' });
    client.policyChanged([{ namespace: 'default' }], false);
    broker.roles.set('app', 'app-two');
    const asked = client.credentials(pod, { kind: 'ip' });
    client.policyChanged([{ namespace: 'default' }], false);
    expect((await asked).role.roleName).toBe('app-two');
  });

  test('a role answer that is not one: the held pod is not served its old credentials, and nothing is left unhandled', async () => {
    const { broker, client } = setup();
    const pod = podInfo('app');
    const held = await client.credentials(pod, { kind: 'ip' });
    const post = broker.post.bind(broker);
    broker.post = async (path, body) => (path === '/v1/role' ? { nonsense: true } : post(path, body));
    const unhandled: unknown[] = [];
    const onUnhandled = (err: unknown): void => {
      unhandled.push(err);
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      client.policyChanged([{ namespace: 'default' }], false);
      await new Promise((r) => setTimeout(r, 20));
      expect(client.peek(pod)).toBeUndefined();
      broker.post = post;
      const again = await client.credentials(pod, { kind: 'ip' });
      expect(again.creds.accessKeyId).not.toBe(held.creds.accessKeyId);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  test('a change while a refresh is in flight: the same role keeps its credentials, and they are still refreshed ahead', async () => {
    const { clock, broker, client } = setup();
    const pod = podInfo('app');
    const first = await client.credentials(pod, { kind: 'ip' });
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const post = broker.post.bind(broker);
    broker.post = async (path, body) => {
      if (path === '/v1/credentials') await gate;
      return post(path, body);
    };
    // The refresh ahead of expiry starts, and waits on the broker.
    await clock.advance(43 * MINUTE);
    await flushPromises();
    expect(broker.calls.filter((c) => c.path === '/v1/credentials')).toHaveLength(1);
    client.policyChanged([{ namespace: 'default' }], false);
    await flushPromises();
    expect(client.peek(pod)).toBe(first);
    release();
    await flushPromises();
    // The refresh asked before the change is not kept; another is asked for, and kept.
    await clock.advance(2_000);
    await flushPromises();
    const now = client.peek(pod)!;
    expect(now.creds.accessKeyId).not.toBe(first.creds.accessKeyId);
    expect(now.creds.expirationMs - clock.now()).toBeGreaterThan(15 * MINUTE);
  });
});
