/**
 * Credentials per (role ARN, external id, session name), kept fresh in the background so the
 * request path answers from memory. Concurrent misses share one STS call (a Map of promises).
 * Time comes from an injected Clock, so refresh tests never sleep.
 *
 * Bounded against a pod that keeps changing its own annotations (every session-name or role
 * value is a new key): entries no live pod wants are dropped (want()), and each pod may open only
 * a few new sessions a minute (a token bucket per pod; a prefetch over it waits, last value wins).
 */
import type { RoleRequest } from '../roles.js';
import type { AwsCredentials, RoleAssumer } from './sts.js';
import { StsError, Urgency } from './sts.js';
import { StsUnavailable } from '../errors.js';

export interface TimerHandle {
  unref?(): unknown;
}
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface IssuedCredentials {
  readonly request: RoleRequest;
  readonly accessKeyId: string;
  readonly issuedMs: number;
  readonly expirationMs: number;
  /** The EC2 answer, rendered once per credentials, never per request. */
  readonly body: Buffer;
  /** As STS gave them: what a chained role's second AssumeRole signs with (role-chain.ts). */
  readonly credentials: AwsCredentials;
}

export type IssueCause = 'request' | 'prefetch' | 'refresh';

/** Opened per pod before it is throttled, and one more every newSessionIntervalMs after. */
export const NEW_SESSION_BURST = 3;
export const NEW_SESSION_INTERVAL_MS = 20_000;
/** The budget table's size at which it is first swept of full budgets (see pruneAt). */
const BUDGETS_SWEEP_MIN = 4096;

export interface CacheEvents {
  issued(creds: IssuedCredentials, cause: IssueCause): void;
  failed(request: RoleRequest, cause: IssueCause, err: StsUnavailable, retryInMs: number | undefined): void;
  lookup(result: 'hit' | 'miss' | 'stale'): void;
  /** A pod was over its new-session budget: its prefetch waits ('prefetch') or its request is refused ('request'). */
  throttled(request: RoleRequest, cause: 'request' | 'prefetch'): void;
}

export interface CredentialCacheOptions {
  readonly assumer: RoleAssumer;
  readonly clock?: Clock;
  readonly render: (creds: AwsCredentials, issuedMs: number) => Buffer;
  /** Whether a live pod still uses this request; unused entries are not refreshed. */
  readonly isWanted?: (request: RoleRequest) => boolean;
  readonly events?: Partial<CacheEvents>;
  /**
   * Served credentials keep at least this long to live while STS is healthy. botocore refreshes
   * at 15 minutes left; serving less makes every SDK call come back (kiam #41).
   */
  readonly minRemainingMs?: number;
  /** Extra lead on top of minRemainingMs, room for refresh retries. */
  readonly refreshMarginMs?: number;
  readonly retryBaseMs?: number;
  /** How long a request holding stale-but-valid credentials waits for fresh ones. */
  readonly staleWaitMs?: number;
  readonly retryMaxMs?: number;
  /**
   * STS refused (RoleNotTrusted, RoleInvalid: status 403): the refusal is answered from memory
   * for exactly this long, and only then is STS asked again (kube2iam's --iam-role-error-ttl).
   */
  readonly refusalTtlMs?: number;
  readonly random?: () => number;
  /** New sessions (first fetch of a key) a pod may open at once; NEW_SESSION_BURST by default. */
  readonly newSessionBurst?: number;
  /** Then one more per this many ms; NEW_SESSION_INTERVAL_MS by default. */
  readonly newSessionIntervalMs?: number;
}

/** A pod's budget of new sessions, and the prefetch waiting for it (its latest request wins). */
interface PodBudget {
  tokens: number;
  atMs: number;
  waiting: RoleRequest | undefined;
  timer: TimerHandle | undefined;
}

interface Entry {
  readonly key: string;
  readonly request: RoleRequest;
  current: IssuedCredentials | undefined;
  /** When `current` is due for refresh: until then it is served without a second thought. */
  refreshAtMs: number;
  inflight: Promise<IssuedCredentials> | undefined;
  /** The in-flight call's place in the STS queue: a pod that joins a background call promotes it. */
  urgency: Urgency | undefined;
  timer: TimerHandle | undefined;
  usedSinceIssue: boolean;
  failures: number;
  /** After a failed fetch with nothing to serve, callers get this error until retryAtMs. */
  lastError: StsUnavailable | undefined;
  retryAtMs: number;
  /** STS was asked for this key at least once (the first time spends the pod's budget). */
  attempted: boolean;
  /** Removed from the cache (nobody wants it): an in-flight call that settles later schedules nothing. */
  dropped: boolean;
}

const MINUTE = 60_000;
/** Never hand out credentials this close to expiry. */
const EXPIRY_GUARD_MS = 10_000;

export function cacheKey(r: RoleRequest): string {
  return `${r.roleArn}\n${r.externalId ?? ''}\n${r.sessionName}${r.tags === undefined ? '' : `\n${r.tags.map(([k, v]) => `${k}=${v}`).join('\n')}`}${r.sourceRole === undefined ? '' : `\nvia\n${cacheKey(r.sourceRole)}`}`;
}

/** Served credentials keep at least this long to live while STS is healthy (botocore refreshes at 15 minutes). */
export const MIN_REMAINING_MS = 15 * 60_000;
/** Extra lead for refresh retries. */
export const REFRESH_MARGIN_MS = 5 * 60_000;

/** How long before expiry credentials of this lifetime are refreshed: the floor plus a margin, or half their life if shorter. */
export function refreshLeadMs(lifetimeMs: number, minRemainingMs = MIN_REMAINING_MS, marginMs = REFRESH_MARGIN_MS): number {
  return Math.min(minRemainingMs + marginMs, lifetimeMs / 2);
}

export class CredentialCache {
  private readonly entries = new Map<string, Entry>();
  /** The entry for a request object already seen (RoleResolver hands out the same object per pod): no key string per lookup. */
  private readonly byRequest = new WeakMap<RoleRequest, Entry>();
  private readonly clock: Clock;
  private readonly minRemainingMs: number;
  private readonly refreshMarginMs: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly random: () => number;
  private readonly staleWaitMs: number;
  private readonly newSessionBurst: number;
  private readonly newSessionIntervalMs: number;
  /** Pod (an id its caller chooses, e.g. the uid) -> the key it wants now. */
  private readonly podWants = new Map<string, string>();
  /** Key -> how many live pods want it. A key reaching 0 is dropped at once. */
  private readonly wantedBy = new Map<string, number>();
  /** By RoleRequest.pod (namespace/name). */
  private readonly budgets = new Map<string, PodBudget>();
  /**
   * The budget table is swept when it reaches this size, then this becomes twice what the sweep
   * left: a sweep per new pod past a fixed size was quadratic when thousands of pods got their
   * first session within one refill interval (a broker starting on a 100,000-pod cluster spent
   * ~100 s of CPU in it before it was ready).
   */
  private pruneAt = BUDGETS_SWEEP_MIN;
  private stopped = false;

  constructor(private readonly options: CredentialCacheOptions) {
    this.clock = options.clock ?? systemClock;
    this.minRemainingMs = options.minRemainingMs ?? MIN_REMAINING_MS;
    this.refreshMarginMs = options.refreshMarginMs ?? REFRESH_MARGIN_MS;
    this.retryBaseMs = options.retryBaseMs ?? 1000;
    this.retryMaxMs = options.retryMaxMs ?? MINUTE;
    this.random = options.random ?? Math.random;
    this.staleWaitMs = options.staleWaitMs ?? 250;
    this.newSessionBurst = options.newSessionBurst ?? NEW_SESSION_BURST;
    this.newSessionIntervalMs = options.newSessionIntervalMs ?? NEW_SESSION_INTERVAL_MS;
  }

  /**
   * What a live pod wants now (undefined: nothing, e.g. it is gone). O(1) per call: a key no live
   * pod wants any more is dropped with its timer, so a pod changing its annotations leaves
   * nothing behind. Keys never named here (pods the caller does not track) live out their time.
   */
  want(podId: string, request: RoleRequest | undefined): void {
    const key = request === undefined ? undefined : cacheKey(request);
    const old = this.podWants.get(podId);
    if (old === key) return;
    if (key === undefined) this.podWants.delete(podId);
    else {
      this.podWants.set(podId, key);
      this.wantedBy.set(key, (this.wantedBy.get(key) ?? 0) + 1);
    }
    if (old === undefined) return;
    const left = (this.wantedBy.get(old) ?? 1) - 1;
    if (left > 0) {
      this.wantedBy.set(old, left);
      return;
    }
    this.wantedBy.delete(old);
    const entry = this.entries.get(old);
    if (entry !== undefined) this.drop(entry);
  }

  /** Credentials for the request: from memory when fresh, else one shared STS call. */
  async get(request: RoleRequest): Promise<IssuedCredentials> {
    const entry = this.entry(request);
    entry.usedSinceIssue = true;
    const now = this.clock.now();
    const current = entry.current;
    if (current !== undefined) {
      const remaining = current.expirationMs - now;
      if (this.isFresh(entry, current, now) || (entry.inflight === undefined && now < entry.retryAtMs && remaining > EXPIRY_GUARD_MS)) {
        this.options.events?.lookup?.('hit');
        return current;
      }
      if (remaining > EXPIRY_GUARD_MS) {
        // Stale but valid (its refresh is due or failing): try briefly for fresh ones, else serve
        // these; a slow STS must not make the pod wait when valid credentials are at hand.
        this.options.events?.lookup?.('stale');
        return this.freshOr(current, this.fetch(entry, 'request'));
      }
    }
    this.options.events?.lookup?.('miss');
    if (entry.inflight === undefined && entry.lastError !== undefined && now < entry.retryAtMs) throw entry.lastError;
    if (entry.inflight === undefined && !entry.attempted) {
      const waitMs = this.spend(request.pod, now, 0);
      if (waitMs > 0) {
        this.options.events?.throttled?.(request, 'request');
        // Not remembered as the entry's error: the budget, not STS, said no. The empty entry goes.
        this.drop(entry);
        throw new StsUnavailable(request.roleArn, `pod ${request.pod} opened too many new STS sessions (its role or session-name annotation keeps changing); retry in ${Math.ceil(waitMs / 1000)} s`);
      }
    }
    return this.fetch(entry, 'request');
  }

  /**
   * For another broker replica (src/broker/peers.ts): credentials that keep at least minValidMs to
   * live, from memory, else fetched now (one flight, shared with this replica's own refresh or
   * prefetch of them). urgent: a pod waits on the peer, so the fetch is not paced.
   */
  lasting(request: RoleRequest, minValidMs: number, urgent: boolean): Promise<IssuedCredentials> {
    const entry = this.entry(request);
    const now = this.clock.now();
    const current = entry.current;
    if (current !== undefined && current.expirationMs - now >= minValidMs) {
      this.options.events?.lookup?.('hit');
      return Promise.resolve(current);
    }
    if (entry.inflight === undefined && entry.lastError !== undefined && now < entry.retryAtMs) return Promise.reject(entry.lastError);
    return this.fetch(entry, urgent ? 'request' : current === undefined ? 'prefetch' : 'refresh');
  }

  private freshOr(current: IssuedCredentials, flight: Promise<IssuedCredentials>): Promise<IssuedCredentials> {
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(() => resolve(current), this.staleWaitMs);
      flight.then(
        (fresh) => {
          this.clock.clearTimeout(timer);
          resolve(fresh);
        },
        () => {
          this.clock.clearTimeout(timer);
          resolve(current);
        },
      );
    });
  }

  /** Fresh credentials from memory, synchronously, or undefined (then use get()). Counts as a hit. */
  peek(request: RoleRequest): IssuedCredentials | undefined {
    const entry = this.find(request);
    const current = entry?.current;
    if (entry === undefined || current === undefined || !this.isFresh(entry, current, this.clock.now())) return undefined;
    entry.usedSinceIssue = true;
    this.options.events?.lookup?.('hit');
    return current;
  }

  /** Start fetching in the background (a pod with a role appeared). Never throws. */
  prefetch(request: RoleRequest): void {
    const now = this.clock.now();
    const known = this.find(request);
    if (known !== undefined) {
      const current = known.current;
      if (current !== undefined && now < known.refreshAtMs) return;
      if (known.inflight !== undefined || now < known.retryAtMs) return;
    }
    if (known === undefined || !known.attempted) {
      // A new session: within the pod's budget now, else later, for whatever it wants by then.
      const waitMs = this.spend(request.pod, now, 1);
      if (waitMs > 0) {
        this.options.events?.throttled?.(request, 'prefetch');
        this.prefetchLater(request, waitMs);
        return;
      }
    }
    this.fetch(known ?? this.entry(request), 'prefetch').catch(() => undefined);
  }

  /** A view without secrets, for /debug/store. */
  snapshot(): Array<Record<string, unknown>> {
    return [...this.entries.values()].map((e) => ({
      roleArn: e.request.roleArn,
      sessionName: e.request.sessionName,
      externalId: e.request.externalId !== undefined,
      accessKeyId: e.current?.accessKeyId,
      expiration: e.current ? new Date(e.current.expirationMs).toISOString() : undefined,
      refreshing: e.inflight !== undefined,
      failures: e.failures,
    }));
  }

  size(): number {
    return this.entries.size;
  }

  /**
   * Time left on the soonest-expiring credentials podiam would serve, or undefined when it holds
   * none: at least minRemainingMs while STS is healthy (short sessions: half their life). Entries
   * nobody uses any more live out their time unrefreshed, so they count only while healthy.
   */
  servedRemainingMs(): number | undefined {
    const now = this.clock.now();
    let min: number | undefined;
    for (const e of this.entries.values()) {
      if (e.current === undefined) continue;
      const remaining = e.current.expirationMs - now;
      if (min !== undefined && remaining >= min) continue;
      // The cheap test first: keepRefreshing may ask the isWanted option.
      if (remaining < this.minRemainingMs && !this.keepRefreshing(e)) continue;
      min = remaining;
    }
    return min;
  }

  stop(): void {
    this.stopped = true;
    for (const e of this.entries.values()) this.clearTimer(e);
    for (const b of this.budgets.values()) if (b.timer !== undefined) this.clock.clearTimeout(b.timer);
  }

  /**
   * Takes one new session from the pod's budget: 0 when taken, else how long until one is free.
   * Refills at one per newSessionIntervalMs up to newSessionBurst, so a pod's first requests are
   * never held back. Prefetches leave `reserve` sessions for the pod's own requests: after a
   * burst of annotation changes the pod's request for its latest value is still answered at once.
   */
  private spend(pod: string, now: number, reserve: number): number {
    let b = this.budgets.get(pod);
    if (b === undefined) {
      if (this.budgets.size >= this.pruneAt) {
        this.pruneBudgets(now);
        this.pruneAt = Math.max(BUDGETS_SWEEP_MIN, this.budgets.size * 2);
      }
      b = { tokens: this.newSessionBurst, atMs: now, waiting: undefined, timer: undefined };
      this.budgets.set(pod, b);
    }
    this.refill(b, now);
    if (b.tokens >= 1 + reserve) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, b.atMs + (1 + reserve - b.tokens) * this.newSessionIntervalMs - now);
  }

  private refill(b: PodBudget, now: number): void {
    const earned = Math.floor((now - b.atMs) / this.newSessionIntervalMs);
    if (earned <= 0) return;
    b.tokens = Math.min(this.newSessionBurst, b.tokens + earned);
    b.atMs = b.tokens >= this.newSessionBurst ? now : b.atMs + earned * this.newSessionIntervalMs;
  }

  /** Budgets back to full with nothing waiting are the same as none: forget them. */
  private pruneBudgets(now: number): void {
    for (const [pod, b] of this.budgets) {
      this.refill(b, now);
      if (b.tokens >= this.newSessionBurst && b.timer === undefined) this.budgets.delete(pod);
    }
  }

  /** One timer per pod; a newer request replaces the waiting one (its last value wins). */
  private prefetchLater(request: RoleRequest, waitMs: number): void {
    const b = this.budgets.get(request.pod)!;
    b.waiting = request;
    if (b.timer !== undefined || this.stopped) return;
    b.timer = this.clock.setTimeout(() => {
      b.timer = undefined;
      const latest = b.waiting;
      b.waiting = undefined;
      // Only if a live pod still wants it: a pod gone or changed again meanwhile costs nothing.
      if (latest !== undefined && this.isWantedRequest(latest)) this.prefetch(latest);
    }, waitMs);
  }

  private isWantedRequest(request: RoleRequest): boolean {
    return (this.wantedBy.get(cacheKey(request)) ?? 0) > 0 || (this.options.isWanted?.(request) ?? false);
  }

  /** Out of the cache now: no timer, never found again; an in-flight call still answers its waiters. */
  private drop(entry: Entry): void {
    entry.dropped = true;
    this.clearTimer(entry);
    if (this.entries.get(entry.key) === entry) this.entries.delete(entry.key);
  }

  /**
   * Served from memory until its refresh is due, and while more than minRemainingMs is left
   * (the background refresh is at work then). Not "15 min left" alone: short sessions never have that.
   */
  private isFresh(entry: Entry, current: IssuedCredentials, now: number): boolean {
    return now < entry.refreshAtMs || current.expirationMs - now >= this.minRemainingMs;
  }

  /** The live entry for a request: by request object when seen before, else by key. */
  private find(request: RoleRequest): Entry | undefined {
    const known = this.byRequest.get(request);
    if (known !== undefined && this.entries.get(known.key) === known) return known;
    const entry = this.entries.get(cacheKey(request));
    if (entry !== undefined) this.byRequest.set(request, entry);
    return entry;
  }

  private entry(request: RoleRequest): Entry {
    let e = this.find(request);
    if (e === undefined) {
      const key = cacheKey(request);
      e = { key, request, current: undefined, refreshAtMs: 0, inflight: undefined, urgency: undefined, timer: undefined, usedSinceIssue: false, failures: 0, lastError: undefined, retryAtMs: 0, attempted: false, dropped: false };
      this.entries.set(key, e);
      this.byRequest.set(request, e);
    }
    return e;
  }

  private fetch(entry: Entry, cause: IssueCause): Promise<IssuedCredentials> {
    if (entry.inflight !== undefined) {
      if (cause === 'request') entry.urgency?.promote();
      return entry.inflight;
    }
    const startedMs = this.clock.now();
    entry.attempted = true;
    // A refresh is background work until the credentials held would be served under
    // minRemainingMs (STS slow or failing, or a broker peer's queue long): then a pod's need.
    const current = entry.current;
    const overdue = cause !== 'request' && current !== undefined && current.expirationMs - startedMs < this.minRemainingMs;
    const urgency = new Urgency(cause === 'request' || overdue);
    entry.urgency = urgency;
    // Through a microtask, so even an assumer that throws synchronously only rejects the flight.
    const flight = Promise.resolve()
      .then(() => this.options.assumer.assume(entry.request, urgency))
      .then(
        (creds) => this.install(entry, creds, startedMs, cause),
        (err: unknown) => {
          throw this.onFailure(entry, err, cause);
        },
      );
    entry.inflight = flight;
    const clear = (): void => {
      if (entry.inflight === flight) entry.inflight = undefined;
    };
    flight.then(clear, clear);
    return flight;
  }

  private install(entry: Entry, creds: AwsCredentials, fetchedMs: number, cause: IssueCause): IssuedCredentials {
    // Credentials another replica held were issued before this fetch: their lifetime (and so the
    // refresh lead, here and on the agents) counts from STS's issue, never later than the fetch.
    const issuedMs = creds.issuedMs === undefined ? fetchedMs : Math.min(creds.issuedMs, fetchedMs);
    const issued: IssuedCredentials = {
      request: entry.request,
      accessKeyId: creds.accessKeyId,
      issuedMs,
      expirationMs: creds.expiration.getTime(),
      body: this.options.render(creds, issuedMs),
      credentials: creds,
    };
    entry.current = issued;
    entry.refreshAtMs = this.refreshAtMs(issued);
    entry.usedSinceIssue = cause === 'request';
    entry.failures = 0;
    entry.lastError = undefined;
    entry.retryAtMs = 0;
    this.options.events?.issued?.(issued, cause);
    this.schedule(entry, entry.refreshAtMs);
    return issued;
  }

  /**
   * When to refresh: early enough that minRemainingMs always holds, with a margin for retries.
   * Short sessions (where that is impossible) refresh at half their life.
   */
  refreshAtMs(issued: Pick<IssuedCredentials, 'issuedMs' | 'expirationMs'>): number {
    return issued.expirationMs - refreshLeadMs(issued.expirationMs - issued.issuedMs, this.minRemainingMs, this.refreshMarginMs);
  }

  private onFailure(entry: Entry, err: unknown, cause: IssueCause): StsUnavailable {
    const error = err instanceof StsUnavailable ? err : new StsUnavailable(entry.request.roleArn, String(err), { cause: err });
    entry.failures += 1;
    const retryable = !(error instanceof StsError) || error.retryable;
    // Exponential backoff with jitter (0.5x..1.5x), so a fleet of nodes does not retry in step.
    const base = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** (entry.failures - 1)) * (retryable ? 1 : 8);
    const refused = error.status === 403 && this.options.refusalTtlMs !== undefined;
    const delay = refused ? this.options.refusalTtlMs! : Math.round(Math.min(this.retryMaxMs * 8, base) * (0.5 + this.random()));
    const now = this.clock.now();
    entry.lastError = error;
    entry.retryAtMs = now + delay;
    const current = entry.current;
    let retryInMs: number | undefined;
    if (current !== undefined && current.expirationMs - EXPIRY_GUARD_MS > now + delay && this.keepRefreshing(entry)) {
      // Still-valid credentials keep being served while the refresh retries.
      retryInMs = delay;
      this.schedule(entry, now + delay);
    } else if (current !== undefined) {
      this.schedule(entry, current.expirationMs - EXPIRY_GUARD_MS);
    } else {
      // Nothing to serve: retry in the background while a live pod wants it, else forget it.
      this.schedule(entry, now + delay);
    }
    this.options.events?.failed?.(entry.request, cause, error, retryInMs);
    return error;
  }

  private keepRefreshing(entry: Entry): boolean {
    return entry.usedSinceIssue || (this.wantedBy.get(entry.key) ?? 0) > 0 || (this.options.isWanted?.(entry.request) ?? false);
  }

  private schedule(entry: Entry, atMs: number): void {
    this.clearTimer(entry);
    if (this.stopped || entry.dropped) return;
    entry.timer = this.clock.setTimeout(() => this.onTimer(entry), Math.max(0, atMs - this.clock.now()));
  }

  private onTimer(entry: Entry): void {
    entry.timer = undefined;
    const current = entry.current;
    const now = this.clock.now();
    if (current !== undefined && current.expirationMs - EXPIRY_GUARD_MS <= now) {
      // Expired: never served again. The entry goes unless a live pod still wants it.
      entry.current = undefined;
    }
    if (entry.current === undefined && entry.lastError !== undefined) {
      // A failed fetch with nothing cached: only a live pod keeps it retrying.
      if ((this.wantedBy.get(entry.key) ?? 0) > 0 || (this.options.isWanted?.(entry.request) ?? false)) this.fetch(entry, 'refresh').catch(() => undefined);
      else if (entry.inflight === undefined) this.entries.delete(entry.key);
      return;
    }
    if (this.keepRefreshing(entry)) {
      this.fetch(entry, 'refresh').catch(() => undefined);
      return;
    }
    if (entry.current === undefined) {
      if (entry.inflight === undefined) this.entries.delete(entry.key);
      return;
    }
    // Nobody used it since it was issued: let it live out its time, then drop it.
    this.schedule(entry, entry.current.expirationMs - EXPIRY_GUARD_MS);
  }

  private clearTimer(entry: Entry): void {
    if (entry.timer !== undefined) this.clock.clearTimeout(entry.timer);
    entry.timer = undefined;
  }
}
