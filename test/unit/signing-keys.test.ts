/**
 * The token's signature against the API server's key set: by kid, alg matching the key's, one
 * refetch in flight on an unknown kid and at most one per period, the last good set kept through
 * an outage; and what the verdict cache does with the answers (refusals apart from good verdicts).
 */
import crypto from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { InvalidToken, TokenReviewUnavailable, TooManyTokenReviews } from '../../src/errors.js';
import type { PublishedKey } from '../../src/kube/token-keys.js';
import type { BoundClaims } from '../../src/token/bearer.js';
import { TokenReviews } from '../../src/token/reviews.js';
import { SigningKeys, usableKeys } from '../../src/token/signing-keys.js';

const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');

interface TestKey {
  kid: string;
  alg: string;
  privateKey: KeyObject;
  jwk: PublishedKey;
}

function rsaKey(kid: string, alg = 'RS256'): TestKey {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { kid, alg, privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' } };
}

function ecKey(kid: string): TestKey {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { kid, alg: 'ES256', privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig' } };
}

function sign(key: TestKey, header: object = { alg: key.alg, kid: key.kid }, claims: object = { sub: 'x' }): string {
  const input = `${b64(header)}.${b64(claims)}`;
  const opts = key.alg.startsWith('ES') ? { key: key.privateKey, dsaEncoding: 'ieee-p1363' as const } : key.alg.startsWith('PS') ? { key: key.privateKey, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: crypto.constants.RSA_PSS_SALTLEN_DIGEST } : key.privateKey;
  return `${input}.${crypto.sign(`sha${key.alg.slice(2)}`, Buffer.from(input), opts).toString('base64url')}`;
}

const rs = rsaKey('rs-1');
const rs2 = rsaKey('rs-2');
const es = ecKey('es-1');
const ps = rsaKey('ps-1', 'PS256');

function setup(published: () => PublishedKey[] | Error) {
  let nowMs = 1_000_000;
  let fetches = 0;
  let gate: Promise<void> = Promise.resolve();
  const keys = new SigningKeys({
    fetch: async () => {
      fetches++;
      await gate;
      const p = published();
      if (p instanceof Error) throw p;
      return p;
    },
    now: () => nowMs,
    minRefetchMs: 10_000,
  });
  return {
    keys,
    fetches: () => fetches,
    advance: (ms: number) => (nowMs += ms),
    hold: () => {
      let release!: () => void;
      gate = new Promise((r) => (release = r));
      return () => release();
    },
  };
}

test('RS256, ES256 and PS256 signatures of published keys are valid; another key’s, or a changed payload, are not', async () => {
  const { keys } = setup(() => [rs.jwk, es.jwk, ps.jwk]);
  expect(await keys.check(sign(rs))).toEqual({ valid: true });
  expect(await keys.check(sign(es))).toEqual({ valid: true });
  expect(await keys.check(sign(ps))).toEqual({ valid: true });
  const forged = sign({ ...rsaKey('rs-1') });
  expect(await keys.check(forged)).toMatchObject({ valid: false, lasting: true });
  const [h, , s] = sign(rs).split('.');
  expect(await keys.check(`${h}.${b64({ sub: 'admin' })}.${s}`)).toMatchObject({ valid: false, lasting: true });
  expect(await keys.check(`${h}.${b64({ sub: 'x' })}.${crypto.randomBytes(256).toString('base64url')}`)).toMatchObject({ valid: false, lasting: true });
});

test('alg must be the key’s: none, HS256 (the public key as an HMAC secret) and RS256-for-an-EC-key are refused', async () => {
  const { keys } = setup(() => [rs.jwk, es.jwk]);
  const input = `${b64({ alg: 'HS256', kid: 'rs-1' })}.${b64({ sub: 'x' })}`;
  const hmac = crypto.createHmac('sha256', JSON.stringify(rs.jwk)).update(input).digest('base64url');
  expect(await keys.check(`${input}.${hmac}`)).toMatchObject({ valid: false, lasting: true });
  expect(await keys.check(`${b64({ alg: 'none', kid: 'rs-1' })}.${b64({ sub: 'x' })}.`)).toMatchObject({ valid: false });
  expect(await keys.check(sign(rs, { alg: 'ES256', kid: 'rs-1' }))).toMatchObject({ valid: false, reason: expect.stringMatching(/not its key's/) });
  expect(await keys.check(sign(rs, { alg: 'RS256' }))).toMatchObject({ valid: false, reason: expect.stringMatching(/no kid/) });
  expect(await keys.check(`${Buffer.from('not json').toString('base64url')}.${b64({})}.c2ln`)).toMatchObject({ valid: false, lasting: true });
});

test('an unknown kid refetches the set: one fetch for many concurrent checks, at most one per period', async () => {
  let published = [rs.jwk];
  const t = setup(() => published);
  expect(await t.keys.check(sign(rs))).toEqual({ valid: true });
  expect(t.fetches()).toBe(1);
  // Rotated: a token of the new key, checked 20 times at once, once the period is over.
  published = [rs2.jwk, rs.jwk];
  t.advance(10_000);
  const release = t.hold();
  const all = Promise.all(Array.from({ length: 20 }, () => t.keys.check(sign(rs2))));
  release();
  expect(await all).toEqual(Array(20).fill({ valid: true }));
  expect(t.fetches()).toBe(2);
  // Made-up kids within the period: refused (not lasting: the next refetch may know it), no fetch.
  for (let i = 0; i < 50; i++) expect(await t.keys.check(sign(rs, { alg: 'RS256', kid: `made-up-${i}` }))).toMatchObject({ valid: false, lasting: false });
  expect(t.fetches()).toBe(2);
  t.advance(10_000);
  await t.keys.check(sign(rs, { alg: 'RS256', kid: 'made-up-again' }));
  expect(t.fetches()).toBe(3);
});

test('the start-up prefetch does not open the refetch period: a key rotated just after it is fetched by its first token', async () => {
  let published = [rs.jwk];
  const t = setup(() => published);
  t.keys.prefetch();
  expect(await t.keys.check(sign(rs))).toEqual({ valid: true });
  expect(t.fetches()).toBe(1);
  // Rotated a second after start-up: the new kid's first token fetches the set once, and is served.
  published = [rs2.jwk, rs.jwk];
  t.advance(1000);
  expect(await t.keys.check(sign(rs2))).toEqual({ valid: true });
  expect(t.fetches()).toBe(2);
  // That fetch was an unknown kid's: made-up kids within its period cost no fetch.
  for (let i = 0; i < 20; i++) expect(await t.keys.check(sign(rs, { alg: 'RS256', kid: `made-up-${i}` }))).toMatchObject({ valid: false, lasting: false });
  expect(t.fetches()).toBe(2);
});

test('an outage keeps the last good keys; a new kid during it is "unavailable", never a forgery; no keys at all is unavailable', async () => {
  let answer: PublishedKey[] | Error = new Error('connect ECONNREFUSED');
  const t = setup(() => answer);
  await expect(t.keys.check(sign(rs))).rejects.toBeInstanceOf(TokenReviewUnavailable);
  // Within the period: not asked again, still unavailable.
  await expect(t.keys.check(sign(rs))).rejects.toThrow(/ECONNREFUSED/);
  expect(t.fetches()).toBe(1);
  answer = [rs.jwk];
  t.advance(10_000);
  expect(await t.keys.check(sign(rs))).toEqual({ valid: true });
  answer = new Error('503 ServiceUnavailable');
  t.advance(10_000);
  await expect(t.keys.check(sign(rs2))).rejects.toBeInstanceOf(TokenReviewUnavailable);
  await expect(t.keys.check(sign(rs2))).rejects.toBeInstanceOf(TokenReviewUnavailable);
  expect(await t.keys.check(sign(rs))).toEqual({ valid: true });
});

test('usable keys: signing keys of known types only, public members only, first of a kid wins', () => {
  const withPrivate = { ...rs.privateKey.export({ format: 'jwk' }), kid: 'priv', alg: 'RS256' };
  const keys = usableKeys([rs.jwk, { ...rs2.jwk, kid: 'rs-1' }, { ...rs.jwk, kid: 'enc', use: 'enc' }, { kty: 'oct', k: 'c2VjcmV0', kid: 'hmac' }, { ...es.jwk, alg: 'ES384', kid: 'wrong-curve' }, { kid: 'broken', kty: 'RSA', n: '!!', e: 'AQAB' }, withPrivate, { ...rs.jwk, kid: undefined }]);
  expect([...keys.keys()].sort()).toEqual(['priv', 'rs-1']);
  expect(keys.get('priv')!.key.type).toBe('public');
  expect(keys.get('rs-1')!.key.export({ format: 'jwk' }).n).toBe(rs.jwk['n']);
});

describe('the verdict cache with signatures', () => {
  const AUD = 'pods.eks.amazonaws.com';
  let nowMs = 1_800_000_000_000;
  const claims = (uid = 'uid-1'): BoundClaims => ({ namespace: 'apps', serviceAccount: 'web', podName: `web-${uid}`, podUid: uid, audiences: [AUD], expMs: nowMs + 3600_000 });

  function setupReviews(opts: { maxRefused?: number; maxEntries?: number } = {}) {
    const asked: string[] = [];
    const reviews = new TokenReviews({
      review: async (t) => {
        asked.push(t);
        const uid = t.split(':')[1]!;
        return { authenticated: true, username: 'system:serviceaccount:apps:web', podName: `web-${uid}`, podUid: uid, audiences: [AUD] };
      },
      checkSignature: async (t) => (t.startsWith('good') ? { valid: true } : { valid: false, reason: 'its signature is not the API server\'s', lasting: !t.startsWith('unknown-kid') }),
      audience: AUD,
      now: () => nowMs,
      ...opts,
    });
    return { reviews, asked };
  }

  test('a flood of forged tokens is refused without a review and evicts only refusals', async () => {
    const { reviews, asked } = setupReviews({ maxRefused: 100, maxEntries: 100 });
    const good = await reviews.verdict('good:uid-1', 'g', claims());
    expect(good.identity).toBeDefined();
    for (let i = 0; i < 1_005; i++) {
      const v = await reviews.verdict(`forged:uid-1:${i}`, `f${i}`, claims());
      expect(v.error).toBeInstanceOf(InvalidToken);
    }
    expect(asked).toEqual(['good:uid-1']);
    expect(reviews.cached('g')).toBe(good);
    expect(reviews.isCurrent(good)).toBe(true);
    expect(reviews.refusedSize()).toBe(100);
    expect(reviews.cached('f1004')?.error).toBeInstanceOf(InvalidToken);
    expect(reviews.cached('f0')).toBeUndefined();
    // An unknown kid's refusal is not remembered (the next refetch may know the key).
    await reviews.verdict('unknown-kid:uid-1', 'u', claims());
    expect(reviews.cached('u')).toBeUndefined();
  });

  test('reviews per claimed pod: a burst of 5, then one per 10 s; other pods unaffected; the budget goes with the pod', async () => {
    const { reviews, asked } = setupReviews();
    for (let i = 0; i < 5; i++) expect((await reviews.verdict(`good:uid-1:${i}`, `h${i}`, claims())).identity).toBeDefined();
    await expect(reviews.verdict('good:uid-1:5', 'h5', claims())).rejects.toBeInstanceOf(TooManyTokenReviews);
    await expect(reviews.verdict('good:uid-1:5', 'h5', claims())).rejects.toMatchObject({ status: 429 });
    expect((await reviews.verdict('good:uid-2:0', 'other', claims('uid-2'))).identity).toBeDefined();
    nowMs += 10_000;
    expect((await reviews.verdict('good:uid-1:5', 'h5', claims())).identity).toBeDefined();
    await expect(reviews.verdict('good:uid-1:6', 'h6', claims())).rejects.toBeInstanceOf(TooManyTokenReviews);
    reviews.dropPod('uid-1');
    expect((await reviews.verdict('good:uid-1:6', 'h6', claims())).identity).toBeDefined();
    expect(asked).toHaveLength(8);
  });
});
