/**
 * The broker's replicas share one cache for the cluster (--peers): each set of credentials has one
 * owner among the running replicas not long unready (rendezvous hashing of its cache key over their pod names), and
 * only the owner calls STS for it. Another replica that needs them (its prefetch, its refresh, an
 * agent's miss that landed there) asks the owner, which answers from its cache or fetches them
 * once for both. Without it every replica prefetched and refreshed every pod: STS calls times the
 * replica count.
 *
 * Never a reason to refuse a pod: an owner that cannot be asked (down, starting, slow, or seen
 * differently by the two replicas for a moment) costs one STS call of the asking replica's own,
 * exactly what it did before. A replica serving a peer never forwards that key again, so two
 * replicas that disagree about the owner cannot bounce a request between them.
 *
 * Trust: the owner answers only a token of the brokers' own ServiceAccount bound to one of the
 * running broker pods (agent-auth.ts), over the same TLS as agents; answers are never logged.
 *
 *   POST /v1/peer/credentials  {"request": <RoleRequest>, "urgent": bool, "minValidMs": n}
 *     200 {"AccessKeyId","SecretAccessKey","SessionToken","Expiration"}
 */
import https from 'node:https';
import { readFile } from 'node:fs/promises';
import type { AwsCredentials, RoleAssumer, Urgency } from '../aws/sts.js';
import { cacheKey } from '../aws/credential-cache.js';
import { BadRequest, StsUnavailable } from '../errors.js';
import type { CaFile } from '../ca-file.js';
import { TrustedAgents, isCertificateError } from '../ca-file.js';
import type { Logger } from '../log.js';
import type { PodInfo, RoleRequest } from '../roles.js';

export const PEER_CREDENTIALS_PATH = '/v1/peer/credentials';

export interface PeerMember {
  /** The replica's pod name (what ownership hashes). */
  readonly name: string;
  readonly ip: string;
}

export interface PeerSetOptions {
  /** The brokers' namespace and ServiceAccount (--peers): their running pods are the replicas. */
  readonly namespace: string;
  readonly serviceAccount: string;
  /** This replica's pod name (--pod-name). */
  readonly self: string;
  readonly pods: { allPods(): Iterable<PodInfo> };
  readonly now?: () => number;
  /** The membership is recomputed at most this often (a scan of the pod index). */
  readonly refreshMs?: number;
}

/**
 * A replica whose pod has been not ready this long is left out (its keys move to the others). A
 * replica just started is not ready for its first seconds and still counts: else a cold start of
 * every replica would have each one own, and fetch, every key. The time is the kubelet's or the
 * node controller's (lastTransitionTime) against this replica's clock: clocks kept in step (NTP),
 * as Kubernetes assumes anyway.
 */
export const NOT_READY_GRACE_MS = 30_000;

/** A broker pod that can be asked at all: running, not being deleted, with a pod IP. */
function isRunning(pod: PodInfo): boolean {
  return !pod.deleting && pod.phase === 'Running' && !pod.hostNetwork && pod.ips[0] !== undefined;
}

/** A broker pod not ready for longer than the grace: it owns no key (a condition without a time does not count). */
function longUnready(pod: PodInfo, nowMs: number): boolean {
  const r = pod.readiness;
  return r !== undefined && !r.ready && r.sinceMs !== 0 && nowMs - r.sinceMs >= NOT_READY_GRACE_MS;
}

/**
 * The replicas, as this one's pod informer sees them, and who owns which key. A replica not ready
 * for over NOT_READY_GRACE_MS (failing its probe, or on a node that was lost) owns nothing: the
 * others do not forward to it, and it forwards to them. This replica too, by the same rule in its
 * own view (it counts itself while its pod is not in its view yet). When that rule leaves no
 * replica at all (every one slow to start: image pulls, a long first list), the running ones own
 * the keys, as each replica computes alike: never each one owning everything.
 */
export class PeerSet {
  private cached: PeerMember[] = [];
  private selfIn = true;
  private computedMs = -Infinity;
  private readonly now: () => number;

  constructor(private readonly options: PeerSetOptions) {
    this.now = options.now ?? Date.now;
  }

  /** The other replicas that may own credentials. */
  others(): readonly PeerMember[] {
    this.refresh();
    return this.cached;
  }

  /** Whether this replica owns keys (by the same rule as the others, in its own view). */
  selfMember(): boolean {
    this.refresh();
    return this.selfIn;
  }

  /** The replica that owns `key`; undefined when this one does (or no replica may). */
  owner(key: string): PeerMember | undefined {
    const others = this.others();
    if (others.length === 0) return undefined;
    let best: PeerMember | undefined;
    let bestScore = this.selfIn ? score(this.options.self, key) : -1;
    for (const m of others) {
      const s = score(m.name, key);
      if (s > bestScore || (s === bestScore && best !== undefined && m.name < best.name)) {
        best = m;
        bestScore = s;
      }
    }
    return best;
  }

  private refresh(): void {
    const now = this.now();
    if (now - this.computedMs < (this.options.refreshMs ?? 2_000)) return;
    this.computedMs = now;
    const { namespace, serviceAccount, self } = this.options;
    const members: PeerMember[] = [];
    const running: PeerMember[] = [];
    let selfIn = true;
    let selfRunning = true;
    for (const pod of this.options.pods.allPods()) {
      if (pod.namespace !== namespace || (pod.serviceAccount ?? 'default') !== serviceAccount) continue;
      if (pod.name === self) {
        selfRunning = isRunning(pod);
        selfIn = selfRunning && !longUnready(pod, now);
      } else if (isRunning(pod)) {
        const member = { name: pod.name, ip: pod.ips[0]! };
        running.push(member);
        if (!longUnready(pod, now)) members.push(member);
      }
    }
    const none = !selfIn && members.length === 0;
    this.cached = (none ? running : members).sort((a, b) => (a.name < b.name ? -1 : 1));
    this.selfIn = none ? selfRunning : selfIn;
  }
}

/** Rendezvous (highest random weight) score: FNV-1a of name and key, then a 32-bit finalizer. */
export function score(name: string, key: string): number {
  let h = 0x811c9dc5;
  const s = `${name}\n${key}`;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export interface PeerClientOptions {
  readonly port: number;
  /** The CA the replicas' serving certificate chains to: fixed, or --peer-ca-file read again when it changes. */
  readonly ca: Buffer | CaFile;
  /** The name the replicas' serving certificate is verified against (a DNS name of the broker's certificate). */
  readonly tlsName: string;
  /** This replica's own projected token (audience: the agents'), re-read on every request. */
  readonly tokenFile: string;
}

/** ok; error: the owner answered late or with an error; unreachable: no answer at all (this replica called STS itself). */
export type PeerOutcome = 'ok' | 'error' | 'unreachable';

/** A replica that could not be reached is not asked again for this long (a node gone: its pod is a member for ~70-80 s more). */
export const PEER_DOWN_MS = 10_000;

export interface PeerForwardingOptions {
  readonly peers: Pick<PeerSet, 'owner'>;
  readonly client: Pick<PeerClient, 'credentials'>;
  /** Credentials from a peer must keep this long to live, else this replica calls STS itself. */
  readonly minValidMs: number;
  readonly log: Logger;
  readonly onForward?: (outcome: PeerOutcome) => void;
  readonly now?: () => number;
}

/** Ask the owner before STS; see the module's comment. */
export class PeerForwarding {
  /** Keys this replica is fetching for a peer right now: never forwarded (no ping-pong). */
  private readonly servingPeer = new Map<string, number>();
  /** Replicas found unreachable, until when they are not asked. */
  private readonly down = new Map<string, number>();
  private readonly now: () => number;
  private lastWarnMs = -Infinity;

  constructor(private readonly options: PeerForwardingOptions) {
    this.now = options.now ?? Date.now;
  }

  wrap(inner: RoleAssumer): RoleAssumer {
    return {
      assume: async (request: RoleRequest, urgency?: Urgency, using?: AwsCredentials): Promise<AwsCredentials> => {
        // A chained role's second hop signs with the first hop's credentials: STS, here.
        if (using !== undefined) return inner.assume(request, urgency, using);
        const key = cacheKey(request);
        const owner = this.servingPeer.has(key) ? undefined : this.options.peers.owner(key);
        if (owner === undefined || (this.down.get(owner.name) ?? 0) > this.now()) return inner.assume(request, urgency);
        try {
          const creds = await this.options.client.credentials(owner, request, { urgent: urgency?.urgent ?? true, minValidMs: this.options.minValidMs });
          if (creds.expiration.getTime() - this.now() < this.options.minValidMs) throw new Error(`replica ${owner.name} answered credentials expiring at ${creds.expiration.toISOString()}, too soon`);
          this.options.onForward?.('ok');
          return creds;
        } catch (err) {
          // STS refused the role to the owner: the same refusal here, cached as the owner caches it (no STS call).
          if (err instanceof StsUnavailable && err.status === 403) {
            this.options.onForward?.('ok');
            throw err;
          }
          const unreachable = err instanceof Unreachable;
          this.options.onForward?.(unreachable ? 'unreachable' : 'error');
          if (unreachable) this.down.set(owner.name, this.now() + PEER_DOWN_MS);
          // In the background (prefetch, refresh ahead) only an owner that cannot be reached is
          // replaced by STS here; one that answered late or with an error is asked again at the
          // cache's next retry (the credentials held stay valid meanwhile, and the cache makes the
          // refresh urgent before they would be served under 15 minutes). Else a cold start, the
          // owner paced by --sts-qps, would have every other replica call STS too.
          if (urgency?.urgent === false && !unreachable) throw err;
          // One line a minute at most: a replica down for a while fails every forward to it.
          if (this.now() - this.lastWarnMs >= 60_000) {
            this.lastWarnMs = this.now();
            this.options.log.warn('could not get credentials from the replica that owns them; calling STS here', { replica: owner.name, error: (err as Error).message });
          }
          return inner.assume(request, urgency);
        }
      },
    };
  }

  /** Runs `fn` (the cache fetching `request` for a peer) with that key never forwarded. */
  async serving<T>(request: RoleRequest, fn: () => Promise<T>): Promise<T> {
    const key = cacheKey(request);
    this.servingPeer.set(key, (this.servingPeer.get(key) ?? 0) + 1);
    try {
      return await fn();
    } finally {
      const n = (this.servingPeer.get(key) ?? 1) - 1;
      if (n > 0) this.servingPeer.set(key, n);
      else this.servingPeer.delete(key);
    }
  }
}

/** The owner could not be reached at all (no connection, TLS refused it, or it is not ready): STS here is the only way. */
export class Unreachable extends Error {}

/** Largest answer read: credentials are ~2 KB. */
const MAX_ANSWER = 64 * 1024;

/** A pod waits on an urgent forward (under the agents' 2 s --broker-timeout, with room for STS here); a background one can wait for the owner's paced STS call. */
export const URGENT_TIMEOUT_MS = 1_000;
export const BACKGROUND_TIMEOUT_MS = 15_000;
/** No TLS session with the owner this soon: unreachable (a replica on a lost node black-holes its packets). */
export const CONNECT_TIMEOUT_MS = 500;

/** Answers that mean the owner cannot serve this replica now: as good as unreachable. */
const NOT_SERVING = new Set(['NotAPeer', 'PeerTokenInvalid', 'PeerPodUnknown', 'NotReady', 'TokenReviewUnavailable', 'TooManyTokenReviews']);

/** HTTPS to the other replicas: pooled keep-alive, each verified against --peer-ca-file and --peer-tls-name. */
export class PeerClient {
  /** Background forwards share a few sockets; urgent ones never queue behind them. Made again when --peer-ca-file changes. */
  private readonly tls: TrustedAgents<{ background: https.Agent; urgent: https.Agent }>;

  constructor(private readonly options: PeerClientOptions) {
    this.tls = new TrustedAgents(
      options.ca,
      (ca) => {
        const tls = { keepAlive: true, ca, servername: options.tlsName, minVersion: 'TLSv1.2' as const };
        return { background: new https.Agent({ ...tls, maxSockets: 16 }), urgent: new https.Agent({ ...tls, maxSockets: Infinity, maxFreeSockets: 16 }) };
      },
      (made) => [made.background, made.urgent],
    );
  }

  async credentials(owner: PeerMember, request: RoleRequest, opts: { urgent: boolean; minValidMs: number }): Promise<AwsCredentials> {
    let token: string;
    try {
      token = (await readFile(this.options.tokenFile, 'utf8')).trim();
    } catch (err) {
      throw new Unreachable(`cannot read --peer-token-file ${this.options.tokenFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    await this.tls.refresh(false);
    const payload = Buffer.from(JSON.stringify({ request: toWire(request), urgent: opts.urgent, minValidMs: opts.minValidMs }));
    const deadline = Date.now() + (opts.urgent ? URGENT_TIMEOUT_MS : BACKGROUND_TIMEOUT_MS);
    try {
      return parseCredentials(await this.post(owner, payload, token, opts.urgent, deadline, request.roleArn), request.roleArn);
    } catch (err) {
      // The owner's certificate not trusted: the CA may have been renewed; the next forward uses the file as it is now (this one: STS here).
      if (isCertificateError((err as NodeJS.ErrnoException).code)) void this.tls.refresh(true);
      // A pooled connection the owner closed while idle fails only when reused: once more, on a new one.
      if ((err as { reused?: boolean }).reused === true && Date.now() < deadline) return parseCredentials(await this.post(owner, payload, token, opts.urgent, deadline, request.roleArn), request.roleArn);
      throw err;
    }
  }

  private post(owner: PeerMember, payload: Buffer, token: string, urgent: boolean, deadline: number, roleArn: string): Promise<string> {
    const host = owner.ip.includes(':') ? `[${owner.ip}]` : owner.ip;
    return new Promise<string>((resolve, reject) => {
      let connected = false;
      let reused = false;
      const req = https.request(
        { host: owner.ip, port: this.options.port, path: PEER_CREDENTIALS_PATH, method: 'POST', agent: urgent ? this.tls.agents.urgent : this.tls.agents.background, servername: this.options.tlsName, headers: { Host: `${host}:${this.options.port}`, 'Content-Type': 'application/json', 'Content-Length': payload.length, Authorization: `Bearer ${token}` } },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            body += chunk;
            if (body.length > MAX_ANSWER) req.destroy(new Error('answer too large'));
          });
          res.on('end', () => {
            clearTimeout(overall);
            if (res.statusCode === 200) resolve(body);
            else reject(answerError(res.statusCode ?? 0, body, roleArn));
          });
          res.on('error', reject);
        },
      );
      // From the call, not from a socket's assignment (a request queued for a socket has none yet).
      const overall = setTimeout(() => req.destroy(connected ? new Error(`no answer within the deadline`) : new Unreachable('no connection within the deadline')), Math.max(0, deadline - Date.now()));
      req.on('socket', (socket) => {
        reused = req.reusedSocket;
        if (!socket.connecting) {
          connected = true;
          return;
        }
        const connect = setTimeout(() => req.destroy(new Unreachable(`no TLS session within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
        socket.once('secureConnect', () => {
          connected = true;
          clearTimeout(connect);
        });
        socket.once('close', () => clearTimeout(connect));
      });
      req.on('error', (err) => {
        clearTimeout(overall);
        const e = err instanceof Unreachable || connected ? err : Object.assign(new Unreachable(err.message), { code: (err as NodeJS.ErrnoException).code });
        reject(Object.assign(e, { reused: reused && (err as NodeJS.ErrnoException).code === 'ECONNRESET' }));
      });
      req.end(payload);
    });
  }

  close(): void {
    this.tls.close();
  }
}

/** What a non-200 answer means here: STS's refusal (cached as such), the owner not serving us (unreachable), or an error. */
function answerError(status: number, body: string, roleArn: string): Error {
  let code = '';
  let message = '';
  try {
    const e = JSON.parse(body) as { code?: unknown; message?: unknown };
    code = String(e.code);
    message = String(e.message).slice(0, 300);
  } catch {
    message = body.slice(0, 100);
  }
  if (status === 403 && (code === 'RoleNotTrusted' || code === 'RoleInvalid')) return new StsUnavailable(roleArn, message, { refusal: code });
  if (NOT_SERVING.has(code) || status === 503) return new Unreachable(`${status} ${code}: ${message}`);
  return new Error(`${status} ${code}: ${message}`);
}

interface WireRoleRequest {
  roleArn: string;
  roleName: string;
  externalId?: string;
  sessionName: string;
  pod: string;
  tags?: Array<[string, string]>;
  sourceRole?: WireRoleRequest;
  association?: string;
}

function toWire(r: RoleRequest): WireRoleRequest {
  return {
    roleArn: r.roleArn,
    roleName: r.roleName,
    ...(r.externalId === undefined ? {} : { externalId: r.externalId }),
    sessionName: r.sessionName,
    pod: r.pod,
    ...(r.tags === undefined ? {} : { tags: r.tags.map(([k, v]) => [k, v] as [string, string]) }),
    ...(r.sourceRole === undefined ? {} : { sourceRole: toWire(r.sourceRole) }),
    ...(r.association === undefined ? {} : { association: r.association }),
  };
}

/** A peer's request, checked field by field (a peer is trusted, but a malformed body is a 400, never a crash). */
export function parsePeerRequest(text: string): { request: RoleRequest; urgent: boolean; minValidMs: number } {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new BadRequest(400, 'peer request body is not JSON');
  }
  const b = body as { request?: unknown; urgent?: unknown; minValidMs?: unknown };
  if (b === null || typeof b !== 'object') throw new BadRequest(400, 'peer request body is not an object');
  const minValidMs = typeof b.minValidMs === 'number' && Number.isFinite(b.minValidMs) && b.minValidMs >= 0 ? Math.min(b.minValidMs, 12 * 3600_000) : 0;
  return { request: fromWire(b.request, 0), urgent: b.urgent === true, minValidMs };
}

function fromWire(raw: unknown, depth: number): RoleRequest {
  if (depth > 1) throw new BadRequest(400, 'peer request: role chain deeper than one hop');
  const r = raw as Record<string, unknown> | null;
  if (r === null || typeof r !== 'object') throw new BadRequest(400, 'peer request: request is not an object');
  const str = (k: string, optional = false): string | undefined => {
    const v = r[k];
    if (v === undefined && optional) return undefined;
    if (typeof v !== 'string' || v.length === 0 || v.length > 2048) throw new BadRequest(400, `peer request: ${k} must be a non-empty string`);
    return v;
  };
  const tagsRaw = r['tags'];
  let tags: Array<readonly [string, string]> | undefined;
  if (tagsRaw !== undefined) {
    if (!Array.isArray(tagsRaw) || tagsRaw.length > 50 || !tagsRaw.every((t) => Array.isArray(t) && t.length === 2 && typeof t[0] === 'string' && typeof t[1] === 'string')) throw new BadRequest(400, 'peer request: tags must be [key, value] string pairs');
    tags = (tagsRaw as Array<[string, string]>).map(([k, v]) => [k, v] as const);
  }
  return {
    roleArn: str('roleArn')!,
    roleName: str('roleName')!,
    externalId: str('externalId', true),
    sessionName: str('sessionName')!,
    pod: str('pod')!,
    ...(tags === undefined ? {} : { tags }),
    ...(r['sourceRole'] === undefined ? {} : { sourceRole: fromWire(r['sourceRole'], depth + 1) }),
    ...(r['association'] === undefined ? {} : { association: str('association')! }),
  };
}

function parseCredentials(text: string, roleArn: string): AwsCredentials {
  const c = JSON.parse(text) as Record<string, unknown>;
  const { AccessKeyId, SecretAccessKey, SessionToken, Expiration, IssuedMs } = c;
  if (typeof AccessKeyId !== 'string' || typeof SecretAccessKey !== 'string' || typeof SessionToken !== 'string' || typeof Expiration !== 'string') throw new Error(`malformed credentials answer for ${roleArn}`);
  const expiration = new Date(Expiration);
  if (Number.isNaN(expiration.getTime())) throw new Error('malformed Expiration');
  return { accessKeyId: AccessKeyId, secretAccessKey: SecretAccessKey, sessionToken: SessionToken, expiration, ...(typeof IssuedMs === 'number' && Number.isFinite(IssuedMs) ? { issuedMs: IssuedMs } : {}) };
}

/** The owner's answer to a peer: the credentials and when STS issued them (the asker's refresh lead counts from it). */
export function wirePeerCredentials(c: AwsCredentials, issuedMs: number): string {
  return JSON.stringify({ AccessKeyId: c.accessKeyId, SecretAccessKey: c.secretAccessKey, SessionToken: c.sessionToken, Expiration: c.expiration.toISOString(), IssuedMs: issuedMs });
}
