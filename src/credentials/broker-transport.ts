/**
 * The agent's HTTPS link to `podiam broker`: one pooled keep-alive agent (a miss never opens a
 * connection of its own), the broker verified against --broker-ca-file (read again when the kubelet
 * updates it: ca-file.ts), the agent's own
 * ServiceAccount token (re-read from --broker-token-file on every request: the kubelet rotates it)
 * as its only credential. Replicas in order, starting with the last one that answered; a
 * connection error, a timeout or a "not ready" on one is retried once on the next. Answers are
 * never logged (they hold credentials).
 */
import https from 'node:https';
import { readFile } from 'node:fs/promises';
import type { CaFile } from '../ca-file.js';
import { TrustedAgents, isCertificateError } from '../ca-file.js';
import { BrokerUnavailable, PodiamError, StsUnavailable } from '../errors.js';
import type { StsRefusal } from '../errors.js';

export interface BrokerTransportMetrics {
  up(value: 0 | 1): void;
  request(outcome: 'ok' | 'denied' | 'unavailable' | 'error', seconds: number): void;
}

export interface BrokerTransportOptions {
  readonly urls: readonly string[];
  /** The CA the broker's certificate must chain to: fixed, or --broker-ca-file read again when it changes. */
  readonly ca: Buffer | CaFile;
  readonly tokenFile: string;
  readonly timeoutMs: number;
  readonly metrics?: BrokerTransportMetrics;
  /** Sockets per replica. */
  readonly maxSockets?: number;
}

export interface PostOptions {
  /** Instead of --broker-timeout (a long poll is held by the broker). */
  readonly timeoutMs?: number;
  /** false: not counted in the request metrics (a long poll). */
  readonly observe?: boolean;
}

/** Largest answer read: credentials are ~2 KB. */
const MAX_ANSWER = 64 * 1024;

/** Why one attempt failed, and whether another replica might do better (or the CA file, read again). */
class AttemptFailed extends Error {
  constructor(message: string, readonly retryable: boolean, readonly certificate = false) {
    super(message);
  }
}

export class BrokerTransport {
  /** One pooled agent, made again when --broker-ca-file changes. */
  private readonly tls: TrustedAgents<https.Agent>;
  private preferred = 0;

  constructor(private readonly options: BrokerTransportOptions) {
    this.tls = new TrustedAgents(
      options.ca,
      (ca) => new https.Agent({ keepAlive: true, maxSockets: options.maxSockets ?? 8, ca, minVersion: 'TLSv1.2', keepAliveMsecs: 15_000 }),
      (agent) => [agent],
    );
  }

  /**
   * POST a JSON body; resolves with the broker's 200 answer, rejects with its refusal (the
   * PodiamError it named) or BrokerUnavailable (nobody answered in time).
   */
  async post(path: string, body: object, options: PostOptions = {}): Promise<unknown> {
    const started = process.hrtime.bigint();
    const seconds = (): number => Number(process.hrtime.bigint() - started) / 1e9;
    const { urls } = this.options;
    const timeoutMs = options.timeoutMs ?? this.options.timeoutMs;
    // A long poll's time is not a request's latency: it counts for broker_up only.
    const base = this.options.metrics;
    const metrics = base !== undefined && options.observe === false ? { up: base.up, request: () => undefined } : base;
    let token: string;
    try {
      token = (await readFile(this.options.tokenFile, 'utf8')).trim();
    } catch (err) {
      metrics?.request('error', seconds());
      throw new BrokerUnavailable(`cannot read --broker-token-file ${this.options.tokenFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const payload = Buffer.from(JSON.stringify(body));
    const deadline = Date.now() + timeoutMs;
    const reasons: string[] = [];
    // Two attempts: the preferred replica, then (on a retryable failure) the next one; with one
    // replica, it again (a pooled connection it closed while idle fails only when reused).
    // The first attempt gets half the budget.
    // The replica to start from is read once: another request failing over meanwhile moves
    // `preferred`, and re-reading it sent this request's second attempt back to the replica its
    // first attempt had just found dead.
    const first = this.preferred;
    await this.tls.refresh(false);
    let caReread = false;
    for (let i = 0; i < 2; i++) {
      const index = (first + i) % urls.length;
      const budget = i === 0 ? Math.min(Math.floor(timeoutMs / 2), deadline - Date.now()) : deadline - Date.now();
      if (budget <= 0) break;
      try {
        const { status, answer } = await this.attempt(urls[index]!, path, payload, token, Math.max(1, budget));
        this.preferred = index;
        metrics?.up(1);
        if (status === 200) {
          metrics?.request('ok', seconds());
          return answer;
        }
        metrics?.request(status >= 500 ? 'unavailable' : 'denied', seconds());
        throw refusal(status, answer);
      } catch (err) {
        if (!(err instanceof AttemptFailed)) throw err;
        reasons.push(`${urls[index]}: ${err.message}`);
        // Its certificate not trusted: the CA may have been renewed. Read the file now, and if it
        // changed, the same replica once more with what it holds; else the next replica (it may
        // not have its new certificate yet).
        if (err.certificate && !caReread) {
          caReread = true;
          if (await this.tls.refresh(true)) {
            i--;
            continue;
          }
        }
        if (!err.retryable) break;
      }
    }
    metrics?.up(0);
    metrics?.request('unavailable', seconds());
    throw new BrokerUnavailable(reasons.join('; '));
  }

  close(): void {
    this.tls.close();
  }

  private attempt(url: string, path: string, payload: Buffer, token: string, timeoutMs: number): Promise<{ status: number; answer: unknown }> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (message: string, retryable: boolean, certificate = false): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.destroy();
        reject(new AttemptFailed(message, retryable, certificate));
      };
      const req = https.request(
        new URL(path, url),
        { method: 'POST', agent: this.tls.agents, headers: { 'Content-Type': 'application/json', 'Content-Length': payload.length, Authorization: `Bearer ${token}` } },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_ANSWER) fail(`answer larger than ${MAX_ANSWER} bytes`, false);
            else chunks.push(c);
          });
          res.on('error', (err) => fail(err.message, true));
          res.on('end', () => {
            if (settled) return;
            const status = res.statusCode ?? 0;
            let answer: unknown;
            try {
              answer = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              return fail(`answered ${status} without JSON`, status >= 500);
            }
            // A replica that is starting (informers not synced) or stopping: another may be ready.
            if (status === 503 && (answer as { code?: unknown }).code === 'NotReady') return fail('not ready', true);
            settled = true;
            clearTimeout(timer);
            resolve({ status, answer });
          });
        },
      );
      // A replica that died mid-request (reset, refused, socket closed): the other one is asked.
      req.on('error', (err: NodeJS.ErrnoException) => {
        fail(err.code ?? err.message, true, isCertificateError(err.code));
      });
      const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`, true), timeoutMs);
      req.end(payload);
    });
  }
}

/** The broker's {"code","message"} as the error it stands for (an STS refusal stays one: the pod's owner hears about it). */
function refusal(status: number, answer: unknown): PodiamError {
  const a = (answer ?? {}) as { code?: unknown; message?: unknown };
  const code = typeof a.code === 'string' && /^[A-Za-z]{1,64}$/.test(a.code) ? a.code : 'BrokerError';
  const message = typeof a.message === 'string' ? a.message.slice(0, 1000) : `the broker answered ${status}`;
  if (code === 'RoleNotTrusted' || code === 'RoleInvalid') return new StsUnavailable('', message, { refusal: code as StsRefusal });
  return new PodiamError(code, status >= 400 && status < 600 ? status : 502, message);
}
