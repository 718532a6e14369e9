/**
 * The node restriction, as the NodeRestriction admission plugin does it for kubelets: an agent
 * is served only the pods scheduled on its own node. Pure decisions over the broker's own view
 * of the cluster (its pod informer); nothing an agent says is believed beyond the coordinates of
 * the pod it asks about, and those must match what the broker sees.
 *
 * Why the ServiceAccount check: any pod can get a token of any audience for its OWN
 * ServiceAccount (TokenRequest on a projected volume), so without it every pod would be an agent.
 * Why the agent's node comes from its pod: the token is bound to the agent's pod (TokenReview's
 * pod-name and pod-uid), and where that pod runs is the scheduler's word, not the agent's.
 */
import { BrokerRefusal, PodiamError } from '../errors.js';
import type { PodInfo } from '../roles.js';
import { podRef } from '../roles.js';

/** Who a reviewed agent token stands for. */
export interface TokenSubject {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly podName: string;
  readonly podUid: string;
}

export interface PodView {
  /** Any pod of the cluster by name, as the broker's informer sees it now. */
  pod(namespace: string, name: string): PodInfo | undefined;
}

export interface AgentServiceAccount {
  readonly namespace: string;
  readonly name: string;
}

/** The node an agent token may be served for, or the refusal (403). */
export function agentNode(subject: TokenSubject, agent: AgentServiceAccount, pods: PodView): string {
  if (subject.namespace !== agent.namespace || subject.serviceAccount !== agent.name) {
    throw new BrokerRefusal('NotAnAgent', `the token is ServiceAccount ${subject.namespace}/${subject.serviceAccount}'s, not the node agents' (${agent.namespace}/${agent.name}, --agent-service-account)`);
  }
  const pod = pods.pod(subject.namespace, subject.podName);
  if (pod === undefined || pod.uid !== subject.podUid) {
    throw new BrokerRefusal('AgentPodUnknown', `the token is bound to pod ${subject.namespace}/${subject.podName} (uid ${subject.podUid}), which the broker does not see running`);
  }
  if (ended(pod) || pod.nodeName === undefined || pod.nodeName === '') {
    throw new BrokerRefusal('AgentPodUnknown', `the token's pod ${podRef(pod)} is not running on a node`);
  }
  return pod.nodeName;
}

/** A reviewed token of another replica: the brokers' ServiceAccount, bound to a running broker pod. Its pod name, or the refusal (403). */
export function peerPod(subject: TokenSubject, peers: AgentServiceAccount, pods: PodView): string {
  if (subject.namespace !== peers.namespace || subject.serviceAccount !== peers.name) {
    throw new BrokerRefusal('NotAPeer', `the token is ServiceAccount ${subject.namespace}/${subject.serviceAccount}'s, not the brokers' (${peers.namespace}/${peers.name}, --peers)`);
  }
  const pod = pods.pod(subject.namespace, subject.podName);
  if (pod === undefined || pod.uid !== subject.podUid || ended(pod)) {
    throw new BrokerRefusal('PeerPodUnknown', `the token is bound to pod ${subject.namespace}/${subject.podName} (uid ${subject.podUid}), which this replica does not see running`);
  }
  return pod.name;
}

export interface PodCoordinates {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
}

/** The pod an agent of `node` asks about, from the broker's own view, or the refusal. */
export function podForNode(node: string, asked: PodCoordinates, pods: PodView): PodInfo {
  const pod = pods.pod(asked.namespace, asked.name);
  const ref = `${asked.namespace}/${asked.name}`;
  if (pod === undefined) throw new PodiamError('PodNotFound', 404, `pod ${ref} is not known to the broker`);
  if (pod.uid !== asked.uid) throw new BrokerRefusal('PodUidMismatch', `pod ${ref} has another uid than the agent asked about (deleted and recreated, or not this pod)`);
  if (pod.nodeName !== node) throw new BrokerRefusal('PodNotOnAgentNode', `pod ${ref} is not scheduled on node ${node}: an agent is served only its own node's pods`);
  if (ended(pod)) throw new BrokerRefusal('PodEnded', `pod ${ref} has ended (${pod.phase})`);
  return pod;
}

/** A pod's own token (the token path) must be that pod's: the agent cannot pass one pod's token for another. */
export function checkPodToken(subject: TokenSubject, pod: PodInfo): void {
  if (subject.namespace !== pod.namespace || subject.podName !== pod.name || subject.podUid !== pod.uid || subject.serviceAccount !== (pod.serviceAccount ?? 'default')) {
    throw new BrokerRefusal('TokenNotForPod', `the ServiceAccount token is bound to pod ${subject.namespace}/${subject.podName}, not to ${podRef(pod)}`);
  }
}

function ended(pod: PodInfo): boolean {
  return pod.phase === 'Succeeded' || pod.phase === 'Failed';
}
