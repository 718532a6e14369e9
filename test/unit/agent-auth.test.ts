/**
 * The broker's view of who is asking (src/broker/agent-auth.ts): agent tokens reviewed once each,
 * a cold start of a whole cluster's agents reviewed without refusing any, and tokens bound to no
 * agent pod the broker sees refused before any review.
 */
import { AgentAuth } from '../../src/broker/agent-auth.js';
import { PodiamError } from '../../src/errors.js';
import type { ReviewOutcome } from '../../src/kube/token-review.js';
import type { PodInfo } from '../../src/roles.js';

const AUDIENCE = 'podiam-broker';
const AGENT = { namespace: 'kube-system', name: 'podiam' };
const NODES = 1000;

function jwt(payload: object): string {
  const b = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'RS256' })}.${b(payload)}.c2ln`;
}

const agentPod = (k: number): PodInfo => ({
  namespace: 'kube-system',
  name: `podiam-${k}`,
  uid: `uid-${k}`,
  ips: ['10.0.0.1'],
  phase: 'Running',
  hostNetwork: true,
  createdMs: 0,
  deleting: false,
  annotations: {},
  serviceAccount: 'podiam',
  nodeName: `node-${k}`,
});

const tokenOf = (pod: { name: string; uid: string }, serviceAccount = 'podiam') =>
  `Bearer ${jwt({ aud: [AUDIENCE], exp: Math.floor(Date.now() / 1000) + 3600, sub: `system:serviceaccount:kube-system:${serviceAccount}`, 'kubernetes.io': { namespace: 'kube-system', serviceaccount: { name: serviceAccount }, pod: { name: pod.name, uid: pod.uid } } })}`;

function setup(reviewMs: number) {
  const pods = new Map(Array.from({ length: NODES }, (_, k) => [`kube-system/podiam-${k}`, agentPod(k)]));
  const reviewed: string[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const review = async (token: string): Promise<ReviewOutcome> => {
    reviewed.push(token);
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await new Promise((r) => setTimeout(r, reviewMs));
    inFlight--;
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { 'kubernetes.io': { pod: { name: string; uid: string } } };
    const pod = claims['kubernetes.io'].pod;
    return { authenticated: true, username: 'system:serviceaccount:kube-system:podiam', podName: pod.name, podUid: pod.uid, audiences: [AUDIENCE] };
  };
  const auth = new AgentAuth({ review, agent: AGENT, agentAudience: AUDIENCE, tokenAudience: 'pods.eks.amazonaws.com', pods: { pod: (ns, name) => pods.get(`${ns}/${name}`) } });
  return { auth, reviewed, maxInFlight: () => maxInFlight };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof PodiamError) return `${err.status} ${err.code}`;
    throw err;
  }
  return 'not refused';
}

test("a cold start: every node's agent at once, twice each, is reviewed once per agent and none is refused", async () => {
  const { auth, reviewed, maxInFlight } = setup(5);
  const asks = Array.from({ length: NODES }, (_, k) => tokenOf(agentPod(k)));
  const results = await Promise.allSettled([...asks, ...asks].map((t) => auth.agent(t)));
  const refused = results.filter((r) => r.status === 'rejected');
  expect(refused.map((r) => String((r as PromiseRejectedResult).reason)).slice(0, 3)).toEqual([]);
  expect(results.map((r) => (r as PromiseFulfilledResult<{ node: string }>).value.node)).toEqual([...asks, ...asks].map((_, i) => `node-${i % NODES}`));
  expect(reviewed).toHaveLength(NODES);
  // Bounded concurrency towards the API server all the same.
  expect(maxInFlight()).toBeLessThanOrEqual(32);
  expect(maxInFlight()).toBeGreaterThan(8);
});

test('a token bound to no agent pod the broker sees (unknown pod, other uid, other ServiceAccount) is refused without a review', async () => {
  const { auth, reviewed } = setup(1);
  expect(await refusal(auth.agent(tokenOf({ name: 'podiam-gone', uid: 'x' })))).toBe('403 AgentPodUnknown');
  expect(await refusal(auth.agent(tokenOf({ name: 'podiam-1', uid: 'not-its-uid' })))).toBe('403 AgentPodUnknown');
  expect(await refusal(auth.agent(tokenOf(agentPod(1), 'default')))).toBe('403 NotAnAgent');
  expect(reviewed).toEqual([]);
  // The real agent of that node still gets its node.
  expect((await auth.agent(tokenOf(agentPod(1)))).node).toBe('node-1');
  expect(reviewed).toHaveLength(1);
});
