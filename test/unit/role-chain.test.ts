/**
 * Role chaining over the real CredentialCache with a fake clock and a counting assumer: the
 * first hop and the target are cached on their own, the target is assumed with the first hop's
 * credentials, and the served (target) credentials keep at least 15 minutes while STS is healthy
 * (chained sessions last at most one hour).
 */
import { CredentialCache } from '../../src/aws/credential-cache.js';
import { chainRoles } from '../../src/aws/role-chain.js';
import type { AwsCredentials, RoleAssumer, Urgency } from '../../src/aws/sts.js';
import type { RoleRequest } from '../../src/roles.js';
import { FakeClock, flushPromises } from '../support/fake-clock.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

const first: RoleRequest = { roleArn: 'arn:aws:iam::111111111111:role/hop', roleName: 'hop', externalId: undefined, sessionName: 'ns.pod', pod: 'ns/pod' };
const target: RoleRequest = { roleArn: 'arn:aws:iam::222222222222:role/target', roleName: 'target', externalId: 'ext', sessionName: 'ns.pod', pod: 'ns/pod', sourceRole: first };

/** STS as it behaves for chaining: 12 h for the node's own call, at most 1 h for a chained one. */
class CountingSts implements RoleAssumer {
  readonly calls: Array<{ roleArn: string; using: string | undefined; atMs: number }> = [];
  private n = 0;
  constructor(private readonly clock: FakeClock) {}
  assume(request: RoleRequest, _urgency?: Urgency, using?: AwsCredentials): Promise<AwsCredentials> {
    this.calls.push({ roleArn: request.roleArn, using: using?.accessKeyId, atMs: this.clock.now() });
    this.n += 1;
    const ttl = using === undefined ? 12 * HOUR : HOUR;
    return Promise.resolve({ accessKeyId: `ASIA${this.n}`, secretAccessKey: 's', sessionToken: 't', expiration: new Date(this.clock.now() + ttl) });
  }
}

function setup() {
  const clock = new FakeClock();
  const sts = new CountingSts(clock);
  const cache: CredentialCache = new CredentialCache({
    clock,
    assumer: chainRoles(sts, async (source) => (await cache.get(source)).credentials),
    render: (c) => Buffer.from(c.accessKeyId),
    // The pod asks for the target only; the first hop is wanted through it.
    isWanted: (r) => r === target,
    random: () => 0.5,
  });
  return { clock, sts, cache };
}

test('two AssumeRole calls the first time: the first hop with the node’s credentials, the target with the first hop’s', async () => {
  const { sts, cache } = setup();
  const served = await cache.get(target);
  expect(sts.calls.map((c) => [c.roleArn, c.using])).toEqual([
    [first.roleArn, undefined],
    [target.roleArn, 'ASIA1'],
  ]);
  expect(served.accessKeyId).toBe('ASIA2');
  // Both cached: asking again costs nothing.
  await cache.get(target);
  expect(sts.calls).toHaveLength(2);
  cache.stop();
});

test('a refresh of the target is one call while the first hop is fresh, and served credentials keep at least 15 minutes', async () => {
  const { clock, sts, cache } = setup();
  await cache.get(target);
  let minRemaining = Infinity;
  for (let t = 0; t < 6 * HOUR; t += MINUTE) {
    await clock.advance(MINUTE);
    await flushPromises();
    const served = cache.peek(target) ?? (await cache.get(target));
    minRemaining = Math.min(minRemaining, served.expirationMs - clock.now());
  }
  // 1 h chained sessions refreshed 20 min ahead: one call every 40 min, each signed with the
  // (12 h) first hop's same credentials: no call for the first hop in 6 hours.
  const targetCalls = sts.calls.filter((c) => c.roleArn === target.roleArn);
  const firstCalls = sts.calls.filter((c) => c.roleArn === first.roleArn);
  expect(firstCalls).toHaveLength(1);
  expect(targetCalls.length).toBe(1 + Math.floor((6 * HOUR) / (40 * MINUTE)));
  expect(new Set(targetCalls.map((c) => c.using))).toEqual(new Set(['ASIA1']));
  expect(minRemaining).toBeGreaterThanOrEqual(15 * MINUTE);
  cache.stop();
});

test('the first hop is refreshed ahead too, and the target then signs with its new credentials', async () => {
  const { clock, sts, cache } = setup();
  await cache.get(target);
  for (let t = 0; t < 13 * HOUR; t += MINUTE) {
    await clock.advance(MINUTE);
    await flushPromises();
    cache.peek(target) ?? (await cache.get(target));
  }
  const firstCalls = sts.calls.filter((c) => c.roleArn === first.roleArn);
  expect(firstCalls.length).toBe(2);
  const last = sts.calls.filter((c) => c.roleArn === target.roleArn).pop()!;
  expect(last.using).not.toBe('ASIA1');
  cache.stop();
});

test('a failing first hop fails the target with the first hop’s error, naming its role', async () => {
  const clock = new FakeClock();
  const failing: RoleAssumer = {
    assume: (_request, _u, using) => (using === undefined ? Promise.reject(Object.assign(new Error('AccessDenied'), { name: 'AccessDenied' })) : Promise.resolve({ accessKeyId: 'x', secretAccessKey: 's', sessionToken: 't', expiration: new Date(clock.now() + HOUR) })),
  };
  const cache: CredentialCache = new CredentialCache({ clock, assumer: chainRoles(failing, async (source) => (await cache.get(source)).credentials), render: (c) => Buffer.from(c.accessKeyId) });
  await expect(cache.get(target)).rejects.toThrow(/hop|AccessDenied/);
  cache.stop();
});
