/**
 * The broker's --sts-qps pacing (src/broker/token-bucket.ts): background AssumeRole calls go out
 * at the rate, at most a burst saved up; a call a pod waits on never waits, and a queued
 * background call that a pod comes to wait on leaves the queue at once. Fake clock: no sleeping.
 */
import type { RoleAssumer } from '../../src/aws/sts.js';
import { Urgency } from '../../src/aws/sts.js';
import { TokenBucket, paced } from '../../src/broker/token-bucket.js';
import type { RoleRequest } from '../../src/roles.js';
import { FakeClock, flushPromises } from '../support/fake-clock.js';

function recorder(bucket: TokenBucket) {
  const done: string[] = [];
  const take = (name: string, urgency?: Urgency) => bucket.take(urgency).then(() => done.push(name));
  return { done, take };
}

describe('TokenBucket', () => {
  it('lets a burst through at once, then exactly the rate, first come first served', async () => {
    const clock = new FakeClock();
    const bucket = new TokenBucket({ ratePerSecond: 10, clock });
    const { done, take } = recorder(bucket);
    for (let i = 0; i < 25; i++) void take(`c${i}`, new Urgency(false));
    await flushPromises();
    expect(done).toHaveLength(10);
    expect(bucket.queued()).toBe(15);
    await clock.advance(99);
    await flushPromises();
    expect(done).toHaveLength(10);
    await clock.advance(1);
    await flushPromises();
    expect(done).toHaveLength(11);
    await clock.advance(900);
    await flushPromises();
    expect(done).toHaveLength(20);
    await clock.advance(1000);
    await flushPromises();
    expect(done).toEqual(Array.from({ length: 25 }, (_, i) => `c${i}`));
    expect(bucket.queued()).toBe(0);
    expect(clock.pending()).toBe(0);
  });

  it('over a long cold start, never more than the rate per second after the burst', async () => {
    const clock = new FakeClock();
    const bucket = new TokenBucket({ ratePerSecond: 5, clock });
    const { done, take } = recorder(bucket);
    for (let i = 0; i < 1000; i++) void take(`c${i}`, new Urgency(false));
    await flushPromises();
    const perSecond: number[] = [];
    let last = done.length;
    for (let s = 0; s < 20; s++) {
      for (let t = 0; t < 10; t++) await clock.advance(100);
      await flushPromises();
      perSecond.push(done.length - last);
      last = done.length;
    }
    expect(Math.max(...perSecond)).toBeLessThanOrEqual(5);
    expect(done.length).toBe(5 + 5 * 20);
  });

  it('a pod waiting never waits for a token, and takes one if there is one', async () => {
    const clock = new FakeClock();
    const bucket = new TokenBucket({ ratePerSecond: 1, burst: 1, clock });
    const { done, take } = recorder(bucket);
    void take('bg1', new Urgency(false));
    void take('bg2', new Urgency(false));
    void take('pod', new Urgency(true));
    await flushPromises();
    expect(done).toEqual(['bg1', 'pod']);
    await clock.advance(1000);
    await flushPromises();
    expect(done).toEqual(['bg1', 'pod', 'bg2']);
  });

  it('a queued background call that a pod comes to wait on leaves the queue at once', async () => {
    const clock = new FakeClock();
    const bucket = new TokenBucket({ ratePerSecond: 1, burst: 1, clock });
    const { done, take } = recorder(bucket);
    void take('first', new Urgency(false));
    const urgencies = [new Urgency(false), new Urgency(false), new Urgency(false)];
    urgencies.forEach((u, i) => void take(`bg${i}`, u));
    await flushPromises();
    expect(done).toEqual(['first']);
    urgencies[2]!.promote();
    await flushPromises();
    expect(done).toEqual(['first', 'bg2']);
    expect(bucket.queued()).toBe(2);
    await clock.advance(1000);
    await flushPromises();
    expect(done).toEqual(['first', 'bg2', 'bg0']);
  });

  it('paced(): background AssumeRole calls wait for the bucket, a pod request goes straight to STS', async () => {
    const clock = new FakeClock();
    const bucket = new TokenBucket({ ratePerSecond: 1, burst: 1, clock });
    const calls: string[] = [];
    const sts: RoleAssumer = {
      assume: async (request) => {
        calls.push(request.roleName);
        return { accessKeyId: 'ASIA', secretAccessKey: 's', sessionToken: 't', expiration: new Date(clock.now() + 3_600_000) };
      },
    };
    const assumer = paced(sts, bucket);
    const role = (name: string): RoleRequest => ({ roleArn: `arn:aws:iam::123456789012:role/${name}`, roleName: name, externalId: undefined, sessionName: name, pod: `default/${name}` });
    void assumer.assume(role('a'), new Urgency(false));
    void assumer.assume(role('b'), new Urgency(false));
    void assumer.assume(role('c'), new Urgency(false));
    await assumer.assume(role('pod'), new Urgency(true));
    await flushPromises();
    expect(calls).toEqual(['a', 'pod']);
    await clock.advance(1000);
    await flushPromises();
    expect(calls).toEqual(['a', 'pod', 'b']);
  });
});

test('paced() hands a chained role\'s first-hop credentials on to STS', async () => {
  const bucket = new TokenBucket({ ratePerSecond: 1000 });
  const seen: Array<string | undefined> = [];
  const assumer = paced({ assume: (_r, _u, using) => (seen.push(using?.accessKeyId), Promise.resolve({ accessKeyId: 'X', secretAccessKey: 's', sessionToken: 't', expiration: new Date() })) }, bucket);
  const role = (name: string): RoleRequest => ({ roleArn: `arn:aws:iam::123456789012:role/${name}`, roleName: name, externalId: undefined, sessionName: name, pod: `default/${name}` });
  await assumer.assume(role('a'), new Urgency(true), { accessKeyId: 'FIRST-HOP', secretAccessKey: 's', sessionToken: 't', expiration: new Date() });
  expect(seen).toEqual(['FIRST-HOP']);
  bucket.stop();
});
