/**
 * Kubernetes Events on pods that were denied credentials, so `kubectl describe pod` says why.
 * Rate-limited per (pod, reason): a pod retrying every second makes one Event per window.
 */
import type { CoreV1Event } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { PodInfo } from '../roles.js';
import type { KubeApi } from './api.js';
import { createKubeApi } from './api.js';

export interface EventRecorderOptions {
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly component: string;
  readonly host: string | undefined;
  /** One Event per (pod, reason) per window. */
  readonly windowMs?: number;
  /** At most this many Events in flight at once; beyond it, Events are dropped (and counted). */
  readonly maxInFlight?: number;
}

export class EventRecorder {
  private readonly api: KubeApi;
  private readonly lastSent = new Map<string, number>();
  private inFlight = 0;
  private stopped = false;
  private readonly sweep: NodeJS.Timeout;

  constructor(kc: KubeConfig, private readonly options: EventRecorderOptions) {
    this.api = createKubeApi(kc, { timeoutMs: 10_000 });
    const window = options.windowMs ?? 60_000;
    this.sweep = setInterval(() => {
      const cutoff = Date.now() - window;
      for (const [k, t] of this.lastSent) if (t < cutoff) this.lastSent.delete(k);
    }, window);
    this.sweep.unref();
  }

  denied(pod: PodInfo, reason: string, message: string): void {
    this.record({ kind: 'Pod', apiVersion: 'v1', namespace: pod.namespace, name: pod.name, uid: pod.uid }, reason, message);
  }

  /** A warning on a namespace (an allowed-roles entry podiam skips), in that namespace. */
  namespaceWarning(namespace: string, reason: string, message: string): void {
    this.record({ kind: 'Namespace', apiVersion: 'v1', namespace, name: namespace }, reason, message);
  }

  /** A warning on a Node (cluster-scoped: the Event lives in `default`, as the kubelet's do). */
  nodeWarning(node: string, reason: string, message: string): void {
    this.record({ kind: 'Node', apiVersion: 'v1', namespace: '', name: node, uid: node }, reason, message, 'default');
  }

  private record(object: { kind: string; apiVersion: string; namespace: string; name: string; uid?: string }, reason: string, message: string, eventNamespace = object.namespace): void {
    if (this.stopped) return;
    const key = `${object.kind}\n${object.uid ?? `${object.namespace}/${object.name}`}\n${reason}`;
    const now = Date.now();
    const last = this.lastSent.get(key);
    if (last !== undefined && now - last < (this.options.windowMs ?? 60_000)) {
      this.options.metrics.events.inc({ outcome: 'suppressed' });
      return;
    }
    if (this.inFlight >= (this.options.maxInFlight ?? 8)) {
      this.options.metrics.events.inc({ outcome: 'dropped' });
      return;
    }
    this.lastSent.set(key, now);
    this.inFlight++;
    const time = new Date(now).toISOString();
    const body: Omit<CoreV1Event, 'firstTimestamp' | 'lastTimestamp'> & { firstTimestamp: string; lastTimestamp: string } = {
      metadata: { generateName: `${object.name}.podiam-`, namespace: eventNamespace },
      involvedObject: object.namespace === '' ? { kind: object.kind, apiVersion: object.apiVersion, name: object.name, uid: object.uid } : object,
      reason: `Podiam${reason}`,
      message: message.slice(0, 1024),
      type: 'Warning',
      source: { component: this.options.component, host: this.options.host },
      firstTimestamp: time,
      lastTimestamp: time,
      count: 1,
      reportingComponent: this.options.component,
      reportingInstance: this.options.host ?? this.options.component,
    };
    this.api
      .post(`/api/v1/namespaces/${encodeURIComponent(eventNamespace)}/events`, body)
      .then(
        () => this.options.metrics.events.inc({ outcome: 'sent' }),
        (err: Error) => {
          this.options.metrics.events.inc({ outcome: 'failed' });
          this.options.log.warn('could not record Kubernetes Event', { object: `${object.kind} ${object.namespace === '' ? '' : `${object.namespace}/`}${object.name}`, reason, error: err.message });
        },
      )
      .finally(() => this.inFlight--);
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.sweep);
  }
}
