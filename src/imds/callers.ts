/**
 * Who may use the forwarded paths and the token route: a pod indexed on this node, or the node
 * itself. Anyone else who can reach podiam's port (another node, a VPC host the security groups
 * let in) would otherwise read this node's user-data and identity through it: with a hop limit
 * of 1 the real metadata service answers only the node, and podiam must not widen that.
 */
import { CallerNotAllowed } from '../errors.js';
import type { PodInfo } from '../roles.js';
import type { PodDirectory } from './credentials.js';

/** A caller podiam serves: the node itself, or one pod (identified by UID, so a reused IP is someone else). */
export type Caller = { readonly kind: 'node'; readonly id: 'node' } | { readonly kind: 'pod'; readonly id: string; readonly pod: PodInfo };

export interface CallersOptions {
  /** The node's own addresses: loopback and its host IPs (see nodeAddresses). */
  readonly isNodeAddress: (ip: string) => boolean;
  readonly pods: Pick<PodDirectory, 'ready' | 'waitFor'>;
  /** As for credentials: a pod's first request may come before its watch event. */
  readonly podWaitMs: number;
}

const NODE: Caller = Object.freeze({ kind: 'node', id: 'node' });

export class Callers {
  constructor(private readonly options: CallersOptions) {}

  isNode(ip: string): boolean {
    return this.options.isNodeAddress(ip);
  }

  /** The caller behind a source address, or CallerNotAllowed (403). */
  async admit(ip: string): Promise<Caller> {
    const { isNodeAddress, pods, podWaitMs } = this.options;
    if (isNodeAddress(ip)) return NODE;
    await pods.ready(podWaitMs);
    const pod = (await pods.waitFor(ip, 0)) ?? (await pods.waitFor(ip, podWaitMs));
    if (pod === undefined) throw new CallerNotAllowed(ip);
    return { kind: 'pod', id: callerId(pod), pod };
  }
}

/** A pod's caller id: its UID (a pod recreated under the same name is someone else). */
export function callerId(pod: PodInfo): string {
  return pod.uid !== '' ? pod.uid : `${pod.namespace}/${pod.name}`;
}

/**
 * The node's own addresses as a predicate: loopback (127.0.0.1, ::1) and the given host IPs,
 * however many there are (one per family, say). Only 127.0.0.1 of 127.0.0.0/8: node processes
 * connect from it (or from a host IP), and the rest of the block is free for tests to play pods.
 */
export function nodeAddresses(hostIps: Iterable<string>): (ip: string) => boolean {
  const own = new Set<string>();
  for (const ip of hostIps) {
    const trimmed = ip.trim();
    if (trimmed !== '') own.add(trimmed.toLowerCase());
  }
  return (ip) => ip === '127.0.0.1' || ip === '::1' || own.has(ip.toLowerCase());
}
