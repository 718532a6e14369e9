/**
 * Token verdicts, cached by token hash: a token is reviewed by the API server once, then its
 * verdict is served from memory until the token expires (valid) or for a short while (refused).
 * Concurrent requests with the same token share one review (a Map of promises); reviews of
 * distinct tokens are limited in number at once, and a full queue is refused rather than grown.
 *
 * What a flood of tokens can do is bounded three ways (the second adversarial review, issue 19):
 * a token whose signature is not the API server's is refused from memory and never reviewed
 * (signing-keys.ts); refusals are cached apart from valid verdicts, so a flood can evict only
 * refusals, never a pod's good verdict; and reviews are rate-limited per claimed pod, so one
 * pod's tokens cannot take every review slot. Both caches are bounded (oldest first out) and a
 * pod's entries go when the pod goes.
 */
import { InvalidToken, TokenReviewUnavailable, TooManyTokenReviews } from '../errors.js';
import type { ReviewOutcome } from '../kube/token-review.js';
import type { BoundClaims } from './bearer.js';
import type { SignatureCheck } from './signing-keys.js';

/** Who a valid token stands for. */
export interface TokenIdentity {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly podName: string;
  readonly podUid: string;
  readonly expMs: number;
}

export interface Verdict {
  readonly identity: TokenIdentity | undefined;
  readonly error: InvalidToken | undefined;
  readonly untilMs: number;
  /** The access key last served for this token: the audit line is written once per new key. */
  servedAccessKeyId?: string;
  /** Set when the verdict leaves the cache (its pod went, or the bound evicted it): never served again. */
  dropped?: boolean;
}

/** `forged`: refused on its signature, no review asked; `limited`: the claimed pod's review budget is spent. */
export type ReviewOutcomeLabel = 'authenticated' | 'refused' | 'error' | 'forged' | 'limited';

export interface TokenReviewsOptions {
  readonly review: (token: string, audiences: readonly string[]) => Promise<ReviewOutcome>;
  readonly audience: string;
  readonly now?: () => number;
  /** Valid verdicts kept (10,000). */
  readonly maxEntries?: number;
  /** Refusals kept (10,000), in their own table: a flood of bad tokens evicts only refusals. */
  readonly maxRefused?: number;
  /** How long a refused token stays refused without asking again. */
  readonly refusedTtlMs?: number;
  /** The signature check before any review (signing-keys.ts); without it every token is reviewed. */
  readonly checkSignature?: (token: string) => Promise<SignatureCheck>;
  /** Reviews per claimed pod: a burst, then one per interval (a pod's token rotates every few minutes at most). */
  readonly podReviewBurst?: number;
  readonly podReviewIntervalMs?: number;
  readonly maxInFlight?: number;
  readonly maxQueued?: number;
  readonly onReview?: (outcome: ReviewOutcomeLabel) => void;
}

export class TokenReviews {
  private readonly verdicts = new Map<string, Verdict>();
  private readonly refusals = new Map<string, Verdict>();
  /** Per claimed pod uid: review credit left and when it was last counted. */
  private readonly budgets = new Map<string, { credit: number; atMs: number }>();
  private readonly inflight = new Map<string, Promise<Verdict>>();
  private readonly queue: Array<() => void> = [];
  private running = 0;
  private readonly now: () => number;

  constructor(private readonly options: TokenReviewsOptions) {
    this.now = options.now ?? Date.now;
  }

  /** The cached verdict for this token hash, if still current; synchronous (the hot path). */
  cached(hash: string): Verdict | undefined {
    const v = this.verdicts.get(hash) ?? this.refusals.get(hash);
    if (v === undefined) return undefined;
    if (this.now() < v.untilMs) return v;
    this.drop(hash, v);
    return undefined;
  }

  /** The verdict for a token: cached, or one review shared by every concurrent caller. */
  verdict(token: string, hash: string, claims: BoundClaims): Promise<Verdict> {
    const known = this.cached(hash);
    if (known !== undefined) return Promise.resolve(known);
    let flight = this.inflight.get(hash);
    if (flight === undefined) {
      flight = this.review(token, hash, claims);
      this.inflight.set(hash, flight);
      const clear = (): void => {
        this.inflight.delete(hash);
      };
      flight.then(clear, clear);
    }
    return flight;
  }

  /** Forget every verdict for a pod (it was deleted or recreated). */
  dropPod(podUid: string): void {
    for (const [hash, v] of this.verdicts) if (v.identity?.podUid === podUid) this.drop(hash, v);
    this.budgets.delete(podUid);
  }

  /** Still cached and current (for a verdict held elsewhere, e.g. per connection). */
  isCurrent(v: Verdict): boolean {
    return v.dropped !== true && this.now() < v.untilMs;
  }

  /** Valid verdicts cached. */
  size(): number {
    return this.verdicts.size;
  }

  refusedSize(): number {
    return this.refusals.size;
  }

  private async review(token: string, hash: string, claims: BoundClaims): Promise<Verdict> {
    const refused = (why: string): Verdict => ({ identity: undefined, error: new InvalidToken(why), untilMs: Math.min(claims.expMs, this.now() + (this.options.refusedTtlMs ?? 30_000)) });
    const signature = await this.options.checkSignature?.(token); // TokenReviewUnavailable: not cached
    if (signature !== undefined && !signature.valid) {
      this.options.onReview?.('forged');
      const verdict = refused(signature.reason);
      // An unknown kid may be known after the next refetch: that refusal is not remembered.
      if (signature.lasting) this.remember(hash, verdict);
      return verdict;
    }
    this.spendBudget(claims);
    await this.slot();
    let outcome: ReviewOutcome;
    try {
      outcome = await this.options.review(token, [this.options.audience]);
    } catch (err) {
      this.options.onReview?.('error');
      // Not cached: the next request asks again.
      throw new TokenReviewUnavailable((err as Error).message);
    } finally {
      this.release();
    }
    let verdict: Verdict;
    if (!outcome.authenticated) {
      verdict = refused(`the API server refused it (${outcome.error})`);
    } else if (outcome.username !== `system:serviceaccount:${claims.namespace}:${claims.serviceAccount}` || outcome.podName !== claims.podName || outcome.podUid !== claims.podUid) {
      verdict = refused('the API server reviewed it as another identity than it claims');
    } else if (!outcome.audiences.includes(this.options.audience)) {
      verdict = refused(`the API server did not confirm the audience ${this.options.audience}`);
    } else {
      verdict = { identity: { namespace: claims.namespace, serviceAccount: claims.serviceAccount, podName: claims.podName, podUid: claims.podUid, expMs: claims.expMs }, error: undefined, untilMs: claims.expMs };
    }
    this.options.onReview?.(verdict.identity === undefined ? 'refused' : 'authenticated');
    this.remember(hash, verdict);
    return verdict;
  }

  private remember(hash: string, verdict: Verdict): void {
    const table = verdict.identity === undefined ? this.refusals : this.verdicts;
    const max = verdict.identity === undefined ? (this.options.maxRefused ?? 10_000) : (this.options.maxEntries ?? 10_000);
    // Maps iterate in insertion order: the first entries are the oldest.
    for (const [key, old] of table) {
      if (table.size < max) break;
      this.drop(key, old);
    }
    table.set(hash, verdict);
  }

  private drop(hash: string, v: Verdict): void {
    v.dropped = true;
    (v.identity === undefined ? this.refusals : this.verdicts).delete(hash);
  }

  /**
   * A token bucket per claimed pod (its uid, which claimsOf and the informer have already tied to
   * a live pod of this node, so the table is as big as the node's pods). Only well-signed tokens
   * get here: a pod's budget is spent by tokens the API server issued for it, nobody else's.
   */
  private spendBudget(claims: BoundClaims): void {
    const burst = this.options.podReviewBurst ?? 5;
    const intervalMs = this.options.podReviewIntervalMs ?? 10_000;
    const now = this.now();
    const b = this.budgets.get(claims.podUid) ?? { credit: burst, atMs: now };
    b.credit = Math.min(burst, b.credit + (now - b.atMs) / intervalMs);
    b.atMs = now;
    this.budgets.set(claims.podUid, b);
    if (b.credit < 1) {
      this.options.onReview?.('limited');
      throw new TooManyTokenReviews(`${claims.namespace}/${claims.podName}`, Math.ceil(((1 - b.credit) * intervalMs) / 1000));
    }
    b.credit -= 1;
  }

  private slot(): Promise<void> {
    if (this.running < (this.options.maxInFlight ?? 8)) {
      this.running++;
      return Promise.resolve();
    }
    if (this.queue.length >= (this.options.maxQueued ?? 256)) return Promise.reject(new TokenReviewUnavailable('too many token reviews waiting'));
    return new Promise((resolve) => this.queue.push(() => {
      this.running++;
      resolve();
    }));
  }

  private release(): void {
    this.running--;
    this.queue.shift()?.();
  }
}
