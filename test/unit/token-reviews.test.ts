/**
 * Token verdicts: one review per distinct token however many ask at once, cached until the
 * token expires (refusals briefly), bounded, dropped with the pod, and what the review says must
 * match what the token claims. Plus the header and claim parsing in front of it.
 */
import { BadRequest, InvalidToken, TokenReviewUnavailable } from '../../src/errors.js';
import type { ReviewOutcome } from '../../src/kube/token-review.js';
import { claimsOf, tokenFromHeader } from '../../src/token/bearer.js';
import type { BoundClaims } from '../../src/token/bearer.js';
import { TokenReviews } from '../../src/token/reviews.js';

const AUD = 'pods.eks.amazonaws.com';
let nowMs = 1_800_000_000_000;

function jwt(payload: object): string {
  const b = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'RS256' })}.${b(payload)}.c2ln`;
}

function claims(pod = 'web-1', uid = 'uid-1', expMs = nowMs + 3600_000): BoundClaims {
  return { namespace: 'apps', serviceAccount: 'web', podName: pod, podUid: uid, audiences: [AUD], expMs };
}

const ok = (c: BoundClaims): ReviewOutcome => ({ authenticated: true, username: `system:serviceaccount:${c.namespace}:${c.serviceAccount}`, podName: c.podName, podUid: c.podUid, audiences: [AUD] });

function setup(review: (token: string) => Promise<ReviewOutcome>, opts: { maxEntries?: number; maxInFlight?: number; maxQueued?: number } = {}) {
  const asked: string[] = [];
  const reviews = new TokenReviews({ review: (t) => (asked.push(t), review(t)), audience: AUD, now: () => nowMs, ...opts });
  return { reviews, asked };
}

test('concurrent requests with one token share one review; the verdict is cached until the token expires', async () => {
  const c = claims();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const { reviews, asked } = setup(async () => (await gate, ok(c)));
  const all = Promise.all(Array.from({ length: 40 }, () => reviews.verdict('t1', 'h1', c)));
  release();
  const verdicts = await all;
  expect(asked).toEqual(['t1']);
  expect(new Set(verdicts).size).toBe(1);
  expect(verdicts[0]!.identity).toMatchObject({ namespace: 'apps', podName: 'web-1', podUid: 'uid-1' });
  nowMs += 3599_000;
  expect(reviews.cached('h1')).toBe(verdicts[0]);
  nowMs += 1000;
  expect(reviews.cached('h1')).toBeUndefined();
});

test('a refusal is cached briefly; an unreachable API server is not cached at all', async () => {
  const c = claims();
  let mode: 'refuse' | 'fail' = 'fail';
  const { reviews, asked } = setup(async () => {
    if (mode === 'fail') throw new Error('connect ECONNREFUSED');
    return { authenticated: false, error: 'invalid bearer token' };
  });
  await expect(reviews.verdict('t', 'h', c)).rejects.toBeInstanceOf(TokenReviewUnavailable);
  expect(reviews.cached('h')).toBeUndefined();
  mode = 'refuse';
  const v = await reviews.verdict('t', 'h', c);
  expect(v.error).toBeInstanceOf(InvalidToken);
  await reviews.verdict('t', 'h', c);
  expect(asked).toHaveLength(2);
  nowMs += 30_001;
  await reviews.verdict('t', 'h', c);
  expect(asked).toHaveLength(3);
});

test('a review for another identity or audience than the token claims is a refusal', async () => {
  const c = claims();
  const { reviews } = setup(async (t) => (t === 'other-pod' ? { ...ok(c), podUid: 'uid-2' } : t === 'other-sa' ? { ...ok(c), username: 'system:serviceaccount:apps:admin' } : { ...ok(c), audiences: ['api'] }));
  for (const t of ['other-pod', 'other-sa', 'other-aud']) expect((await reviews.verdict(t, t, c)).identity).toBeUndefined();
});

test('bounded: the oldest verdicts go first; a pod going drops its verdicts', async () => {
  const { reviews } = setup(async (t) => ok(claims(t, `uid-${t}`)), { maxEntries: 3 });
  for (const p of ['a', 'b', 'c', 'd']) await reviews.verdict(p, p, claims(p, `uid-${p}`));
  expect(reviews.size()).toBe(3);
  expect(reviews.cached('a')).toBeUndefined();
  const c = reviews.cached('c')!;
  expect(reviews.isCurrent(c)).toBe(true);
  reviews.dropPod('uid-c');
  expect(reviews.cached('c')).toBeUndefined();
  // A verdict held elsewhere (per keep-alive connection) is no longer current either.
  expect(reviews.isCurrent(c)).toBe(false);
  expect(reviews.cached('d')).toBeDefined();
});

test('distinct tokens: a few reviews at once, a full queue is refused rather than grown', async () => {
  let running = 0;
  let peak = 0;
  const waiting: Array<() => void> = [];
  const { reviews } = setup(async (t) => {
    running++;
    peak = Math.max(peak, running);
    await new Promise<void>((r) => waiting.push(r));
    running--;
    return ok(claims(t, `uid-${t}`));
  }, { maxInFlight: 2, maxQueued: 3 });
  const flights = ['a', 'b', 'c', 'd', 'e'].map((t) => reviews.verdict(t, t, claims(t, `uid-${t}`)));
  await expect(reviews.verdict('f', 'f', claims('f', 'uid-f'))).rejects.toBeInstanceOf(TokenReviewUnavailable);
  while (waiting.length > 0 || running > 0) {
    waiting.shift()?.();
    await new Promise((r) => setImmediate(r));
  }
  await Promise.all(flights);
  expect(peak).toBe(2);
});

test('the Authorization header: the token verbatim, trimmed, Bearer tolerated; anything else 400', () => {
  const t = jwt({});
  expect(tokenFromHeader(t + '\n')).toBe(t);
  expect(tokenFromHeader(`Bearer ${t}`)).toBe(t);
  for (const bad of [undefined, '', 'x', `${t}.extra`, 'a.b', 'a'.repeat(20_000) + '.b.c', [t, t]]) expect(() => tokenFromHeader(bad)).toThrow(BadRequest);
});

test('claims that cannot be valid here are refused before any review', () => {
  const pod = { namespace: 'apps', pod: { name: 'web-1', uid: 'u' }, serviceaccount: { name: 'web', uid: 's' } };
  const exp = nowMs / 1000 + 600;
  expect(claimsOf(jwt({ aud: [AUD], exp, 'kubernetes.io': pod }), AUD, nowMs)).toMatchObject({ namespace: 'apps', podName: 'web-1', podUid: 'u', serviceAccount: 'web' });
  expect(claimsOf(jwt({ aud: AUD, exp, 'kubernetes.io': pod }), AUD, nowMs).audiences).toEqual([AUD]);
  expect(() => claimsOf(jwt({ aud: ['sts.amazonaws.com'], exp, 'kubernetes.io': pod }), AUD, nowMs)).toThrow(/audience/);
  expect(() => claimsOf(jwt({ aud: [AUD], exp: nowMs / 1000 - 1, 'kubernetes.io': pod }), AUD, nowMs)).toThrow(/expired/);
  expect(() => claimsOf(jwt({ aud: [AUD], 'kubernetes.io': pod }), AUD, nowMs)).toThrow(/expiry/);
  expect(() => claimsOf(jwt({ aud: [AUD], exp, 'kubernetes.io': { ...pod, pod: undefined } }), AUD, nowMs)).toThrow(/not bound to a pod/);
  expect(() => claimsOf('e30.bm90IGpzb24.c2ln', AUD, nowMs)).toThrow(InvalidToken);
});
