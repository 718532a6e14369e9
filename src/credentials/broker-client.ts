/**
 * Broker mode's CredentialSource: the pod's role and credentials come from `podiam broker`,
 * which decides the role from its own view of the cluster and holds the cluster's one cache over
 * STS. This node keeps the broker's answers in memory, per pod (by uid), and asks again ahead of
 * expiry, so a pod's request is answered from memory like a standalone agent's; only a miss
 * goes to the broker. Nothing here decides a role: there is no second copy of that logic.
 *
 * An answer stands for the pod as it was asked about: when the pod's annotations or
 * ServiceAccount change, the answer is dropped and the broker asked again. A change the agent
 * cannot see (a namespace's allowed-roles, a ServiceAccount's annotation, an association) comes
 * from the broker's change feed (broker-changes.ts): the pods it touches are not served until the
 * broker has said their role again (POST /v1/role, no STS call), and keep their credentials only
 * if it is the same role.
 */
import type { Clock, IssuedCredentials, TimerHandle } from '../aws/credential-cache.js';
import { systemClock } from '../aws/credential-cache.js';
import { Urgency, createLimiter } from '../aws/sts.js';
import { PodiamError } from '../errors.js';
import { renderCredentials } from '../imds/format.js';
import type { PodInfo, RoleRequest } from '../roles.js';
import { podRef, sameAnnotations } from '../roles.js';
import type { PostOptions } from './broker-transport.js';
import type { WireChange, WireRole } from './broker-wire.js';
import { CREDENTIALS_PATH, ROLE_PATH, parseCredentialsAnswer, parseRoleAnswer } from './broker-wire.js';
import type { CallerProof, CredentialSource, PodCredentials } from './source.js';

export interface BrokerLink {
  post(path: string, body: object, options?: PostOptions): Promise<unknown>;
  close?(): void;
}

export interface BrokerCredentialsOptions {
  readonly broker: BrokerLink;
  readonly clock?: Clock;
  /** Served credentials keep at least this long to live (botocore refreshes at 15 minutes left). */
  readonly minRemainingMs?: number;
  /**
   * Lead on top of minRemainingMs for asking again. Less than the broker's own (5 min), so the
   * broker has refreshed its entry by the time this node asks.
   */
  readonly refreshMarginMs?: number;
  /** How long a denial is answered from memory before the broker is asked again. */
  readonly denialTtlMs?: number;
  /** Broker calls at once; prefetches wait behind a pod's request. */
  readonly maxConcurrent?: number;
  readonly onFailed?: (pod: string, err: Error, retryInMs: number | undefined) => void;
}

const MINUTE = 60_000;
/** Never serve credentials this close to expiry. */
const EXPIRY_GUARD_MS = 10_000;
/** A role asked without credentials (security-credentials/ listing) is asked again after this. */
const ROLE_TTL_MS = MINUTE;
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30_000;
/**
 * A replica that cannot say what changed (it started after this agent's last poll) has every
 * pod's role asked again, spread over this long: a broker rollout is not 110 requests per node
 * at one instant. Meanwhile the pods are served as before: nothing is known to have changed.
 */
const RESET_SPREAD_MS = 30_000;

interface Entry {
  /** The pod as last asked about (annotations and ServiceAccount decide whether the answer still stands). */
  pod: PodInfo;
  answer: PodCredentials | undefined;
  refreshAtMs: number;
  role: RoleRequest | undefined;
  roleUntilMs: number;
  denial: PodiamError | undefined;
  deniedUntilMs: number;
  inflight: Promise<PodCredentials> | undefined;
  roleInflight: Promise<RoleRequest> | undefined;
  timer: TimerHandle | undefined;
  failures: number;
  gone: boolean;
  /** Bumped by a policy change: an answer asked for before it is not kept. */
  version: number;
  /** A policy change touched the pod: nothing is served until `revalidating` settles. */
  held: boolean;
  revalidating: Promise<void> | undefined;
}

export class BrokerCredentials implements CredentialSource {
  private readonly entries = new Map<string, Entry>();
  private readonly clock: Clock;
  private readonly minRemainingMs: number;
  private readonly refreshMarginMs: number;
  private readonly denialTtlMs: number;
  private readonly limit: ReturnType<typeof createLimiter>;
  private stopped = false;

  constructor(private readonly options: BrokerCredentialsOptions) {
    this.clock = options.clock ?? systemClock;
    this.minRemainingMs = options.minRemainingMs ?? 15 * MINUTE;
    this.refreshMarginMs = options.refreshMarginMs ?? 2.5 * MINUTE;
    this.denialTtlMs = options.denialTtlMs ?? 5000;
    this.limit = createLimiter(options.maxConcurrent ?? 8);
  }

  async role(pod: PodInfo): Promise<RoleRequest> {
    const e = this.entry(pod);
    // Until the last of the changes that touched the pod has been checked (another may come meanwhile).
    while (e.held) await e.revalidating;
    const now = this.clock.now();
    if (e.denial !== undefined && now < e.deniedUntilMs) throw e.denial;
    if (e.answer !== undefined && e.answer.creds.expirationMs - now > EXPIRY_GUARD_MS) return e.answer.role;
    if (e.role !== undefined && now < e.roleUntilMs) return e.role;
    const version = e.version;
    e.roleInflight ??= this.limit(() => this.options.broker.post(ROLE_PATH, podCoordinates(pod)), new Urgency(true)).then(
      (raw) => {
        const wire = parseRoleAnswer(raw);
        if (wire === undefined) throw new PodiamError('BrokerError', 502, 'the broker answered /v1/role with something else than a role');
        const role = roleOf(wire, pod);
        if (e.version !== version) return role;
        e.role = role;
        e.roleUntilMs = this.clock.now() + ROLE_TTL_MS;
        return role;
      },
      (err: unknown) => {
        throw this.onError(e, err);
      },
    );
    const flight = e.roleInflight;
    const clear = (): void => {
      if (e.roleInflight === flight) e.roleInflight = undefined;
    };
    flight.then(clear, clear);
    return flight;
  }

  async credentials(pod: PodInfo, proof: CallerProof): Promise<PodCredentials> {
    const e = this.entry(pod);
    // Until the last of the changes that touched the pod has been checked (another may come meanwhile).
    while (e.held) await e.revalidating;
    const now = this.clock.now();
    const current = e.answer;
    if (current !== undefined && this.isFresh(e, current, now)) return current;
    if (e.denial !== undefined && now < e.deniedUntilMs) throw e.denial;
    const flight = this.fetch(e, proof, 'request');
    if (current !== undefined && current.creds.expirationMs - now > EXPIRY_GUARD_MS) {
      // Stale but valid: fresh ones if the broker gives them, else these (it may be down).
      return flight.catch((err: unknown) => {
        if (isPodDenial(err)) throw err;
        return current;
      });
    }
    return flight;
  }

  peek(pod: PodInfo): PodCredentials | undefined {
    const e = this.entries.get(pod.uid);
    const answer = e?.answer;
    if (e === undefined || answer === undefined || e.held) return undefined;
    if (e.pod !== pod) {
      if (!sameIdentity(e.pod, pod)) return undefined;
      e.pod = pod;
    }
    return this.isFresh(e, answer, this.clock.now()) ? answer : undefined;
  }

  prefetch(pod: PodInfo): void {
    const e = this.entry(pod);
    const now = this.clock.now();
    if ((e.answer !== undefined && now < e.refreshAtMs) || e.inflight !== undefined || now < e.deniedUntilMs || e.timer !== undefined) return;
    this.fetch(e, { kind: 'ip' }, 'prefetch').catch(() => undefined);
  }

  /** The pod is gone from this node: its answer is never served again, its refresh stops. */
  forget(podUid: string): void {
    const e = this.entries.get(podUid);
    if (e === undefined) return;
    e.gone = true;
    this.clearTimer(e);
    this.entries.delete(podUid);
  }

  size(): number {
    return this.entries.size;
  }

  /**
   * The broker's change feed: what decided these pods' roles changed (or, `reset`, it cannot say
   * what did). Touched pods are held (not served) until the broker has said their role again;
   * after a reset every pod is asked about, spread over RESET_SPREAD_MS, and served meanwhile.
   * Returns how many pods are asked about.
   */
  policyChanged(changes: readonly WireChange[], reset: boolean): number {
    let asked = 0;
    for (const e of this.entries.values()) {
      if (!reset && !changes.some((c) => c.namespace === e.pod.namespace && (c.serviceAccount === undefined || c.serviceAccount === (e.pod.serviceAccount ?? 'default')))) continue;
      if (e.denial !== undefined) {
        // A denial may no longer stand: the next request asks.
        e.denial = undefined;
        e.deniedUntilMs = 0;
      }
      if (e.answer === undefined && e.role === undefined) {
        // Only an ask in flight (the pod's first): what it brings was decided before the change;
        // it is not kept, and the next request asks afresh.
        if (!reset && (e.inflight !== undefined || e.roleInflight !== undefined)) {
          e.version++;
          e.inflight = undefined;
          e.roleInflight = undefined;
        }
        continue;
      }
      asked++;
      if (reset) {
        const timer = this.clock.setTimeout(() => {
          if (!e.gone && !this.stopped && e.revalidating === undefined) this.revalidate(e, false);
        }, Math.floor(Math.random() * RESET_SPREAD_MS));
        timer.unref?.();
      } else {
        this.revalidate(e, true);
      }
    }
    return asked;
  }

  /** Time left on the soonest-expiring credentials held, or undefined when none (the agent's gauge). */
  servedRemainingMs(): number | undefined {
    const now = this.clock.now();
    let min: number | undefined;
    for (const e of this.entries.values()) {
      if (e.answer === undefined) continue;
      const left = e.answer.creds.expirationMs - now;
      if (min === undefined || left < min) min = left;
    }
    return min;
  }

  /** A view without secrets, for /debug/store. */
  snapshot(): Array<Record<string, unknown>> {
    return [...this.entries.values()].map((e) => ({
      pod: podRef(e.pod),
      roleArn: e.answer?.role.roleArn ?? e.role?.roleArn,
      accessKeyId: e.answer?.creds.accessKeyId,
      expiration: e.answer === undefined ? undefined : new Date(e.answer.creds.expirationMs).toISOString(),
      denied: e.denial?.code,
      asking: e.inflight !== undefined,
    }));
  }

  stop(): void {
    this.stopped = true;
    for (const e of this.entries.values()) this.clearTimer(e);
    this.options.broker.close?.();
  }

  /** Asks the broker the pod's role again; keeps its credentials only for the same role. `hold`: serve nothing until then. */
  private revalidate(e: Entry, hold: boolean): void {
    e.role = undefined;
    e.roleUntilMs = 0;
    // After a change, what was asked before it is not kept, and a fetch begun before it is not
    // what requests wait on: they ask afresh. After a reset nothing is known to have changed,
    // and a refresh in flight is as good as this check.
    if (hold) {
      e.version++;
      e.held = true;
      e.inflight = undefined;
      e.roleInflight = undefined;
    }
    const pod = e.pod;
    const version = e.version;
    const check = (async (): Promise<void> => {
      let role: RoleRequest;
      try {
        const wire = parseRoleAnswer(await this.limit(() => this.options.broker.post(ROLE_PATH, podCoordinates(pod)), new Urgency(true)));
        if (wire === undefined) throw new PodiamError('BrokerError', 502, 'the broker answered /v1/role with something else than a role');
        role = roleOf(wire, pod);
      } catch (err) {
        if (e.version !== version || e.gone) return;
        if (isPodDenial(err)) {
          this.onError(e, err);
          return;
        }
        // The broker could not say: after a change, fail closed (the next request asks again);
        // after a reset nothing is known to have changed, and the next refresh asks anyway.
        if (hold) this.dropAnswer(e);
        return;
      }
      if (e.version !== version || e.gone) return;
      e.role = role;
      e.roleUntilMs = this.clock.now() + ROLE_TTL_MS;
      if (e.answer !== undefined && !sameRole(e.answer.role, role)) {
        // Another role now: these credentials are not the pod's any more; fresh ones are asked for.
        this.dropAnswer(e);
        this.fetch(e, { kind: 'ip' }, 'prefetch').catch(() => undefined);
      } else if (e.answer !== undefined && e.timer === undefined && e.inflight === undefined) {
        // The same role: its credentials stay, and are refreshed ahead as before (a refresh that
        // was in flight at the change was not kept).
        this.schedule(e, Math.max(e.refreshAtMs, this.clock.now() + RETRY_MIN_MS));
      }
    })();
    const settled: Promise<void> = check.finally(() => {
      if (e.revalidating === settled) {
        e.revalidating = undefined;
        e.held = false;
      }
    });
    e.revalidating = settled;
  }

  /** The pod's credentials are not served again, nor refreshed: the next request asks. */
  private dropAnswer(e: Entry): void {
    e.answer = undefined;
    e.refreshAtMs = 0;
    this.clearTimer(e);
  }

  private isFresh(e: Entry, answer: PodCredentials, now: number): boolean {
    return now < e.refreshAtMs || answer.creds.expirationMs - now >= this.minRemainingMs;
  }

  /** The pod's entry; an answer given for the pod as it was (other annotations, ServiceAccount) is dropped. */
  private entry(pod: PodInfo): Entry {
    let e = this.entries.get(pod.uid);
    if (e === undefined) {
      e = { pod, answer: undefined, refreshAtMs: 0, role: undefined, roleUntilMs: 0, denial: undefined, deniedUntilMs: 0, inflight: undefined, roleInflight: undefined, timer: undefined, failures: 0, gone: false, version: 0, held: false, revalidating: undefined };
      this.entries.set(pod.uid, e);
    } else if (e.pod !== pod) {
      if (!sameIdentity(e.pod, pod)) {
        e.answer = undefined;
        e.role = undefined;
        e.denial = undefined;
        e.deniedUntilMs = 0;
        e.refreshAtMs = 0;
        this.clearTimer(e);
      }
      e.pod = pod;
    }
    return e;
  }

  private fetch(e: Entry, proof: CallerProof, cause: 'request' | 'prefetch' | 'refresh'): Promise<PodCredentials> {
    if (e.inflight !== undefined) return e.inflight;
    const pod = e.pod;
    const version = e.version;
    const body = { ...podCoordinates(pod), proof: proof.kind === 'token' ? { kind: 'token', token: proof.token } : { kind: 'ip' } };
    const flight = this.limit(() => this.options.broker.post(CREDENTIALS_PATH, body), new Urgency(cause === 'request')).then(
      (raw) => this.install(e, pod, raw, version),
      (err: unknown) => {
        // Asked before a policy change: its refusal says nothing about the pod now.
        if (e.version !== version) throw err;
        throw this.onError(e, err);
      },
    );
    e.inflight = flight;
    const clear = (): void => {
      if (e.inflight === flight) e.inflight = undefined;
    };
    flight.then(clear, clear);
    return flight;
  }

  private install(e: Entry, pod: PodInfo, raw: unknown, version: number): PodCredentials {
    const wire = parseCredentialsAnswer(raw);
    if (wire === undefined) throw new PodiamError('BrokerError', 502, 'the broker answered /v1/credentials with something else than credentials');
    const role = roleOf(wire, pod);
    const expirationMs = Date.parse(wire.credentials.Expiration);
    const credentials = { accessKeyId: wire.credentials.AccessKeyId, secretAccessKey: wire.credentials.SecretAccessKey, sessionToken: wire.credentials.Token, expiration: new Date(expirationMs) };
    const creds: IssuedCredentials = {
      request: role,
      accessKeyId: wire.credentials.AccessKeyId,
      issuedMs: wire.issuedMs,
      expirationMs,
      // The EC2 body, rendered once, exactly as a standalone agent renders its own.
      body: renderCredentials(credentials, wire.issuedMs),
      credentials,
    };
    const answer: PodCredentials = { role, creds };
    if (e.gone || e.pod !== pod || e.version !== version) return answer;
    e.answer = answer;
    e.role = role;
    e.denial = undefined;
    e.deniedUntilMs = 0;
    e.failures = 0;
    const lifetime = expirationMs - wire.issuedMs;
    e.refreshAtMs = expirationMs - Math.min(this.minRemainingMs + this.refreshMarginMs, lifetime / 2);
    // Never sooner than RETRY_MIN_MS: the broker may have answered with the same credentials.
    this.schedule(e, Math.max(e.refreshAtMs, this.clock.now() + RETRY_MIN_MS));
    return answer;
  }

  private onError(e: Entry, err: unknown): Error {
    const error = err instanceof Error ? err : new Error(String(err));
    if (isPodDenial(error)) {
      // A denial (node restriction, no role, not allowed, STS refused): nothing is served for the
      // pod until it changes or the denial's time is up.
      e.answer = undefined;
      e.role = undefined;
      e.denial = error;
      e.deniedUntilMs = this.clock.now() + this.denialTtlMs;
      this.clearTimer(e);
      this.options.onFailed?.(podRef(e.pod), error, undefined);
      return error;
    }
    // The broker is down or STS failed: still-valid credentials keep being served, and asked for again.
    e.failures += 1;
    const now = this.clock.now();
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (e.failures - 1));
    const valid = e.answer !== undefined && e.answer.creds.expirationMs - EXPIRY_GUARD_MS > now + delay;
    if (valid) this.schedule(e, now + delay);
    this.options.onFailed?.(podRef(e.pod), error, valid ? delay : undefined);
    return error;
  }

  private schedule(e: Entry, atMs: number): void {
    this.clearTimer(e);
    if (this.stopped || e.gone) return;
    e.timer = this.clock.setTimeout(() => {
      e.timer = undefined;
      if (e.gone || this.stopped) return;
      const answer = e.answer;
      if (answer !== undefined && answer.creds.expirationMs - EXPIRY_GUARD_MS <= this.clock.now()) e.answer = undefined;
      this.fetch(e, { kind: 'ip' }, 'refresh').catch(() => undefined);
    }, Math.max(0, atMs - this.clock.now()));
    e.timer.unref?.();
  }

  private clearTimer(e: Entry): void {
    if (e.timer !== undefined) this.clock.clearTimeout(e.timer);
    e.timer = undefined;
  }
}

/**
 * The broker refusing THIS AGENT (its token expired or not yet rotated in, its pod not seen yet)
 * says nothing about the pod: held credentials keep being served and asked for again, as when the
 * broker is down. Any other 4xx is about the pod (its role, its namespace, its node): a denial.
 */
const AGENT_REFUSALS = new Set(['NotAnAgent', 'AgentTokenInvalid', 'AgentPodUnknown']);

function isPodDenial(err: unknown): err is PodiamError {
  return err instanceof PodiamError && err.status < 500 && !AGENT_REFUSALS.has(err.code);
}

function podCoordinates(pod: PodInfo): { namespace: string; name: string; uid: string } {
  return { namespace: pod.namespace, name: pod.name, uid: pod.uid };
}

function roleOf(wire: WireRole, pod: PodInfo): RoleRequest {
  return Object.freeze({ roleArn: wire.roleArn, roleName: wire.roleName, externalId: wire.externalId, sessionName: wire.sessionName, pod: podRef(pod) });
}

function sameRole(a: RoleRequest, b: RoleRequest): boolean {
  return a.roleArn === b.roleArn && a.sessionName === b.sessionName && a.externalId === b.externalId;
}

/** What the broker's decision about a pod depends on, of what this node sees of it. */
function sameIdentity(a: PodInfo, b: PodInfo): boolean {
  return a.namespace === b.namespace && a.name === b.name && a.uid === b.uid && a.serviceAccount === b.serviceAccount && sameAnnotations(a.annotations, b.annotations);
}
