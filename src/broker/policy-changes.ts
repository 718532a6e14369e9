/**
 * What agents hear of the policy they cannot see. An agent in broker mode watches only its own
 * node's pods: a change of a namespace's annotations (allowed roles, external id), a
 * ServiceAccount's (its role) or a PodIdentityAssociation reaches it here, so that it stops
 * serving credentials the broker would no longer grant, within a round trip of the change rather
 * than at the next refresh.
 *
 * Each agent holds one long poll (POST /v1/changes {"since"}): answered at once when something
 * changed after `since` in a namespace that has pods on the agent's node, else after HOLD_MS with
 * nothing. `since` is the broker's clock (the last answer's `now`): replicas watch the same API
 * server, so an agent's next poll may land on another replica. A change is kept KEEP_MS and
 * matched with SLACK_MS of overlap (what one replica saw a moment later than another); a replica
 * that cannot cover `since` (it began after it, or has dropped that far back) answers `reset`:
 * the agent asks again about every pod it holds. An agent learns only the names of the
 * namespaces and ServiceAccounts its own node's pods run as: a ServiceAccount used only on other
 * nodes is not told, even in a namespace this node shares.
 */
import type { WireChange, WireChanges } from '../credentials/broker-wire.js';

/** A poll is held at most this long (under the agents' long-poll timeout). */
export const HOLD_MS = 20_000;
/** Changes are kept this long: an agent cut off from every replica for longer gets `reset`. */
export const KEEP_MS = 10 * 60_000;
/** Overlap between replicas' views of one change (watch latency, clock skew). */
export const SLACK_MS = 5_000;
/** Changes in one answer at most (~100 bytes each, under the agent's 64 KB answer limit); more: reset. */
export const MAX_CHANGES = 400;

interface Recorded {
  readonly atMs: number;
  readonly change: WireChange;
}

interface Waiter {
  readonly node: string;
  readonly since: number;
  readonly resolve: (answer: WireChanges) => void;
  readonly timer: NodeJS.Timeout;
}

export interface PolicyChangesOptions {
  /** Whether `namespace` (that ServiceAccount of it, when given) has pods on `node` (PodIndex.hasPodsOn). */
  readonly hasPodsOn: (node: string, namespace: string, serviceAccount?: string) => boolean;
  readonly now?: () => number;
  readonly holdMs?: number;
}

export class PolicyChanges {
  private readonly log: Recorded[] = [];
  /** Index of the first live entry of `log` (expired ones are dropped in batches). */
  private head = 0;
  /** Changes before this are unknown to this replica: it began recording here, or has dropped them. */
  private coveredFromMs: number | undefined;
  private readonly waiters = new Set<Waiter>();
  private flushing = false;
  private lastAtMs = 0;
  private readonly now: () => number;
  private readonly holdMs: number;

  constructor(private readonly options: PolicyChangesOptions) {
    this.now = options.now ?? Date.now;
    this.holdMs = options.holdMs ?? HOLD_MS;
  }

  /** From now on changes are real ones (called once the informers have listed: their first list is not a change). */
  begin(): void {
    this.coveredFromMs ??= this.now();
  }

  /** Records a change (once begun); true when recorded. */
  record(namespace: string, serviceAccount: string | undefined): boolean {
    if (this.coveredFromMs === undefined) return false;
    // Strictly increasing: a poll's cursor is the last change it was told of, and one recorded in
    // the same millisecond after the answer must still come after it.
    const at = Math.max(this.now(), this.lastAtMs + 1);
    this.lastAtMs = at;
    this.log.push({ atMs: at, change: serviceAccount === undefined ? { namespace } : { namespace, serviceAccount } });
    this.expire(at);
    // Waiters are looked at once per turn of the event loop, however many changes a turn brings.
    if (!this.flushing && this.waiters.size > 0) {
      this.flushing = true;
      setImmediate(() => this.flush());
    }
    return true;
  }

  /** The changes for `node`'s agent after `since` (undefined: its first poll), at once if any, else after the hold. */
  wait(node: string, since: number | undefined): Promise<WireChanges> {
    const now = this.answer(node, since);
    if (since === undefined || now.reset || now.changes.length > 0) return Promise.resolve(now);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        node,
        since,
        resolve,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          resolve(this.answer(node, since));
        }, this.holdMs),
      };
      this.waiters.add(waiter);
    });
  }

  /** Answers every held poll now (the replica is stopping: agents poll another). */
  close(): void {
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.resolve(this.answer(w.node, w.since));
    }
    this.waiters.clear();
  }

  held(): number {
    return this.waiters.size;
  }

  private flush(): void {
    this.flushing = false;
    for (const w of this.waiters) {
      const answer = this.answer(w.node, w.since);
      if (!answer.reset && answer.changes.length === 0) continue;
      clearTimeout(w.timer);
      this.waiters.delete(w);
      w.resolve(answer);
    }
  }

  /**
   * `now` in the answer is the agent's next `since`: the broker's clock when nothing was found,
   * else the last change told plus SLACK_MS, so that the next poll starts right after it (not
   * SLACK_MS before the answer, which would tell the same change again at once, poll after poll).
   */
  private answer(node: string, since: number | undefined): WireChanges {
    const now = this.now();
    // A first poll: the agent has just asked about its pods; what changed while it did is covered by the slack.
    const from = (since ?? now) - SLACK_MS;
    // `since` before this replica began recording (or before what it still keeps): it cannot say.
    if (this.coveredFromMs === undefined || (since !== undefined && since < this.coveredFromMs)) return { now, reset: since !== undefined, changes: [] };
    const seen = new Set<string>();
    const changes: WireChange[] = [];
    let lastAt = 0;
    for (let i = this.log.length - 1; i >= this.head; i--) {
      const r = this.log[i]!;
      if (r.atMs <= from) break;
      if (!this.options.hasPodsOn(node, r.change.namespace, r.change.serviceAccount)) continue;
      lastAt = Math.max(lastAt, r.atMs);
      const key = `${r.change.namespace}/${r.change.serviceAccount ?? ''}`;
      if (seen.has(key)) continue;
      seen.add(key);
      changes.push(r.change);
    }
    if (changes.length === 0) return { now, reset: false, changes };
    // More than an answer should carry (a mass relabelling): the agent asks about every pod instead.
    if (changes.length > MAX_CHANGES) return { now, reset: true, changes: [] };
    return { now: lastAt + SLACK_MS, reset: false, changes };
  }

  private expire(now: number): void {
    const cutoff = now - KEEP_MS;
    while (this.head < this.log.length && this.log[this.head]!.atMs < cutoff) {
      this.coveredFromMs = Math.max(this.coveredFromMs ?? 0, this.log[this.head]!.atMs);
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.log.length) {
      this.log.splice(0, this.head);
      this.head = 0;
    }
  }
}
