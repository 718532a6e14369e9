/**
 * --remove-startup-taint: the node carries a NoSchedule taint from its registration (the kubelet's
 * --register-with-taints, Karpenter's or Cluster API's startupTaints) so no pod is scheduled there
 * before podiam intercepts; podiam removes it once ready (every family's rules in, informers
 * synced), as Cilium's agent removes node.cilium.io/agent-not-ready.
 *
 * Safe under concurrent writers (the kubelet updating the node, other agents removing their own
 * start-up taints): a JSON Patch whose first operation tests that the taint at index i is still
 * exactly the one read, then removes index i. The API server applies it to the node as stored at
 * the moment of the write, so if anyone changed the taint list in between (an index shifted, a
 * taint added or removed), the test fails, nothing is written, and podiam reads the node again.
 * A merge patch would replace the whole list (dropping a taint another agent just added); an
 * update with the resourceVersion would conflict on every kubelet status heartbeat.
 */
import type { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import type { Logger } from '../log.js';
import type { KubeApi } from './api.js';
import { KubeApiError, createKubeApi } from './api.js';

interface Taint {
  readonly key: string;
  readonly value?: string;
  readonly effect: string;
  readonly timeAdded?: string;
}

interface NodeObject {
  readonly metadata?: { readonly resourceVersion?: string };
  readonly spec?: { readonly taints?: readonly Taint[] };
}

export type TaintOutcome = 'removed' | 'absent' | 'stopped';

export interface StartupTaintOptions {
  readonly node: string;
  readonly key: string;
  readonly log: Logger;
  /** Waits between attempts after an error (not after a lost race, retried at once). */
  readonly backoffMs?: { readonly first: number; readonly max: number };
}

export class StartupTaint {
  private readonly api: KubeApi;
  private stopped = false;
  private wake: (() => void) | undefined;

  constructor(kc: KubeConfig | KubeApi, private readonly options: StartupTaintOptions) {
    this.api = 'get' in kc && 'patch' in kc ? kc : createKubeApi(kc, { timeoutMs: 10_000 });
  }

  /** Removes the taint (retrying on errors until it is gone, absent, or stop()). */
  async remove(): Promise<TaintOutcome> {
    const { node, key, log } = this.options;
    const path = `/api/v1/nodes/${encodeURIComponent(node)}`;
    let delayMs = this.options.backoffMs?.first ?? 500;
    let races = 0;
    for (let attempt = 1; !this.stopped; attempt++) {
      try {
        const current = await this.api.get<NodeObject>(path);
        const taints = current.spec?.taints ?? [];
        const index = taints.findIndex((t) => t.key === key && t.effect === 'NoSchedule');
        if (index === -1) {
          log.info('start-up taint not on the node: nothing to remove', { node, taint: key });
          return 'absent';
        }
        await this.api.patch(path, [
          { op: 'test', path: `/spec/taints/${index}`, value: taints[index] },
          { op: 'remove', path: `/spec/taints/${index}` },
        ], 'application/json-patch+json');
        log.info('start-up taint removed: pods may be scheduled on this node', { node, taint: `${key}:NoSchedule`, attempts: attempt });
        return 'removed';
      } catch (err) {
        // 422 (the test operation failed) or 409: someone changed the node meanwhile. Read it again.
        // A few in a row at most: a 422 that is not a lost race must not spin.
        if (err instanceof KubeApiError && (err.statusCode === 422 || err.statusCode === 409) && ++races <= 5) continue;
        races = 0;
        log.warn('could not remove the start-up taint; retrying', { node, taint: key, error: (err as Error).message, retryInMs: delayMs, ...(err instanceof KubeApiError && err.statusCode === 403 ? { hint: 'podiam needs get and patch on nodes (RBAC)' } : {}) });
        await this.sleep(delayMs);
        delayMs = Math.min(this.options.backoffMs?.max ?? 30_000, delayMs * 2);
      }
    }
    return 'stopped';
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}
