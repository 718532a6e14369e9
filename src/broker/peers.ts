/**
 * The broker's replicas share one cache for the cluster (--peers): each set of credentials has one
 * owner among the running replicas (rendezvous hashing of its cache key over their pod names), and
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
import { BadRequest } from '../errors.js';
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

/** The running replicas, as this one's pod informer sees them, and who owns which key. */
export class PeerSet {
  private cached: PeerMember[] = [];
  private computedMs = -Infinity;
  private readonly now: () => number;

  constructor(private readonly options: PeerSetOptions) {
    this.now = options.now ?? Date.now;
  }

  /** The other replicas that may own credentials (running, with an IP, not being deleted). */
  others(): readonly PeerMember[] {
    const now = this.now();
    if (now - this.computedMs >= (this.options.refreshMs ?? 2_000)) {
      this.computedMs = now;
      const { namespace, serviceAccount, self } = this.options;
      const members: PeerMember[] = [];
      for (const pod of this.options.pods.allPods()) {
        if (pod.namespace !== namespace || (pod.serviceAccount ?? 'default') !== serviceAccount || pod.name === self) continue;
        if (pod.deleting || pod.phase !== 'Running' || pod.hostNetwork || pod.ips[0] === undefined) continue;
        members.push({ name: pod.name, ip: pod.ips[0] });
      }
      this.cached = members.sort((a, b) => (a.name < b.name ? -1 : 1));
    }
    return this.cached;
  }

  /** The replica that owns `key`; undefined when this one does (or it has no peers). */
  owner(key: string): PeerMember | undefined {
    const others = this.others();
    if (others.length === 0) return undefined;
    let best: PeerMember | undefined;
    let bestScore = score(this.options.self, key);
    for (const m of others) {
      const s = score(m.name, key);
      if (s > bestScore || (s === bestScore && best !== undefined && m.name < best.name)) {
        best = m;
        bestScore = s;
      }
    }
    return best;
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
  readonly ca: Buffer;
  /** The name the replicas' serving certificate is verified against (a DNS name of the broker's certificate). */
  readonly tlsName: string;
  /** This replica's own projected token (audience: the agents'), re-read on every request. */
  readonly tokenFile: string;
}

export type PeerOutcome = 'ok' | 'error';

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
        if (owner === undefined) return inner.assume(request, urgency);
        try {
          const creds = await this.options.client.credentials(owner, request, { urgent: urgency?.urgent ?? true, minValidMs: this.options.minValidMs });
          if (creds.expiration.getTime() - this.now() < this.options.minValidMs) throw new Error(`replica ${owner.name} answered credentials expiring at ${creds.expiration.toISOString()}, too soon`);
          this.options.onForward?.('ok');
          return creds;
        } catch (err) {
          this.options.onForward?.('error');
          // In the background (prefetch, refresh ahead) only an owner that cannot be reached is
          // replaced by STS here; one that answered late or with an error is asked again at the
          // cache's next retry (the credentials held, if any, stay valid meanwhile). Else a cold
          // start, the owner paced by --sts-qps, would have every other replica call STS too.
          if (urgency?.urgent === false && !(err instanceof Unreachable)) throw err;
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

/** HTTPS to the other replicas: pooled keep-alive, each verified against --peer-ca-file and --peer-tls-name. */
export class PeerClient {
  private readonly agent: https.Agent;

  constructor(private readonly options: PeerClientOptions) {
    this.agent = new https.Agent({ keepAlive: true, maxSockets: 16, ca: options.ca, servername: options.tlsName, minVersion: 'TLSv1.2' });
  }

  async credentials(owner: PeerMember, request: RoleRequest, opts: { urgent: boolean; minValidMs: number }): Promise<AwsCredentials> {
    const token = (await readFile(this.options.tokenFile, 'utf8')).trim();
    const payload = Buffer.from(JSON.stringify({ request: toWire(request), urgent: opts.urgent, minValidMs: opts.minValidMs }));
    // A pod waiting gets the owner's quick answer or this replica's own STS call; a background fetch can wait longer.
    const timeoutMs = opts.urgent ? 3_000 : 15_000;
    const host = owner.ip.includes(':') ? `[${owner.ip}]` : owner.ip;
    const text = await new Promise<string>((resolve, reject) => {
      const req = https.request(
        { host: owner.ip, port: this.options.port, path: PEER_CREDENTIALS_PATH, method: 'POST', agent: this.agent, servername: this.options.tlsName, headers: { Host: `${host}:${this.options.port}`, 'Content-Type': 'application/json', 'Content-Length': payload.length, Authorization: `Bearer ${token}` }, timeout: timeoutMs },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            body += chunk;
            if (body.length > MAX_ANSWER) req.destroy(new Error('answer too large'));
          });
          // 503 NotReady, or refused because it does not see this replica as one (yet): as good as unreachable.
          res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(res.statusCode === 503 || res.statusCode === 403 ? new Unreachable(`${res.statusCode}: ${safeError(body)}`) : new Error(`${res.statusCode}: ${safeError(body)}`))));
          res.on('error', reject);
        },
      );
      let connected = false;
      req.on('socket', (socket) => {
        if (!socket.connecting) connected = true;
        else socket.once('secureConnect', () => (connected = true));
      });
      req.on('timeout', () => req.destroy(connected ? new Error(`no answer within ${timeoutMs} ms`) : new Unreachable(`no connection within ${timeoutMs} ms`)));
      req.on('error', (err) => reject(err instanceof Unreachable || connected ? err : new Unreachable(err.message)));
      req.end(payload);
    });
    return parseCredentials(text);
  }

  close(): void {
    this.agent.destroy();
  }
}

/** The error's code and message only (an error answer holds no credentials, but keep it short). */
function safeError(body: string): string {
  try {
    const e = JSON.parse(body) as { code?: unknown; message?: unknown };
    return `${String(e.code)} ${String(e.message).slice(0, 300)}`;
  } catch {
    return body.slice(0, 100);
  }
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

function parseCredentials(text: string): AwsCredentials {
  const c = JSON.parse(text) as Record<string, unknown>;
  const { AccessKeyId, SecretAccessKey, SessionToken, Expiration } = c;
  if (typeof AccessKeyId !== 'string' || typeof SecretAccessKey !== 'string' || typeof SessionToken !== 'string' || typeof Expiration !== 'string') throw new Error('malformed credentials answer');
  const expiration = new Date(Expiration);
  if (Number.isNaN(expiration.getTime())) throw new Error('malformed Expiration');
  return { accessKeyId: AccessKeyId, secretAccessKey: SecretAccessKey, sessionToken: SessionToken, expiration };
}

/** The owner's answer to a peer. */
export function wirePeerCredentials(c: AwsCredentials): string {
  return JSON.stringify({ AccessKeyId: c.accessKeyId, SecretAccessKey: c.secretAccessKey, SessionToken: c.sessionToken, Expiration: c.expiration.toISOString() });
}
