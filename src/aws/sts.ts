/**
 * The only module that talks to STS (and the only importer of @aws-sdk/*).
 * The node's own credentials and the endpoint come from the SDK's standard chain, so
 * AWS_ENDPOINT_URL_STS, AWS_ACCESS_KEY_ID, web identity or the instance profile all work.
 *
 * The SDK is its own chunk of the bundle (scripts/build.mjs), loaded as soon as the assumer is
 * created but off the start path: podiam lists its pods, binds its port and installs its rules
 * while the SDK is read and evaluated; the first AssumeRole waits for it if it must.
 */
import { StsUnavailable } from '../errors.js';
import type { StsRefusal } from '../errors.js';
import type { RoleRequest } from '../roles.js';

export interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken: string;
  readonly expiration: Date;
  /** When STS issued them, if not just now (credentials another broker replica held: broker/peers.ts). */
  readonly issuedMs?: number;
}

/** "Get credentials for a role": implemented by STS and by the cache that wraps it. */
export interface RoleAssumer {
  /**
   * urgency: how soon the call is wanted while it waits for an STS slot (default: urgent).
   * using: call STS with these credentials instead of the node's (role chaining, role-chain.ts).
   */
  assume(request: RoleRequest, urgency?: Urgency, using?: AwsCredentials): Promise<AwsCredentials>;
}

/** STS caps a session assumed with role credentials (role chaining) at one hour. */
export const CHAINED_SESSION_MAX_SECONDS = 3600;

/**
 * Whether a pod is waiting on an AssumeRole. Background calls (prefetch at start, refresh ahead)
 * queue behind every urgent one for an STS slot; when a pod asks for credentials whose background
 * call is still queued, promote() moves that same call to the front: no extra call, only a new
 * place in the queue. So the first pod that asks after a restart does not wait behind the
 * prefetches of the other 109.
 */
export class Urgency {
  private onPromote: (() => void) | undefined;
  constructor(private urgentNow: boolean) {}
  get urgent(): boolean {
    return this.urgentNow;
  }
  promote(): void {
    if (this.urgentNow) return;
    this.urgentNow = true;
    this.onPromote?.();
  }
  /** For the queue holding this call: told once, when the call is promoted. */
  whenPromoted(callback: () => void): void {
    this.onPromote = callback;
  }
}

export interface StsOptions {
  readonly region: string;
  readonly sessionTtlSeconds: number;
  /** One attempt's budget; the SDK retries throttling and 5xx with jittered backoff. */
  readonly attemptTimeoutMs: number;
  readonly maxAttempts?: number;
  /**
   * AssumeRole calls in flight at once; the rest wait their turn. A node starting with 110
   * pods must not open 110 connections to STS at once (and trip its rate limits).
   */
  readonly maxConcurrent?: number;
}

/** Errors where asking again later can help; the rest (AccessDenied, bad input) will not. */
const RETRYABLE_CODES = new Set([
  'Throttling',
  'ThrottlingException',
  'RequestLimitExceeded',
  'ServiceUnavailable',
  'InternalFailure',
  'InternalError',
  'RegionDisabledException',
  'IDPCommunicationError',
  'TimeoutError',
  'RequestTimeout',
  'AbortError',
]);

export class StsError extends StsUnavailable {
  constructor(
    roleArn: string,
    readonly stsCode: string,
    readonly retryable: boolean,
    reason: string,
    cause: unknown,
    /** STS's own words, for the logs (and, for a refusal, the answer: it is the pod's to fix). */
    readonly detail?: string,
    refusal?: StsRefusal,
  ) {
    super(roleArn, reason, { cause, refusal });
  }
}

export interface StsAssumer extends RoleAssumer {
  /** Where AssumeRole goes: the SDK's own endpoint resolution for the region (or `override`), once it has loaded. */
  endpoint(override?: string): Promise<string>;
  destroy(): void;
}

export function createStsAssumer(options: StsOptions): StsAssumer {
  const maxAttempts = options.maxAttempts ?? 3;
  const sdk = import('@aws-sdk/client-sts').then((ns) => {
    // The bundle has the SDK's CommonJS build, whose exports a dynamic import puts on `default`.
    const m = (ns as unknown as { default?: typeof ns }).default ?? ns;
    const clientOptions = {
      region: options.region,
      // Always the region's own endpoint (sts.<region>.amazonaws.com), us-east-1 included.
      useGlobalEndpoint: false,
      maxAttempts,
      retryMode: 'standard',
      requestHandler: { connectionTimeout: Math.min(1000, options.attemptTimeoutMs), requestTimeout: options.attemptTimeoutMs, throwOnRequestTimeout: true },
    };
    const client = new m.STSClient(clientOptions);
    // A chained call signs with the first hop's credentials: a client of its own, for that call.
    const clientWith = (using: AwsCredentials) =>
      new m.STSClient({ ...clientOptions, credentials: { accessKeyId: using.accessKeyId, secretAccessKey: using.secretAccessKey, sessionToken: using.sessionToken, expiration: using.expiration } });
    return { client, clientWith, AssumeRoleCommand: m.AssumeRoleCommand };
  });
  // Awaited by the first AssumeRole, whose error a failure to load becomes (not unhandled here).
  sdk.catch(() => undefined);
  // A hard ceiling over all attempts, so a caller never waits on STS longer than this.
  const overallMs = options.attemptTimeoutMs * maxAttempts + 2000;

  const limit = createLimiter(options.maxConcurrent ?? 16);

  return {
    assume: (request: RoleRequest, urgency?: Urgency, using?: AwsCredentials) => limit(() => assumeOnce(request, using), urgency),
    async endpoint(override) {
      if (override !== undefined) return override;
      const { client } = await sdk;
      return client.config.endpointProvider({ Region: options.region, UseGlobalEndpoint: false, UseFIPS: false, UseDualStack: false }).url.href;
    },
    destroy() {
      // The client once it exists: now, or when the SDK has loaded.
      sdk.then(({ client }) => client.destroy(), () => undefined);
    },
  };

  async function assumeOnce(request: RoleRequest, using: AwsCredentials | undefined): Promise<AwsCredentials> {
    let out;
    let chainedClient: { destroy(): void } | undefined;
    try {
      const { client, clientWith, AssumeRoleCommand } = await sdk;
      const sender = using === undefined ? client : clientWith(using);
      if (using !== undefined) chainedClient = sender;
      out = await sender.send(
        new AssumeRoleCommand({
          RoleArn: request.roleArn,
          RoleSessionName: request.sessionName,
          ExternalId: request.externalId,
          Tags: request.tags?.map(([Key, Value]) => ({ Key, Value })),
          // Exactly the configured TTL: kube2iam asks for twice its flag (kube2iam #240). A chained
          // session at most one hour, or STS refuses the call.
          DurationSeconds: using === undefined ? options.sessionTtlSeconds : Math.min(options.sessionTtlSeconds, CHAINED_SESSION_MAX_SECONDS),
        }),
        { abortSignal: AbortSignal.timeout(overallMs) },
      );
    } catch (err) {
      throw classify(request.roleArn, err);
    } finally {
      chainedClient?.destroy();
    }
    const c = out.Credentials;
    if (!c?.AccessKeyId || !c.SecretAccessKey || !c.SessionToken || !c.Expiration) {
      throw new StsError(request.roleArn, 'IncompleteResponse', true, 'STS answered without complete credentials', undefined);
    }
    return {
      accessKeyId: c.AccessKeyId,
      secretAccessKey: c.SecretAccessKey,
      sessionToken: c.SessionToken,
      expiration: new Date(c.Expiration),
    };
  }
}

/**
 * At most `max` tasks at once. Waiting tasks start urgent ones first, each kind first come first
 * served; a background task promoted while it waits joins the urgent ones (see Urgency).
 */
export function createLimiter(max: number): <T>(task: () => Promise<T>, urgency?: Urgency) => Promise<T> {
  let running = 0;
  interface Waiting {
    started: boolean;
    readonly run: () => void;
  }
  const urgentQueue: Waiting[] = [];
  const backgroundQueue: Waiting[] = [];
  const take = (): Waiting | undefined => {
    for (const queue of [urgentQueue, backgroundQueue]) {
      for (let w = queue.shift(); w !== undefined; w = queue.shift()) if (!w.started) return w;
    }
    return undefined;
  };
  const next = (): void => {
    running--;
    take()?.run();
  };
  return (task, urgency) =>
    new Promise((resolve, reject) => {
      const waiting: Waiting = {
        started: false,
        run: () => {
          waiting.started = true;
          running++;
          task().then(resolve, reject).finally(next);
        },
      };
      if (running < max) waiting.run();
      else if (urgency === undefined || urgency.urgent) urgentQueue.push(waiting);
      else {
        backgroundQueue.push(waiting);
        // Promoted while it waits: it also joins the urgent queue (the copy left behind is skipped).
        urgency.whenPromoted(() => urgentQueue.push(waiting));
      }
    });
}

export function classify(roleArn: string, err: unknown): StsError {
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number }; $fault?: string };
  const code = e.name && e.name !== 'Error' ? e.name : (e.code ?? 'NetworkError');
  const status = e.$metadata?.httpStatusCode;
  const detail = (e.message ?? String(err)).slice(0, 300);
  const refusal = refusalOf(code, status, detail);
  if (refusal !== undefined) return new StsError(roleArn, code, false, refusalReason(refusal, roleArn, code, detail), err, detail, refusal);
  const retryable = RETRYABLE_CODES.has(code) || e.$fault === 'server' || status === undefined || status >= 500 || status === 429;
  const where = status === undefined ? 'no answer from STS' : `STS answered ${status}`;
  return new StsError(roleArn, code, retryable, `${code} (${where})`, err, detail);
}

/**
 * STS refusing this node the role: a denial the pod's owner must fix, not an outage. AccessDenied
 * (and any "not authorized") is the role's trust policy not allowing the node's role; a
 * ValidationError on the role ARN is an ARN STS will never accept. Throttling and 5xx are not here.
 * https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html#API_AssumeRole_Errors
 */
function refusalOf(code: string, status: number | undefined, detail: string): StsRefusal | undefined {
  if (status !== undefined && status >= 500) return undefined;
  if (code === 'AccessDenied' || code === 'AccessDeniedException' || /\bnot authorized\b/i.test(detail)) return 'RoleNotTrusted';
  if ((code === 'ValidationError' || code === 'InvalidParameterValue') && /arn/i.test(detail)) return 'RoleInvalid';
  return undefined;
}

function refusalReason(refusal: StsRefusal, roleArn: string, code: string, detail: string): string {
  if (refusal === 'RoleInvalid') return `STS does not accept the role ARN ${roleArn}: ${code}: ${detail}`;
  // STS names the caller: "User: arn:aws:sts::<account>:assumed-role/<node role>/<instance> is not authorized ...".
  const nodeRole = /assumed-role\/([\w+=,.@-]+)\//.exec(detail)?.[1];
  const node = nodeRole === undefined ? "this node's credentials" : `this node's role ${nodeRole}`;
  return `role ${roleArn} does not trust ${node} (its trust policy must allow sts:AssumeRole from it, and the node's role must be allowed to call it): ${code}: ${detail}`;
}
