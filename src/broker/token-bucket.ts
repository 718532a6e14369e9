/**
 * --sts-qps: the broker's background AssumeRole calls (start-up prefetch of the whole cluster,
 * refresh ahead) go out at a bounded rate, so a cold start of a large cluster cannot trip STS's
 * request quota. A token bucket: `ratePerSecond` tokens a second, at most `burst` saved up.
 * A call a pod waits on never waits here: it takes a token if there is one and goes; a queued
 * background call that a pod comes to wait on (its Urgency promoted) leaves the queue at once.
 * Time comes from an injected Clock, so tests never sleep.
 */
import type { Clock, TimerHandle } from '../aws/credential-cache.js';
import { systemClock } from '../aws/credential-cache.js';
import type { RoleAssumer, Urgency } from '../aws/sts.js';

export interface TokenBucketOptions {
  readonly ratePerSecond: number;
  /** Tokens saved up at most (default: one second's worth, at least 1). */
  readonly burst?: number;
  readonly clock?: Clock;
}

export class TokenBucket {
  private tokens: number;
  private lastMs: number;
  private readonly burst: number;
  private readonly clock: Clock;
  private readonly waiting: Array<() => void> = [];
  private timer: TimerHandle | undefined;

  constructor(private readonly options: TokenBucketOptions) {
    this.clock = options.clock ?? systemClock;
    this.burst = Math.max(1, options.burst ?? Math.floor(options.ratePerSecond));
    this.tokens = this.burst;
    this.lastMs = this.clock.now();
  }

  /** Background callers queued for a token. */
  queued(): number {
    return this.waiting.length;
  }

  /** Take a token now if there is one (an urgent call goes anyway, a token or not). */
  tryTake(): boolean {
    this.refill();
    if (this.tokens >= 1 && this.waiting.length === 0) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }

  /**
   * Resolves when a token is taken, first come first served; at once when `urgency` is urgent
   * or becomes so while waiting (then no token is taken: a pod is never held back).
   */
  take(urgency?: Urgency): Promise<void> {
    if (urgency?.urgent === true) {
      this.tryTake();
      return Promise.resolve();
    }
    if (this.tryTake()) return Promise.resolve();
    return new Promise((resolve) => {
      let done = false;
      const go = (): void => {
        if (done) return;
        done = true;
        const at = this.waiting.indexOf(go);
        if (at !== -1) this.waiting.splice(at, 1);
        resolve();
      };
      this.waiting.push(go);
      urgency?.whenPromoted(go);
      this.arm();
    });
  }

  stop(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private refill(): void {
    const now = this.clock.now();
    const elapsed = Math.max(0, now - this.lastMs);
    this.lastMs = now;
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.options.ratePerSecond) / 1000);
  }

  /** Wake when the next token is due, hand it to the first waiter, and go on while any wait. */
  private arm(): void {
    if (this.timer !== undefined || this.waiting.length === 0) return;
    this.refill();
    const dueMs = this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) * 1000) / this.options.ratePerSecond);
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      this.refill();
      while (this.tokens >= 1 && this.waiting.length > 0) {
        this.tokens -= 1;
        this.waiting[0]!();
      }
      this.arm();
    }, dueMs);
    this.timer.unref?.();
  }
}

/** An assumer whose background calls wait for a token of the bucket; urgent ones never wait. */
export function paced(assumer: RoleAssumer, bucket: TokenBucket): RoleAssumer {
  return {
    // `using`: a chained role's second hop signs with the first hop's credentials (role-chain.ts).
    assume: async (request, urgency, using) => {
      await bucket.take(urgency);
      return assumer.assume(request, urgency, using);
    },
  };
}
