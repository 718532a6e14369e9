/**
 * IMDSv2 tokens for pods. A token PUT is forwarded to the real metadata service (EC2's TTL and
 * X-Forwarded-For rules apply), but the pod gets a token of podiam's own that stands for the real
 * one: a real token is bound to the instance, not to the caller, and one held by a pod would open
 * the node's metadata (its role's credentials included) whenever podiam's rule is not in place —
 * during a rollout, say — even on nodes that require IMDSv2 with a hop limit of 1.
 * Tokens are also bound to the pod IP that asked for them.
 */
import { randomBytes } from 'node:crypto';

interface Held {
  readonly upstream: string;
  readonly podIp: string;
  readonly expiresMs: number;
}

export class TokenBroker {
  private readonly tokens = new Map<string, Held>();
  private readonly perIp = new Map<string, number>();

  constructor(
    private readonly options: { maxTokens?: number; maxPerIp?: number; now?: () => number } = {},
  ) {}

  /** A pod token standing for `upstream`, valid for ttlSeconds, for `podIp` only. */
  wrap(upstream: string, ttlSeconds: number, podIp: string): string {
    const now = this.now();
    const maxTokens = this.options.maxTokens ?? 20_000;
    const maxPerIp = this.options.maxPerIp ?? 64;
    if (this.tokens.size >= maxTokens) this.sweep(now);
    if (this.tokens.size >= maxTokens) this.evict((held) => held !== undefined);
    if ((this.perIp.get(podIp) ?? 0) >= maxPerIp) this.evict((held) => held.podIp === podIp);
    // 56 characters, as EC2's tokens are.
    const token = randomBytes(42).toString('base64');
    this.tokens.set(token, { upstream, podIp, expiresMs: now + ttlSeconds * 1000 });
    this.perIp.set(podIp, (this.perIp.get(podIp) ?? 0) + 1);
    return token;
  }

  /** The real token behind a pod's token, if it is one of ours, unexpired, and the pod's own. */
  unwrap(token: string, podIp: string): string | undefined {
    const held = this.tokens.get(token);
    if (held === undefined || held.podIp !== podIp) return undefined;
    if (held.expiresMs <= this.now()) {
      this.delete(token, held);
      return undefined;
    }
    return held.upstream;
  }

  size(): number {
    return this.tokens.size;
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  private sweep(now: number): void {
    for (const [token, held] of this.tokens) if (held.expiresMs <= now) this.delete(token, held);
  }

  /** Drops the oldest token matching `which` (a Map iterates in insertion order). */
  private evict(which: (held: Held) => boolean): void {
    for (const [token, held] of this.tokens) {
      if (which(held)) {
        this.delete(token, held);
        return;
      }
    }
  }

  private delete(token: string, held: Held): void {
    this.tokens.delete(token);
    const n = (this.perIp.get(held.podIp) ?? 1) - 1;
    if (n <= 0) this.perIp.delete(held.podIp);
    else this.perIp.set(held.podIp, n);
  }
}
