/**
 * IMDSv2 tokens for pods. A token PUT is forwarded to the real metadata service (EC2's TTL and
 * X-Forwarded-For rules apply), but the pod gets a token of podiam's own that stands for the real
 * one: a real token is bound to the instance, not to the caller, and one held by a pod would open
 * the node's metadata (its role's credentials included) whenever podiam's rule is not in place —
 * during a rollout, say — even on nodes that require IMDSv2 with a hop limit of 1.
 *
 * A token is bound to its caller: the source IP and the pod's UID (a pod that gets a deleted
 * pod's IP does not inherit its tokens). The table is bounded per caller: a caller past its cap
 * loses its own oldest token, never another's, and when the whole table is full a new token is
 * refused (503) rather than evicting anyone. A pod's tokens go when the pod goes (dropCaller, on
 * the index's onPodGone): short-lived pods cannot fill the table with tokens nobody can use for
 * hours (the second adversarial review: 1,030 pods x 64 tokens of 6 h, then deleted, left every
 * caller with 503 for 6 h). Tokens live in memory only: after a restart they are
 * unknown, and a GET carrying one is 401, as EC2 answers an expired token; SDKs then PUT for a new one.
 */
import { randomBytes } from 'node:crypto';
import { TokenTableFull } from '../errors.js';

/** Who a token belongs to: the source address and a stable caller id (the pod UID, or `node`). */
export interface TokenHolder {
  readonly ip: string;
  readonly id: string;
}

interface Held {
  readonly upstream: string;
  readonly ip: string;
  readonly id: string;
  readonly expiresMs: number;
}

export class TokenBroker {
  private readonly tokens = new Map<string, Held>();
  /** Per caller id: its tokens, oldest first (a Set iterates in insertion order). */
  private readonly byCaller = new Map<string, Set<string>>();

  constructor(
    private readonly options: { maxTokens?: number; maxPerCaller?: number; now?: () => number } = {},
  ) {}

  /** A pod token standing for `upstream`, valid for ttlSeconds, for `holder` only. */
  wrap(upstream: string, ttlSeconds: number, holder: TokenHolder): string {
    const now = this.now();
    const maxTokens = this.options.maxTokens ?? 65_536;
    const maxPerCaller = this.options.maxPerCaller ?? 64;
    let mine = this.byCaller.get(holder.id);
    if (mine !== undefined && mine.size >= maxPerCaller) {
      // Its own oldest goes: an SDK holds one token for hours; the old ones are of exited processes.
      const oldest = mine.values().next().value as string;
      this.delete(oldest);
    }
    if (this.tokens.size >= maxTokens) this.sweep(now);
    if (this.tokens.size >= maxTokens) throw new TokenTableFull(maxTokens);
    // 56 characters, as EC2's tokens are.
    const token = randomBytes(42).toString('base64');
    this.tokens.set(token, { upstream, ip: holder.ip, id: holder.id, expiresMs: now + ttlSeconds * 1000 });
    mine = this.byCaller.get(holder.id);
    if (mine === undefined) this.byCaller.set(holder.id, (mine = new Set()));
    mine.add(token);
    return token;
  }

  /** The real token behind a pod's token, if it is one of ours, unexpired, and this caller's own. */
  unwrap(token: string, holder: TokenHolder): string | undefined {
    const held = this.tokens.get(token);
    if (held === undefined || held.ip !== holder.ip || held.id !== holder.id) return undefined;
    if (held.expiresMs <= this.now()) {
      this.delete(token);
      return undefined;
    }
    return held.upstream;
  }

  size(): number {
    return this.tokens.size;
  }

  /** Every token of this caller goes (its pod was deleted): no one can use them any more. */
  dropCaller(id: string): void {
    const mine = this.byCaller.get(id);
    if (mine === undefined) return;
    for (const token of [...mine]) this.delete(token);
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  private sweep(now: number): void {
    for (const [token, held] of this.tokens) if (held.expiresMs <= now) this.delete(token);
  }

  private delete(token: string): void {
    const held = this.tokens.get(token);
    if (held === undefined) return;
    this.tokens.delete(token);
    const mine = this.byCaller.get(held.id);
    mine?.delete(token);
    if (mine?.size === 0) this.byCaller.delete(held.id);
  }
}
