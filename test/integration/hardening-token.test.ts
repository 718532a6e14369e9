/**
 * The second adversarial review (issue 19), the token path: a flood of tokens with a pod's real
 * claims and made-up signatures. Before: 10,050 TokenReviews, the pod's cached verdict evicted,
 * then 503 TokenReviewUnavailable for the pod itself during a second flood. Now the signature is
 * checked against the API server's keys (its /openid/v1/jwks) first: no review, no eviction.
 * Also: key rotation, an outage of the key set, made-up kids, and the per-pod review budget.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { freePort } from '../support/net.js';
import type { PodiamProcess } from '../support/podiam-process.js';
import { waitFor } from '../support/wait.js';
import { World } from '../support/world.js';

const AUDIENCE = 'pods.eks.amazonaws.com';

let world: World;
let podiam: PodiamProcess;
let tokenPort: number;

interface Answer {
  status: number;
  code: string | undefined;
}

function get(authorization: string, agent: http.Agent | false = false): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: tokenPort, path: '/v1/credentials', agent, headers: { Authorization: authorization } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        let code: string | undefined;
        try {
          code = (JSON.parse(body) as { code?: string }).code;
        } catch {
          code = undefined;
        }
        resolve({ status: res.statusCode ?? 0, code });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** Sends every token once, `concurrency` at a time over keep-alive connections; counts the answers by status and code. */
async function flood(tokens: readonly string[], concurrency = 64): Promise<Record<string, number>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const counts: Record<string, number> = {};
  let next = 0;
  try {
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < tokens.length) {
          const a = await get(tokens[next++]!, agent);
          const key = `${a.status} ${a.code ?? ''}`;
          counts[key] = (counts[key] ?? 0) + 1;
        }
      }),
    );
  } finally {
    agent.destroy();
  }
  return counts;
}

/** The token with its signature replaced by random bytes: the pod's real header (kid) and claims. */
function forge(token: string): string {
  const [header, payload] = token.split('.');
  return `${header}.${payload}.${randomBytes(256).toString('base64url')}`;
}

function podWithToken(name: string, role: string): string {
  world.pod(name, { ip: world.nextIp(), role });
  return world.kube.tokenApi.issue({ namespace: 'default', serviceAccount: 'default', pod: name, audiences: [AUDIENCE], expirationSeconds: 86400 });
}

beforeAll(async () => {
  world = await World.start();
  tokenPort = await freePort();
  podiam = await world.podiam(['--token-identity', `--token-addr=127.0.0.1:${tokenPort}`]);
  await waitFor(() => podiam.output().includes('token identity listening'), 10_000);
});

afterAll(async () => {
  await world?.stop();
});

test('10,050 forged tokens with a pod’s real claims: no TokenReview, and the pod keeps being served during a second flood', async () => {
  const api = world.kube.tokenApi;
  const victim = podWithToken('victim', 'victim-role');
  expect((await get(victim)).status).toBe(200);
  const reviewsBefore = api.reviews;

  const forged = Array.from({ length: 10_050 }, () => forge(victim));
  const first = await flood(forged);
  expect(first).toEqual({ '401 InvalidToken': 10_050 });
  // Not one review: the signatures were checked against the API server's keys.
  expect(api.reviews - reviewsBefore).toBe(0);

  // A second flood, with the pod asking all along: its verdict is still cached, it is served from memory.
  const second = flood(Array.from({ length: 10_050 }, () => forge(victim)));
  const during: Answer[] = [];
  let done = false;
  void second.finally(() => (done = true));
  while (!done) during.push(await get(victim));
  await second;
  expect(during.length).toBeGreaterThan(0);
  expect(during.filter((a) => a.status !== 200)).toEqual([]);
  expect(api.reviews - reviewsBefore).toBe(0);
  expect(await podiam.metric('podiam_token_reviews_total', { outcome: 'forged' })).toBeGreaterThanOrEqual(10_050);
}, 240_000);

test('key rotation: a token signed with a new key is served after one refetch of the key set; made-up kids cost at most one fetch per period', async () => {
  const api = world.kube.tokenApi;
  const oldToken = podWithToken('rotating', 'rotating-role');
  expect((await get(oldToken)).status).toBe(200);
  const fetches = api.jwksFetches;
  api.rotateKey();
  const newToken = api.issue({ namespace: 'default', serviceAccount: 'default', pod: 'rotating', audiences: [AUDIENCE], expirationSeconds: 86400 });
  expect(JSON.parse(Buffer.from(newToken.split('.')[0]!, 'base64url').toString())).toMatchObject({ alg: 'RS256', kid: api.signingKid() });
  expect((await get(newToken)).status).toBe(200);
  expect(api.jwksFetches - fetches).toBe(1);
  // The old key is still published (both key files given): its tokens still work.
  expect((await get(oldToken)).status).toBe(200);

  // 500 tokens with made-up kids: refused, and the key set is not fetched 500 times.
  const [, payload, signature] = newToken.split('.');
  const madeUp = Array.from({ length: 500 }, () => `${Buffer.from(JSON.stringify({ alg: 'RS256', kid: randomBytes(16).toString('hex') })).toString('base64url')}.${payload}.${signature}`);
  const answers = await flood(madeUp, 16);
  expect(Object.keys(answers)).toEqual(['401 InvalidToken']);
  expect(api.jwksFetches - fetches).toBeLessThanOrEqual(2);
}, 60_000);

test('the key set unreachable: the last good keys stay in use; a new kid is 503 (not a forgery) until the set is back', async () => {
  const api = world.kube.tokenApi;
  podWithToken('outage', 'outage-role');
  api.setJwksDown(true);
  try {
    // A token never seen before, signed with a key podiam already holds: served.
    const known = api.issue({ namespace: 'default', serviceAccount: 'default', pod: 'outage', audiences: [AUDIENCE], expirationSeconds: 86400 });
    expect((await get(known)).status).toBe(200);
    api.rotateKey();
    const fresh = api.issue({ namespace: 'default', serviceAccount: 'default', pod: 'outage', audiences: [AUDIENCE], expirationSeconds: 86400 });
    // Within the refetch period of the last good fetch a new kid is unknown (401); after it, the failed fetch says 503.
    await waitFor(async () => {
      const a = await get(fresh);
      return a.status === 503 && a.code === 'TokenReviewUnavailable';
    }, 15_000, '503 for a kid that could not be fetched');
    await waitFor(() => podiam.output().includes("could not read the API server's token signing keys"), 5000);
  } finally {
    api.setJwksDown(false);
  }
  const fresh2 = api.issue({ namespace: 'default', serviceAccount: 'default', pod: 'outage', audiences: [AUDIENCE], expirationSeconds: 86400 });
  await waitFor(async () => (await get(fresh2)).status === 200, 15_000, 'served once the key set is back');
}, 60_000);

test('reviews are budgeted per claimed pod: a pod’s sixth new token in a row is 429, another pod is not affected', async () => {
  const api = world.kube.tokenApi;
  podWithToken('greedy', 'greedy-role');
  const other = podWithToken('modest', 'modest-role');
  const tokens = Array.from({ length: 6 }, () => api.issue({ namespace: 'default', serviceAccount: 'default', pod: 'greedy', audiences: [AUDIENCE], expirationSeconds: 86400 }));
  const answers: Answer[] = [];
  for (const t of tokens) answers.push(await get(t));
  expect(answers.slice(0, 5).map((a) => a.status)).toEqual([200, 200, 200, 200, 200]);
  expect(answers[5]).toEqual({ status: 429, code: 'TooManyTokenReviews' });
  // Its tokens already reviewed are still served from memory; another pod is reviewed as usual.
  expect((await get(tokens[0]!)).status).toBe(200);
  expect((await get(other)).status).toBe(200);
});
