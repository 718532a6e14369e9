/**
 * The broker's node restriction (src/broker/node-restriction.ts), decision by decision: which
 * tokens are agents', which node an agent token stands for, and which pods it may be served.
 */
import { agentNode, checkPodToken, podForNode } from '../../src/broker/node-restriction.js';
import type { TokenSubject } from '../../src/broker/node-restriction.js';
import { PodiamError } from '../../src/errors.js';
import type { PodInfo } from '../../src/roles.js';

const AGENT = { namespace: 'kube-system', name: 'podiam' };

function podInfo(over: Partial<PodInfo> & { namespace: string; name: string }): PodInfo {
  return { uid: `${over.name}-uid`, ips: ['10.0.0.1'], phase: 'Running', hostNetwork: false, createdMs: 0, deleting: false, annotations: {}, serviceAccount: 'default', nodeName: 'node-a', ...over };
}

function view(...pods: PodInfo[]) {
  const byName = new Map(pods.map((p) => [`${p.namespace}/${p.name}`, p]));
  return { pod: (ns: string, name: string) => byName.get(`${ns}/${name}`) };
}

const agentPodA = podInfo({ namespace: 'kube-system', name: 'podiam-a', serviceAccount: 'podiam', hostNetwork: true, nodeName: 'node-a' });
const agentPodB = podInfo({ namespace: 'kube-system', name: 'podiam-b', serviceAccount: 'podiam', hostNetwork: true, nodeName: 'node-b' });
const subjectA: TokenSubject = { namespace: 'kube-system', serviceAccount: 'podiam', podName: 'podiam-a', podUid: 'podiam-a-uid' };

function refusal(fn: () => unknown): { code: string; status: number } {
  try {
    fn();
  } catch (err) {
    if (err instanceof PodiamError) return { code: err.code, status: err.status };
    throw err;
  }
  throw new Error('not refused');
}

describe('agentNode: which node an agent token stands for', () => {
  const pods = view(agentPodA, agentPodB);

  it("is the node of the pod the token is bound to, as the broker's informer sees it", () => {
    expect(agentNode(subjectA, AGENT, pods)).toBe('node-a');
    expect(agentNode({ ...subjectA, podName: 'podiam-b', podUid: 'podiam-b-uid' }, AGENT, pods)).toBe('node-b');
  });

  it("refuses another ServiceAccount's token (any pod can mint one for its own), even one named alike elsewhere", () => {
    expect(refusal(() => agentNode({ ...subjectA, serviceAccount: 'default' }, AGENT, pods))).toEqual({ code: 'NotAnAgent', status: 403 });
    expect(refusal(() => agentNode({ ...subjectA, namespace: 'default' }, AGENT, pods))).toEqual({ code: 'NotAnAgent', status: 403 });
  });

  it('refuses a token whose pod the broker does not see, or sees with another uid (deleted and recreated)', () => {
    expect(refusal(() => agentNode({ ...subjectA, podName: 'podiam-gone' }, AGENT, pods))).toEqual({ code: 'AgentPodUnknown', status: 403 });
    expect(refusal(() => agentNode({ ...subjectA, podUid: 'other' }, AGENT, pods))).toEqual({ code: 'AgentPodUnknown', status: 403 });
  });

  it('refuses an agent pod that is not on a node or has ended', () => {
    const unscheduled = podInfo({ namespace: 'kube-system', name: 'podiam-a', serviceAccount: 'podiam', nodeName: undefined, uid: 'podiam-a-uid' });
    expect(refusal(() => agentNode(subjectA, AGENT, view(unscheduled)))).toEqual({ code: 'AgentPodUnknown', status: 403 });
    const ended = podInfo({ namespace: 'kube-system', name: 'podiam-a', serviceAccount: 'podiam', phase: 'Failed', uid: 'podiam-a-uid' });
    expect(refusal(() => agentNode(subjectA, AGENT, view(ended)))).toEqual({ code: 'AgentPodUnknown', status: 403 });
  });
});

describe('podForNode: the pods an agent may be served', () => {
  const app = podInfo({ namespace: 'default', name: 'app', nodeName: 'node-a' });
  const other = podInfo({ namespace: 'default', name: 'other', nodeName: 'node-b' });
  const done = podInfo({ namespace: 'default', name: 'done', nodeName: 'node-a', phase: 'Succeeded' });
  const pods = view(app, other, done);

  it("serves a pod of the agent's node, from the broker's view (the same object)", () => {
    expect(podForNode('node-a', { namespace: 'default', name: 'app', uid: 'app-uid' }, pods)).toBe(app);
  });

  it("refuses another node's pod", () => {
    expect(refusal(() => podForNode('node-a', { namespace: 'default', name: 'other', uid: 'other-uid' }, pods))).toEqual({ code: 'PodNotOnAgentNode', status: 403 });
    expect(refusal(() => podForNode('node-b', { namespace: 'default', name: 'app', uid: 'app-uid' }, pods))).toEqual({ code: 'PodNotOnAgentNode', status: 403 });
  });

  it('refuses a uid that is not the pod’s; an unknown pod is 404; an ended pod is refused', () => {
    expect(refusal(() => podForNode('node-a', { namespace: 'default', name: 'app', uid: 'forged' }, pods))).toEqual({ code: 'PodUidMismatch', status: 403 });
    expect(refusal(() => podForNode('node-a', { namespace: 'default', name: 'nope', uid: 'x' }, pods))).toEqual({ code: 'PodNotFound', status: 404 });
    expect(refusal(() => podForNode('node-a', { namespace: 'default', name: 'done', uid: 'done-uid' }, pods))).toEqual({ code: 'PodEnded', status: 403 });
  });

  it('an unscheduled pod belongs to no agent', () => {
    const pending = podInfo({ namespace: 'default', name: 'pending', nodeName: undefined });
    expect(refusal(() => podForNode('node-a', { namespace: 'default', name: 'pending', uid: 'pending-uid' }, view(pending)))).toEqual({ code: 'PodNotOnAgentNode', status: 403 });
  });
});

describe('checkPodToken: the token path', () => {
  const app = podInfo({ namespace: 'default', name: 'app', serviceAccount: 'app-sa' });
  const own: TokenSubject = { namespace: 'default', serviceAccount: 'app-sa', podName: 'app', podUid: 'app-uid' };

  it("accepts the pod's own token only", () => {
    expect(() => checkPodToken(own, app)).not.toThrow();
    for (const other of [{ ...own, podName: 'other' }, { ...own, podUid: 'x' }, { ...own, namespace: 'kube-system' }, { ...own, serviceAccount: 'default' }]) {
      expect(refusal(() => checkPodToken(other, app))).toEqual({ code: 'TokenNotForPod', status: 403 });
    }
  });
});
