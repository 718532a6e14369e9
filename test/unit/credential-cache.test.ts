import type { AwsCredentials, RoleAssumer, Urgency } from '../../src/aws/sts.js';
import type { CredentialCacheOptions, IssueCause, IssuedCredentials } from '../../src/aws/credential-cache.js';
import type { RoleRequest } from '../../src/roles.js';
import { CredentialCache, NEW_SESSION_BURST, NEW_SESSION_INTERVAL_MS, cacheKey } from '../../src/aws/credential-cache.js';
import { StsError } from '../../src/aws/sts.js';
import { StsUnavailable } from '../../src/errors.js';
import { FakeClock, flushPromises } from '../support/fake-clock.js';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

type Mode = 'ok' | 'fail' | 'deny' | 'hang';

interface Hung {
  readonly request: RoleRequest;
  resolve(): void;
  reject(err: unknown): void;
}

/** A RoleAssumer that counts calls and can succeed, fail, or hang until resolved by the test. */
class FakeAssumer implements RoleAssumer {
  mode: Mode = 'ok';
  ttlMs = HOUR;
  readonly calls: Array<{ request: RoleRequest; atMs: number; urgency: Urgency | undefined }> = [];
  readonly hung: Hung[] = [];
  private issued = 0;

  constructor(private readonly clock: FakeClock) {}

  get count(): number {
    return this.calls.length;
  }

  assume(request: RoleRequest, urgency?: Urgency): Promise<AwsCredentials> {
    this.calls.push({ request, atMs: this.clock.now(), urgency });
    switch (this.mode) {
      case 'ok':
        return Promise.resolve(this.credentials());
      case 'fail':
        return Promise.reject(new StsError(request.roleArn, 'ServiceUnavailable', true, 'ServiceUnavailable (STS answered 503)', undefined));
      case 'deny':
        return Promise.reject(new StsError(request.roleArn, 'AccessDenied', false, 'AccessDenied (STS answered 403)', undefined));
      case 'hang':
        return new Promise((resolve, reject) => {
          this.hung.push({ request, resolve: () => resolve(this.credentials()), reject });
        });
    }
  }

  /** Resolves every hung call with fresh credentials (valid from the clock's now). */
  resolveHung(): void {
    for (const h of this.hung.splice(0)) h.resolve();
  }

  private credentials(): AwsCredentials {
    this.issued += 1;
    return {
      accessKeyId: `ASIA${String(this.issued).padStart(16, '0')}`,
      secretAccessKey: `secret-${this.issued}`,
      sessionToken: `token-${this.issued}`,
      expiration: new Date(this.clock.now() + this.ttlMs),
    };
  }
}

function request(overrides: Partial<RoleRequest> = {}): RoleRequest {
  return {
    roleArn: 'arn:aws:iam::123456789012:role/app-a',
    roleName: 'app-a',
    externalId: undefined,
    sessionName: 'team-a.web-1',
    pod: 'team-a/web-1',
    ...overrides,
  };
}

function setup(options: Partial<CredentialCacheOptions> = {}) {
  const clock = new FakeClock();
  const assumer = new FakeAssumer(clock);
  const renders: AwsCredentials[] = [];
  const issued: Array<{ cause: IssueCause; at: number }> = [];
  const failed: Array<{ cause: IssueCause; retryInMs: number | undefined }> = [];
  const cache = new CredentialCache({
    assumer,
    clock,
    render: (creds, issuedMs) => {
      renders.push(creds);
      return Buffer.from(JSON.stringify({ AccessKeyId: creds.accessKeyId, issuedMs }));
    },
    // Jitter factor 1.0: backoff delays are exactly 1 s, 2 s, 4 s, ... capped at 60 s.
    random: () => 0.5,
    events: {
      issued: (_c, cause) => issued.push({ cause, at: clock.now() }),
      failed: (_r, cause, _e, retryInMs) => failed.push({ cause, retryInMs }),
    },
    ...options,
  });
  return { clock, assumer, cache, renders, issued, failed };
}

/** Settles a promise without letting it reject unhandled. */
async function settle<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  try {
    return { ok: true, value: await p };
  } catch (error) {
    return { ok: false, error };
  }
}

describe('CredentialCache: single flight and hits', () => {
  it('40 concurrent gets make one STS call and share its credentials', async () => {
    const { cache, assumer } = setup();
    assumer.mode = 'hang';
    const gets = Array.from({ length: 40 }, () => cache.get(request()));
    await flushPromises();
    expect(assumer.count).toBe(1);
    assumer.resolveHung();
    const results = await Promise.all(gets);
    expect(new Set(results.map((r) => r.accessKeyId)).size).toBe(1);
    expect(results.every((r) => r === results[0])).toBe(true);
    expect(assumer.count).toBe(1);
    cache.stop();
  });

  it('a get after issue is a hit: no new STS call, same credentials', async () => {
    const lookups: string[] = [];
    const { cache, assumer, clock } = setup({ events: { lookup: (r) => lookups.push(r) } });
    const first = await cache.get(request());
    await clock.advance(10 * MINUTE);
    const second = await cache.get(request());
    expect(second).toBe(first);
    expect(assumer.count).toBe(1);
    expect(lookups).toEqual(['miss', 'hit']);
    cache.stop();
  });

  it('issued credentials carry the request, the issue time and the expiry', async () => {
    const { cache, clock } = setup();
    const start = clock.now();
    const c = await cache.get(request());
    expect(c.issuedMs).toBe(start);
    expect(c.expirationMs).toBe(start + HOUR);
    expect(c.request.roleArn).toBe(request().roleArn);
    expect(c.accessKeyId).toMatch(/^ASIA/);
    cache.stop();
  });

  it('render runs once per credentials, not per get', async () => {
    const { cache, renders, clock } = setup();
    const results: IssuedCredentials[] = [];
    for (let i = 0; i < 100; i++) results.push(await cache.get(request()));
    expect(renders).toHaveLength(1);
    expect(results.every((r) => r.body === results[0]!.body)).toBe(true);
    expect(JSON.parse(results[0]!.body.toString()).AccessKeyId).toBe(results[0]!.accessKeyId);
    // A refresh renders the new credentials once.
    await clock.advance(41 * MINUTE);
    for (let i = 0; i < 100; i++) await cache.get(request());
    expect(renders).toHaveLength(2);
    cache.stop();
  });

  it('the cache key includes the external id (and the session name)', async () => {
    const { cache, assumer } = setup();
    const a = await cache.get(request({ externalId: 'ext-a' }));
    const b = await cache.get(request({ externalId: 'ext-b' }));
    const none = await cache.get(request());
    expect(assumer.count).toBe(3);
    expect(new Set([a.accessKeyId, b.accessKeyId, none.accessKeyId]).size).toBe(3);
    expect(assumer.calls.map((c) => c.request.externalId)).toEqual(['ext-a', 'ext-b', undefined]);
    await cache.get(request({ externalId: 'ext-a' }));
    expect(assumer.count).toBe(3);
    // (Another pod: a fourth new session within a second from one pod would be over its budget.)
    await cache.get(request({ sessionName: 'other.pod', pod: 'team-a/other' }));
    expect(assumer.count).toBe(4);
    // The pod is not part of the key: another pod with the same role, id and session name shares.
    await cache.get(request({ pod: 'team-a/web-2' }));
    expect(assumer.count).toBe(4);
    expect(cacheKey(request({ externalId: 'x' }))).not.toBe(cacheKey(request({ externalId: 'y' })));
    cache.stop();
  });
});

describe('CredentialCache: refresh timing', () => {
  it('refreshAtMs: 1 h credentials refresh 20 min before expiry', () => {
    const { cache } = setup();
    const issuedMs = Date.UTC(2024, 0, 1);
    expect(cache.refreshAtMs({ issuedMs, expirationMs: issuedMs + HOUR })).toBe(issuedMs + HOUR - 20 * MINUTE);
    expect(cache.refreshAtMs({ issuedMs, expirationMs: issuedMs + 12 * HOUR })).toBe(issuedMs + 12 * HOUR - 20 * MINUTE);
  });

  it('refreshAtMs: 30 min credentials refresh at half-life', () => {
    const { cache } = setup();
    const issuedMs = Date.UTC(2024, 0, 1);
    expect(cache.refreshAtMs({ issuedMs, expirationMs: issuedMs + 30 * MINUTE })).toBe(issuedMs + 15 * MINUTE);
    expect(cache.refreshAtMs({ issuedMs, expirationMs: issuedMs + 15 * MINUTE })).toBe(issuedMs + 7.5 * MINUTE);
  });

  it('refreshes in the background at refreshAtMs (no request needed)', async () => {
    const { cache, assumer, clock, issued } = setup();
    const start = clock.now();
    const first = await cache.get(request());
    await clock.advance(40 * MINUTE - 1);
    expect(assumer.count).toBe(1);
    await clock.advance(1);
    expect(assumer.count).toBe(2);
    expect(assumer.calls[1]!.atMs).toBe(start + 40 * MINUTE);
    expect(issued.map((i) => i.cause)).toEqual(['request', 'refresh']);
    const second = await cache.get(request());
    expect(second.accessKeyId).not.toBe(first.accessKeyId);
    expect(second.expirationMs).toBe(start + 40 * MINUTE + HOUR);
    expect(assumer.count).toBe(2);
    cache.stop();
  });

  it('served credentials keep >= 15 min to live at every minute of 6 h while STS is healthy', async () => {
    const { cache, assumer, clock } = setup();
    const start = clock.now();
    let minRemaining = Infinity;
    for (let t = 0; t <= 6 * 60; t++) {
      const c = await cache.get(request());
      const remaining = c.expirationMs - clock.now();
      minRemaining = Math.min(minRemaining, remaining);
      expect(remaining).toBeGreaterThanOrEqual(15 * MINUTE);
      await clock.advance(MINUTE);
    }
    expect(clock.now()).toBe(start + 361 * MINUTE);
    expect(minRemaining).toBeGreaterThanOrEqual(20 * MINUTE - MINUTE);
    // One call at the start, then one every 40 minutes: no extra calls.
    expect(assumer.count).toBeLessThanOrEqual(1 + Math.ceil((6 * HOUR + MINUTE) / (40 * MINUTE)));
    expect(assumer.count).toBeGreaterThanOrEqual(9);
    cache.stop();
  });

  it('30 min sessions: served credentials keep >= 15 min to live over 3 h', async () => {
    const { cache, assumer, clock } = setup();
    assumer.ttlMs = 30 * MINUTE;
    for (let t = 0; t <= 180; t++) {
      const c = await cache.get(request());
      expect(c.expirationMs - clock.now()).toBeGreaterThanOrEqual(15 * MINUTE);
      await clock.advance(MINUTE);
    }
    cache.stop();
  });

  it('a slow (hanging) refresh does not block requests while credentials have >= 15 min left', async () => {
    const { cache, assumer, clock } = setup();
    const first = await cache.get(request());
    assumer.mode = 'hang';
    await clock.advance(40 * MINUTE);
    expect(assumer.count).toBe(2);
    expect(assumer.hung).toHaveLength(1);
    // Within the 5 min margin the old credentials are answered from memory.
    for (let i = 0; i < 5; i++) {
      const r = await settle(Promise.race([cache.get(request()), flushPromises().then(() => 'blocked' as const)]));
      expect(r).toEqual({ ok: true, value: first });
      await clock.advance(MINUTE - SECOND);
    }
    expect(assumer.count).toBe(2);
    assumer.resolveHung();
    await flushPromises();
    expect((await cache.get(request())).accessKeyId).not.toBe(first.accessKeyId);
    cache.stop();
  });
});

describe('CredentialCache: peek (the synchronous hit path)', () => {
  it('gives fresh credentials only, never calls STS, and leaves stale ones to get()', async () => {
    const { cache, assumer, clock } = setup();
    expect(cache.peek(request())).toBeUndefined();
    const first = await cache.get(request());
    expect(cache.peek(request())).toBe(first);
    expect(cache.peek(request({ externalId: 'other-id' }))).toBeUndefined();
    assumer.mode = 'hang';
    await clock.advance(46 * MINUTE); // refresh due and hanging; 14 min left: stale
    expect(cache.peek(request())).toBeUndefined();
    expect(assumer.count).toBe(2);
    cache.stop();
  });
});

describe('CredentialCache: short sessions', () => {
  it('15-minute sessions: one STS call per refresh period (half-life), not one per request', async () => {
    const { cache, assumer, clock } = setup();
    assumer.ttlMs = 15 * MINUTE;
    // One request a second for two hours.
    for (let t = 0; t < 2 * HOUR; t += SECOND) {
      const c = await cache.get(request());
      expect(c.expirationMs - clock.now()).toBeGreaterThan(0);
      await clock.advance(SECOND);
    }
    // A refresh every 7.5 minutes: 16 in two hours, plus the first fetch.
    expect(assumer.count).toBeGreaterThanOrEqual(16);
    expect(assumer.count).toBeLessThanOrEqual(18);
    cache.stop();
  });
});

describe('CredentialCache: STS failures', () => {
  it('a failed refresh keeps serving still-valid credentials and retries with backoff (no storm)', async () => {
    const { cache, assumer, clock, failed } = setup();
    const first = await cache.get(request());
    assumer.mode = 'fail';
    await clock.advance(40 * MINUTE); // refresh due: fails
    const failStart = clock.now();
    expect(assumer.count).toBe(2);

    // 10 minutes of failures, with a get every 10 s.
    for (let t = 0; t < 60; t++) {
      const c = await cache.get(request());
      expect(c).toBe(first);
      expect(c.expirationMs - clock.now()).toBeGreaterThan(0);
      await clock.advance(10 * SECOND);
    }
    expect(clock.now() - failStart).toBe(10 * MINUTE);
    const failures = assumer.count - 1;
    // 1, 2, 4, 8, 16, 32 s, then every 60 s: about 15 attempts in 10 min, never a storm.
    expect(failures).toBeGreaterThanOrEqual(5);
    expect(failures).toBeLessThanOrEqual(16);
    const times = assumer.calls.slice(1).map((c) => c.atMs - failStart);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]!).toBeGreaterThanOrEqual(gaps[i - 1]!);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(60 * SECOND);
    expect(failed.every((f) => f.retryInMs !== undefined)).toBe(true);
    cache.stop();
  });

  it('after expiry with STS down, get rejects with StsUnavailable at once, without calling STS again in the backoff window', async () => {
    const { cache, assumer, clock } = setup();
    await cache.get(request());
    assumer.mode = 'fail';
    // Run past expiry, with a request now and then.
    for (let t = 0; t < 61; t++) {
      await settle(cache.get(request()));
      await clock.advance(MINUTE);
    }
    const r = await settle(cache.get(request()));
    expect(r.ok).toBe(false);
    const callsAtExpiry = assumer.count;
    const err = (r as { error: unknown }).error;
    expect(err).toBeInstanceOf(StsUnavailable);
    expect((err as StsUnavailable).status).toBe(500);
    // Even with STS hanging, requests inside the backoff window answer at once.
    assumer.mode = 'hang';
    for (let i = 0; i < 20; i++) {
      const again = await settle(Promise.race([cache.get(request()), flushPromises().then(() => 'blocked' as const)]));
      expect(again.ok).toBe(false);
      expect((again as { error: unknown }).error).toBeInstanceOf(StsUnavailable);
    }
    expect(assumer.count).toBe(callsAtExpiry);
    cache.stop();
  });

  it('with nothing cached and STS down, the first get rejects and repeats within backoff do not call STS', async () => {
    const { cache, assumer, clock } = setup();
    assumer.mode = 'fail';
    const first = await settle(cache.get(request()));
    expect(first.ok).toBe(false);
    expect((first as { error: unknown }).error).toBeInstanceOf(StsUnavailable);
    expect(assumer.count).toBe(1);
    for (let i = 0; i < 10; i++) expect((await settle(cache.get(request()))).ok).toBe(false);
    expect(assumer.count).toBe(1);
    await clock.advance(1 * SECOND); // backoff after the first failure: 1 s
    expect((await settle(cache.get(request()))).ok).toBe(false);
    expect(assumer.count).toBe(2);
    cache.stop();
  });

  it('a non-StsUnavailable error from the assumer is wrapped in StsUnavailable', async () => {
    const clock = new FakeClock();
    const cache = new CredentialCache({
      assumer: { assume: () => Promise.reject(new Error('socket hang up')) },
      clock,
      render: () => Buffer.from(''),
    });
    const r = await settle(cache.get(request()));
    expect(r.ok).toBe(false);
    const err = (r as { error: unknown }).error as StsUnavailable;
    expect(err).toBeInstanceOf(StsUnavailable);
    expect(err.message).toContain('socket hang up');
    expect(err.message).toContain(request().roleArn);
    cache.stop();
  });

  it('non-retryable errors (AccessDenied) back off longer than retryable ones', async () => {
    const { cache, assumer, clock } = setup();
    assumer.mode = 'deny';
    await settle(cache.get(request()));
    expect(assumer.count).toBe(1);
    await clock.advance(7 * SECOND);
    await settle(cache.get(request()));
    expect(assumer.count).toBe(1);
    await clock.advance(1 * SECOND);
    await settle(cache.get(request()));
    expect(assumer.count).toBe(2);
    cache.stop();
  });

  it('recovers when STS comes back', async () => {
    const { cache, assumer, clock } = setup();
    const first = await cache.get(request());
    assumer.mode = 'fail';
    for (let t = 0; t < 70; t++) {
      await settle(cache.get(request()));
      await clock.advance(MINUTE);
    }
    expect((await settle(cache.get(request()))).ok).toBe(false);
    assumer.mode = 'ok';
    await clock.advance(2 * MINUTE); // past any backoff
    const c = await cache.get(request());
    expect(c.accessKeyId).not.toBe(first.accessKeyId);
    expect(c.expirationMs - clock.now()).toBe(HOUR);
    // And it is kept fresh again from then on.
    for (let t = 0; t < 120; t++) {
      expect((await cache.get(request())).expirationMs - clock.now()).toBeGreaterThanOrEqual(15 * MINUTE);
      await clock.advance(MINUTE);
    }
    cache.stop();
  });

  it('recovers in the background when STS comes back before expiry', async () => {
    const { cache, assumer, clock } = setup();
    const first = await cache.get(request());
    assumer.mode = 'fail';
    await clock.advance(45 * MINUTE);
    expect((await cache.get(request())).accessKeyId).toBe(first.accessKeyId);
    assumer.mode = 'ok';
    await clock.advance(61 * SECOND); // the next retry (at most 60 s away) succeeds
    const c = await cache.get(request());
    expect(c.accessKeyId).not.toBe(first.accessKeyId);
    expect(c.expirationMs - clock.now()).toBeGreaterThanOrEqual(HOUR - 61 * SECOND);
    cache.stop();
  });
});

describe('CredentialCache: what gets refreshed', () => {
  it('entries not used and not wanted are not refreshed, and are dropped after expiry', async () => {
    const { cache, assumer, clock } = setup();
    cache.prefetch(request());
    await flushPromises();
    expect(assumer.count).toBe(1);
    expect(cache.size()).toBe(1);
    await clock.advance(3 * HOUR);
    expect(assumer.count).toBe(1);
    expect(cache.size()).toBe(0);
    expect(clock.pending()).toBe(0);
    cache.stop();
  });

  it('an entry used once is refreshed once, then left to expire when nobody uses it', async () => {
    const { cache, assumer, clock } = setup();
    await cache.get(request());
    await clock.advance(4 * HOUR);
    expect(assumer.count).toBe(2);
    expect(cache.size()).toBe(0);
    cache.stop();
  });

  it('isWanted keeps refreshing an entry nobody asks for', async () => {
    let wanted = true;
    const { cache, assumer, clock } = setup({ isWanted: () => wanted });
    cache.prefetch(request());
    await clock.advance(4 * HOUR);
    // 0, 40, 80, ... 240 min
    expect(assumer.count).toBe(7);
    expect(cache.size()).toBe(1);
    wanted = false;
    await clock.advance(4 * HOUR);
    expect(assumer.count).toBe(7);
    expect(cache.size()).toBe(0);
    cache.stop();
  });

  it('isWanted is asked about the entry\'s request', async () => {
    const asked: RoleRequest[] = [];
    const { cache, clock } = setup({ isWanted: (r) => (asked.push(r), false) });
    cache.prefetch(request({ externalId: 'ext' }));
    await clock.advance(HOUR);
    expect(asked.length).toBeGreaterThan(0);
    expect(asked.every((r) => r.externalId === 'ext')).toBe(true);
    cache.stop();
  });

  // With one entry per pod session name, a failed entry that stayed forever would leak one entry per
  // pod with a denied or failing role.
  it('an entry whose fetch failed and that nobody wants is dropped eventually', async () => {
    const { cache, assumer, clock } = setup({ isWanted: () => false });
    assumer.mode = 'deny';
    cache.prefetch(request());
    await clock.advance(24 * HOUR);
    expect(cache.size()).toBe(0);
    cache.stop();
  });

  it('stop() cancels all timers', async () => {
    const { cache, assumer, clock } = setup();
    await cache.get(request());
    expect(clock.pending()).toBe(1);
    cache.stop();
    expect(clock.pending()).toBe(0);
    await clock.advance(2 * HOUR);
    expect(assumer.count).toBe(1);
  });
});

describe('CredentialCache: prefetch', () => {
  it('prefetch fills the cache so the first get is a hit', async () => {
    const lookups: string[] = [];
    const { cache, assumer } = setup({ events: { lookup: (r) => lookups.push(r) } });
    cache.prefetch(request());
    await flushPromises();
    const c = await cache.get(request());
    expect(assumer.count).toBe(1);
    expect(lookups).toEqual(['hit']);
    expect(c.request.roleArn).toBe(request().roleArn);
    cache.stop();
  });

  it('prefetch joins an in-flight fetch and skips fresh entries', async () => {
    const { cache, assumer } = setup();
    assumer.mode = 'hang';
    const pending = cache.get(request());
    cache.prefetch(request());
    cache.prefetch(request());
    await Promise.resolve(); // the assumer is called from a microtask
    expect(assumer.count).toBe(1);
    assumer.resolveHung();
    await pending;
    cache.prefetch(request());
    expect(assumer.count).toBe(1);
    cache.stop();
  });

  it('prefetch never throws, and its failure is not an unhandled rejection', async () => {
    const { cache, assumer } = setup();
    assumer.mode = 'fail';
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      expect(() => cache.prefetch(request())).not.toThrow();
      expect(() => cache.prefetch(request({ externalId: 'e2' }))).not.toThrow();
      await flushPromises();
      await flushPromises();
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled).toEqual([]);
    expect(assumer.count).toBe(2);
    cache.stop();
  });

  it('a prefetch waits as a background call; a pod asking while it is in flight promotes that same call', async () => {
    const { cache, assumer } = setup();
    assumer.mode = 'hang';
    cache.prefetch(request());
    await Promise.resolve();
    expect(assumer.count).toBe(1);
    const urgency = assumer.calls[0]!.urgency!;
    expect(urgency.urgent).toBe(false);
    const pending = cache.get(request());
    await Promise.resolve();
    expect(assumer.count).toBe(1);
    expect(urgency.urgent).toBe(true);
    assumer.resolveHung();
    await pending;
    cache.stop();
  });

  it("a pod's own miss is urgent from the start", async () => {
    const { cache, assumer } = setup();
    await cache.get(request());
    expect(assumer.calls[0]!.urgency!.urgent).toBe(true);
    cache.stop();
  });

  // The RoleAssumer type allows an assumer that throws synchronously; prefetch must still not throw.
  it('prefetch never throws, even if the assumer throws synchronously', () => {
    const clock = new FakeClock();
    const cache = new CredentialCache({
      assumer: {
        assume: () => {
          throw new Error('boom');
        },
      },
      clock,
      render: () => Buffer.from(''),
    });
    expect(() => cache.prefetch(request())).not.toThrow();
    cache.stop();
  });
});

describe('CredentialCache: snapshot', () => {
  it('has no secrets', async () => {
    const { cache } = setup();
    await cache.get(request({ externalId: 'very-secret-external-id' }));
    const text = JSON.stringify(cache.snapshot());
    expect(text).not.toContain('secret-1');
    expect(text).not.toContain('token-1');
    expect(text).not.toContain('very-secret-external-id');
    expect(cache.snapshot()[0]).toMatchObject({ roleArn: request().roleArn, externalId: true, failures: 0 });
    cache.stop();
  });
});

describe('CredentialCache: servedRemainingMs (podiam_credentials_min_remaining_seconds)', () => {
  it('is undefined with nothing cached, the time left on what is served, and at least 15 min while STS is healthy', async () => {
    const { cache, clock } = setup();
    expect(cache.servedRemainingMs()).toBeUndefined();
    await cache.get(request());
    expect(cache.servedRemainingMs()).toBe(HOUR);
    await clock.advance(30 * MINUTE);
    expect(cache.servedRemainingMs()).toBe(30 * MINUTE);
    for (let t = 0; t < 30; t++) {
      await cache.get(request());
      await clock.advance(5 * MINUTE);
      expect(cache.servedRemainingMs()).toBeGreaterThanOrEqual(15 * MINUTE);
    }
    cache.stop();
  });

  it('falls towards zero while refreshes fail, and is the soonest of several entries', async () => {
    const { cache, assumer, clock } = setup();
    await cache.get(request());
    await clock.advance(10 * MINUTE);
    await cache.get(request({ sessionName: 'team-a.web-2' }));
    assumer.mode = 'fail';
    await clock.advance(45 * MINUTE); // the first's refresh failing since it had 20 min left
    expect(cache.servedRemainingMs()).toBe(5 * MINUTE);
    await clock.advance(3 * MINUTE);
    expect(cache.servedRemainingMs()).toBe(2 * MINUTE);
    assumer.mode = 'ok';
    await clock.advance(90 * SECOND); // the next retry (backoff capped at 60 s) succeeds
    expect(cache.servedRemainingMs()).toBeGreaterThan(15 * MINUTE);
    cache.stop();
  });

  it('does not count credentials nobody uses any more once they run low (they are not refreshed, nor served)', async () => {
    let wanted = true;
    const { cache, clock } = setup({ isWanted: () => wanted });
    cache.prefetch(request());
    await flushPromises();
    expect(cache.servedRemainingMs()).toBe(HOUR);
    wanted = false;
    await clock.advance(50 * MINUTE);
    expect(cache.size()).toBe(1);
    expect(cache.servedRemainingMs()).toBeUndefined();
    wanted = true;
    expect(cache.servedRemainingMs()).toBe(10 * MINUTE);
    cache.stop();
  });
});

describe('CredentialCache: a pod churning its own annotations (issue 19)', () => {
  const named = (i: number): RoleRequest => request({ sessionName: `team-a.churn-${i}` });

  it('a key no live pod wants is dropped at once, with its timer; a shared key stays while one pod wants it', async () => {
    const { cache, clock } = setup();
    cache.want('uid-1', request());
    cache.want('uid-2', request());
    await cache.get(request());
    expect(cache.size()).toBe(1);
    cache.want('uid-1', undefined);
    expect(cache.size()).toBe(1);
    cache.want('uid-2', named(1));
    expect(cache.size()).toBe(0);
    expect(clock.pending()).toBe(0);
    cache.stop();
  });

  it('an entry dropped while its STS call is in flight answers its waiter and leaves nothing behind', async () => {
    const { cache, assumer, clock } = setup();
    assumer.mode = 'hang';
    cache.want('uid-1', request());
    const pending = cache.get(request());
    await flushPromises();
    cache.want('uid-1', undefined);
    assumer.resolveHung();
    expect((await pending).accessKeyId).toMatch(/^ASIA/);
    expect(cache.size()).toBe(0);
    expect(clock.pending()).toBe(0);
    cache.stop();
  });

  it('300 session-name changes with a prefetch each: a few AssumeRole calls, one entry, and the last value fetched', async () => {
    const { cache, assumer, clock } = setup();
    for (let i = 0; i < 300; i++) {
      cache.want('uid-1', named(i));
      cache.prefetch(named(i));
      await clock.advance(10); // 3 s of churn in all
    }
    expect(assumer.count).toBeLessThanOrEqual(NEW_SESSION_BURST);
    expect(cache.size()).toBeLessThanOrEqual(1);
    // The pod's own request for its latest value is answered at once (prefetches keep one session for it).
    expect((await cache.get(named(299))).request.sessionName).toBe('team-a.churn-299');
    await clock.advance(NEW_SESSION_INTERVAL_MS * 2);
    // The waiting prefetch found the pod's last value already fetched: no call for a stale value.
    expect(assumer.calls.at(-1)!.request.sessionName).toBe('team-a.churn-299');
    expect(assumer.count).toBeLessThanOrEqual(NEW_SESSION_BURST);
    expect(cache.size()).toBe(1);
    expect(cache.peek(named(299))).toBeDefined();
    // A minute of churn more: about one new session per interval, never one per change.
    const before = assumer.count;
    for (let i = 300; i < 900; i++) {
      cache.want('uid-1', named(i));
      cache.prefetch(named(i));
      await clock.advance(100);
    }
    expect(assumer.count - before).toBeLessThanOrEqual(60_000 / NEW_SESSION_INTERVAL_MS + 1);
    expect(cache.size()).toBeLessThanOrEqual(1);
    cache.stop();
  });

  it("a pod's first requests are answered at once; over the budget its request is refused without an STS call, then allowed again", async () => {
    const { cache, assumer, clock } = setup();
    for (let i = 0; i < NEW_SESSION_BURST; i++) await cache.get(named(i));
    expect(assumer.count).toBe(NEW_SESSION_BURST);
    const refused = await settle(cache.get(named(99)));
    expect(refused.ok).toBe(false);
    expect((refused as { error: StsUnavailable }).error).toBeInstanceOf(StsUnavailable);
    expect(String((refused as { error: Error }).error.message)).toMatch(/too many new STS sessions/);
    expect(assumer.count).toBe(NEW_SESSION_BURST);
    // Another pod is not held back by this one.
    await cache.get(request({ pod: 'team-a/web-2', sessionName: 'team-a.web-2' }));
    // Known keys are not new sessions: still answered from memory.
    await cache.get(named(0));
    expect(assumer.count).toBe(NEW_SESSION_BURST + 1);
    await clock.advance(NEW_SESSION_INTERVAL_MS);
    expect((await cache.get(named(99))).request.sessionName).toBe('team-a.churn-99');
    cache.stop();
  });

  it('a prefetch over the budget waits, then fetches only what the pod wants by then (its last value)', async () => {
    const { cache, assumer, clock } = setup();
    for (let i = 0; i < 50; i++) {
      cache.want('uid-1', named(i));
      cache.prefetch(named(i));
    }
    await flushPromises();
    expect(assumer.count).toBe(NEW_SESSION_BURST - 1);
    await clock.advance(NEW_SESSION_INTERVAL_MS * 2);
    expect(assumer.calls.map((c) => c.request.sessionName).slice(NEW_SESSION_BURST - 1)).toEqual(['team-a.churn-49']);
    expect(cache.peek(named(49))).toBeDefined();
    expect(cache.size()).toBe(1);
    cache.stop();
  });

  it("a cluster's pods getting their first sessions at once sweep the budget table a few times, not once per pod", async () => {
    const { cache, assumer, clock } = setup();
    const proto = CredentialCache.prototype as unknown as { pruneBudgets: (now: number) => void };
    const original = proto.pruneBudgets;
    let sweeps = 0;
    proto.pruneBudgets = function (this: unknown, now: number) {
      sweeps++;
      original.call(this, now);
    };
    const pods = 6_000;
    for (let i = 0; i < pods; i++) {
      const r = request({ pod: `team-a/web-${i}`, sessionName: `team-a.web-${i}` });
      cache.want(`uid-${i}`, r);
      cache.prefetch(r);
    }
    await flushPromises();
    // Every pod within its budget (none waits), and the table swept once or twice, not ~1,900 times.
    expect(assumer.count).toBe(pods);
    expect(sweeps).toBeLessThanOrEqual(2);
    // Swept all the same once budgets are full again: the table does not keep every pod forever.
    await clock.advance(NEW_SESSION_INTERVAL_MS * NEW_SESSION_BURST);
    const more = 10_000;
    for (let i = pods; i < pods + more; i++) {
      const r = request({ pod: `team-b/web-${i}`, sessionName: `team-b.web-${i}` });
      cache.prefetch(r);
      if (i % 5_000 === 0) await clock.advance(NEW_SESSION_INTERVAL_MS * NEW_SESSION_BURST);
    }
    expect((cache as unknown as { budgets: Map<string, unknown> }).budgets.size).toBeLessThan(pods + more);
    proto.pruneBudgets = original;
    cache.stop();
  });

  it('a waiting prefetch for a pod that is gone makes no call', async () => {
    const { cache, assumer, clock } = setup();
    for (let i = 0; i < NEW_SESSION_BURST + 1; i++) {
      cache.want('uid-1', named(i));
      cache.prefetch(named(i));
    }
    await flushPromises();
    // Prefetches leave one new session for the pod's own request.
    expect(assumer.count).toBe(NEW_SESSION_BURST - 1);
    cache.want('uid-1', undefined);
    await clock.advance(NEW_SESSION_INTERVAL_MS * 4);
    expect(assumer.count).toBe(NEW_SESSION_BURST - 1);
    expect(cache.size()).toBe(0);
    cache.stop();
  });
});
