/**
 * StsProxy: an HTTP reverse proxy placed in front of an STS endpoint (moto_server in
 * tests) so tests can COUNT and DISTURB the calls that reach STS.
 *
 * @aws-sdk/client-sts 3.x speaks the AWS *query* protocol on the wire:
 *   POST /  Content-Type: application/x-www-form-urlencoded
 *   Action=AssumeRole&Version=2011-06-15&RoleArn=...&RoleSessionName=...&DurationSeconds=...&ExternalId=...
 * The proxy parses that (and, defensively, a query-string GET or an awsJson body with
 * X-Amz-Target) and records one `StsCall` per HTTP request it receives, including
 * requests it answers itself with an injected fault (see `StsCall.outcome`).
 *
 * Faults:
 *  - `failNext(n, spec)`: the next n requests get an STS XML ErrorResponse without being forwarded.
 *  - `setDown(true)`: every connection (new and existing) is destroyed immediately, so
 *    clients see ECONNRESET / "socket hang up". Nothing is recorded while down.
 *  - `setLatency(ms)`: delay before forwarding (or before answering with a fault).
 *  - `refuseAccessKeys(ids)` (or the `refuseAccessKeyIds` option): every AssumeRole signed with
 *    one of these access key ids (the SigV4 `Credential=` of its Authorization header) is answered
 *    403 AccessDenied, as STS answers a caller the role's trust policy does not name, and never
 *    forwarded; recorded with outcome 'refused'. The lab uses it for the node role's keys: in
 *    broker mode only the broker's key may assume pod roles.
 *  - `answerRoles` (option): an AssumeRole (from a key not refused) for a role ARN this pattern
 *    matches is answered by the proxy itself, at once, with fresh credentials in STS's own format
 *    (outcome 'answered'), for loads the STS behind cannot take (moto: ~35 AssumeRole/s on a
 *    2-CPU machine). Those credentials are not known to the STS behind: trace them with
 *    `issuedAccessKeyId`, not with GetCallerIdentity.
 * Otherwise requests are forwarded verbatim (method, path, headers incl. Host, body) and
 * the response is piped back unchanged.
 */
import http from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { closeServer, hostUrl, listen } from './net.js';

export interface StsCall {
  action: string;
  roleArn?: string;
  sessionName?: string;
  externalId?: string;
  durationSeconds?: number;
  /** All parsed parameters (form fields / JSON members), as strings. */
  params: Record<string, string>;
  /** Access key id from the SigV4 Authorization header, if any. */
  accessKeyId?: string;
  /** The region the request was signed for (the SigV4 credential scope: AKID/date/<region>/sts/aws4_request), if any. */
  region?: string;
  /** The Host header the client sent. */
  host?: string;
  /** Date.now() when the request body had been read. */
  time: number;
  /**
   * 'forwarded' (reached the target), 'failed' (answered by failNext), 'error' (target
   * unreachable: 502), 'refused' (AssumeRole signed with a refused key: 403 AccessDenied).
   */
  outcome: 'forwarded' | 'failed' | 'error' | 'refused' | 'answered';
  /** HTTP status returned to the client (set once known). */
  status?: number;
  /**
   * The access key id of the credentials STS issued (a forwarded AssumeRole answered 200): which
   * call, so which caller, role and session, a credential served to a pod came from.
   */
  issuedAccessKeyId?: string;
}

export interface StsFault {
  /** Default 400. */
  status?: number;
  /** STS error code. Default 'Throttling'. */
  code?: string;
  /** Default 'Rate exceeded'. */
  message?: string;
  /** Default 'Sender' for 4xx, 'Receiver' for 5xx. */
  type?: 'Sender' | 'Receiver';
  /** Only fail calls for this action (others pass through and do not consume the fault). */
  action?: string;
}

export interface StsProxyOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (ephemeral). */
  port?: number;
  /** Delay before forwarding. Default 0. */
  latencyMs?: number;
  /** AssumeRole signed with one of these access key ids is refused (403 AccessDenied). */
  refuseAccessKeyIds?: readonly string[];
  /** AssumeRole of a role ARN this matches is answered by the proxy itself (see the top of this file). */
  answerRoles?: RegExp;
}

interface PendingFault {
  remaining: number;
  fault: StsFault;
}

function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The XML body STS (awsQuery) returns for an error. */
export function stsErrorXml(code: string, message: string, type: 'Sender' | 'Receiver', requestId: string): string {
  return (
    '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">\n' +
    `  <Error>\n    <Type>${type}</Type>\n    <Code>${escapeXml(code)}</Code>\n` +
    `    <Message>${escapeXml(message)}</Message>\n  </Error>\n` +
    `  <RequestId>${requestId}</RequestId>\n</ErrorResponse>\n`
  );
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Extract the operation and its parameters from an STS request. */
export function parseStsRequest(
  method: string,
  url: string,
  headers: IncomingHttpHeaders,
  body: Buffer,
): { action: string; params: Record<string, string> } {
  const params: Record<string, string> = {};
  const contentType = (header(headers, 'content-type') ?? '').toLowerCase();
  const target = header(headers, 'x-amz-target');
  const query = new URL(url, 'http://x').searchParams;
  for (const [k, v] of query) params[k] = v;

  if (contentType.includes('json')) {
    try {
      const parsed: unknown = JSON.parse(body.toString('utf8') || '{}');
      if (parsed !== null && typeof parsed === 'object') {
        for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
          if (v !== null && typeof v !== 'object') params[k] = String(v);
        }
      }
    } catch {
      // not JSON after all; leave params as they are
    }
  } else if (method === 'POST' && body.length > 0) {
    for (const [k, v] of new URLSearchParams(body.toString('utf8'))) params[k] = v;
  }

  let action: string | undefined = params['Action'];
  if (action === undefined && target !== undefined) action = target.split('.').pop();
  if (action === undefined) action = /\/operation\/([A-Za-z]+)$/.exec(url.split('?')[0] ?? '')?.[1];
  return { action: action ?? 'Unknown', params };
}

export class StsProxy {
  readonly calls: StsCall[] = [];
  readonly url: string;
  readonly port: number;
  readonly target: string;
  /** Connections destroyed because the proxy was down. */
  droppedConnections = 0;

  private down = false;
  private latencyMs: number;
  private faults: PendingFault[] = [];
  private readonly refusedKeys = new Set<string>();
  private readonly answerRoles: RegExp | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly agent = new http.Agent({ keepAlive: false });
  private readonly targetUrl: URL;

  private constructor(
    private readonly server: http.Server,
    host: string,
    port: number,
    target: string,
    opts: StsProxyOptions,
  ) {
    this.port = port;
    this.url = hostUrl(host, port);
    this.target = target;
    this.targetUrl = new URL(target);
    this.latencyMs = opts.latencyMs ?? 0;
    for (const id of opts.refuseAccessKeyIds ?? []) this.refusedKeys.add(id);
    this.answerRoles = opts.answerRoles;
  }

  static async start(target: string, opts: StsProxyOptions = {}): Promise<StsProxy> {
    const host = opts.host ?? '127.0.0.1';
    const targetUrl = new URL(target);
    if (targetUrl.protocol !== 'http:') throw new Error(`StsProxy: only http targets are supported, got ${target}`);
    const server = http.createServer();
    server.keepAliveTimeout = 1000;
    const port = await listen(server, opts.port ?? 0, host);
    const proxy = new StsProxy(server, host, port, target, opts);
    server.on('connection', (socket: Socket) => proxy.onConnection(socket));
    server.on('request', (req: IncomingMessage, res: ServerResponse) => proxy.onRequest(req, res));
    return proxy;
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await closeServer(this.server);
    for (const s of this.sockets) s.destroy();
    this.agent.destroy();
  }

  /** Calls recorded for `action` (all outcomes). */
  count(action: string): number {
    return this.calls.filter((c) => c.action === action).length;
  }

  /** AssumeRole calls (all outcomes) for `roleArn`. */
  countFor(roleArn: string): number {
    return this.calls.filter((c) => c.roleArn === roleArn).length;
  }

  /** AssumeRole calls refused because of the key that signed them, optionally only those signed with `accessKeyId`. */
  refusedCount(accessKeyId?: string): number {
    return this.calls.filter((c) => c.outcome === 'refused' && (accessKeyId === undefined || c.accessKeyId === accessKeyId)).length;
  }

  /** From now on, refuse AssumeRole signed with any of these access key ids (adds to the set). */
  refuseAccessKeys(ids: Iterable<string>): void {
    for (const id of ids) this.refusedKeys.add(id);
  }

  /** Forget recorded calls, pending faults, latency and the down state (refused keys stay). */
  reset(): void {
    this.calls.length = 0;
    this.faults = [];
    this.latencyMs = 0;
    this.down = false;
    this.droppedConnections = 0;
  }

  /** Answer the next `n` matching requests with an STS error instead of forwarding them. */
  failNext(n: number, fault: StsFault = {}): void {
    if (n > 0) this.faults.push({ remaining: n, fault });
  }

  /** Number of injected failures still pending. */
  get pendingFailures(): number {
    return this.faults.reduce((sum, f) => sum + f.remaining, 0);
  }

  /** While down, every connection is destroyed at once (existing ones too). */
  setDown(down: boolean): void {
    this.down = down;
    if (down) {
      for (const s of this.sockets) {
        this.droppedConnections++;
        s.destroy();
      }
    }
  }

  setLatency(ms: number): void {
    this.latencyMs = ms;
  }

  private onConnection(socket: Socket): void {
    if (this.down) {
      this.droppedConnections++;
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private takeFault(action: string): StsFault | undefined {
    const idx = this.faults.findIndex((f) => f.fault.action === undefined || f.fault.action === action);
    if (idx < 0) return undefined;
    const pending = this.faults[idx]!;
    pending.remaining--;
    if (pending.remaining <= 0) this.faults.splice(idx, 1);
    return pending.fault;
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => res.destroy());
    req.on('end', () => {
      if (this.down) {
        req.socket.destroy();
        return;
      }
      const body = Buffer.concat(chunks);
      const method = req.method ?? 'GET';
      const url = req.url ?? '/';
      const { action, params } = parseStsRequest(method, url, req.headers, body);
      const duration = params['DurationSeconds'];
      const auth = header(req.headers, 'authorization');
      const call: StsCall = {
        action,
        params,
        time: Date.now(),
        outcome: 'forwarded',
        ...(params['RoleArn'] !== undefined && { roleArn: params['RoleArn'] }),
        ...(params['RoleSessionName'] !== undefined && { sessionName: params['RoleSessionName'] }),
        ...(params['ExternalId'] !== undefined && { externalId: params['ExternalId'] }),
        ...(duration !== undefined && { durationSeconds: Number(duration) }),
      };
      const akid = auth === undefined ? undefined : /Credential=([^/,\s]+)\//.exec(auth)?.[1];
      if (akid !== undefined) call.accessKeyId = akid;
      const region = auth === undefined ? undefined : /Credential=[^/,\s]+\/\d{8}\/([^/,\s]+)\/sts\/aws4_request/.exec(auth)?.[1];
      if (region !== undefined) call.region = region;
      const host = header(req.headers, 'host');
      if (host !== undefined) call.host = host;
      this.calls.push(call);

      // A refused caller is refused whatever else is injected, and consumes no fault.
      const refused = action === 'AssumeRole' && akid !== undefined && this.refusedKeys.has(akid);
      const fault = refused ? undefined : this.takeFault(action);
      const go = (): void => {
        if (res.destroyed) return;
        if (this.down) {
          req.socket.destroy();
          return;
        }
        if (!refused && fault === undefined && action === 'AssumeRole' && call.roleArn !== undefined && this.answerRoles?.test(call.roleArn) === true) {
          call.outcome = 'answered';
          this.sendCredentials(res, call);
        } else if (refused) {
          call.outcome = 'refused';
          // What STS answers when the role's trust policy does not allow the caller.
          this.sendFault(res, call, { status: 403, code: 'AccessDenied', message: `User: ${akid} is not authorized to perform: sts:AssumeRole on resource: ${call.roleArn ?? '(none)'}`, type: 'Sender' });
        } else if (fault !== undefined) {
          call.outcome = 'failed';
          this.sendFault(res, call, fault);
        } else {
          this.forward(req, res, body, call);
        }
      };
      if (this.latencyMs > 0) {
        const t = setTimeout(() => {
          this.timers.delete(t);
          go();
        }, this.latencyMs);
        this.timers.add(t);
      } else {
        go();
      }
    });
  }

  /** An AssumeRole answer made here: fresh credentials for the call's role and session, in STS's XML. */
  private sendCredentials(res: ServerResponse, call: StsCall): void {
    const accessKeyId = `ASIA${randomBytes(8).toString('hex').toUpperCase()}`;
    const session = call.sessionName ?? 'session';
    const roleName = (call.roleArn ?? '').replace(/^.*:role\//, '');
    const account = /^arn:aws:iam::(\d+):/.exec(call.roleArn ?? '')?.[1] ?? '123456789012';
    const expiration = new Date(Date.now() + (call.durationSeconds ?? 3600) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    const requestId = randomUUID();
    const xml =
      '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">\n  <AssumeRoleResult>\n    <Credentials>\n' +
      `      <AccessKeyId>${accessKeyId}</AccessKeyId>\n      <SecretAccessKey>${randomBytes(30).toString('base64')}</SecretAccessKey>\n` +
      `      <SessionToken>${randomBytes(200).toString('base64')}</SessionToken>\n      <Expiration>${expiration}</Expiration>\n    </Credentials>\n` +
      `    <AssumedRoleUser>\n      <AssumedRoleId>AROA${randomBytes(8).toString('hex').toUpperCase()}:${escapeXml(session)}</AssumedRoleId>\n` +
      `      <Arn>arn:aws:sts::${account}:assumed-role/${escapeXml(roleName)}/${escapeXml(session)}</Arn>\n    </AssumedRoleUser>\n  </AssumeRoleResult>\n` +
      `  <ResponseMetadata>\n    <RequestId>${requestId}</RequestId>\n  </ResponseMetadata>\n</AssumeRoleResponse>\n`;
    const buf = Buffer.from(xml, 'utf8');
    call.status = 200;
    call.issuedAccessKeyId = accessKeyId;
    res.writeHead(200, { 'Content-Type': 'text/xml', 'Content-Length': String(buf.length), 'x-amzn-RequestId': requestId, Date: new Date().toUTCString() });
    res.end(buf);
  }

  private sendFault(res: ServerResponse, call: StsCall, fault: StsFault): void {
    const status = fault.status ?? 400;
    const requestId = randomUUID();
    const xml = stsErrorXml(
      fault.code ?? 'Throttling',
      fault.message ?? 'Rate exceeded',
      fault.type ?? (status >= 500 ? 'Receiver' : 'Sender'),
      requestId,
    );
    const buf = Buffer.from(xml, 'utf8');
    call.status = status;
    res.writeHead(status, {
      'Content-Type': 'text/xml',
      'Content-Length': String(buf.length),
      'x-amzn-RequestId': requestId,
      Date: new Date().toUTCString(),
    });
    res.end(buf);
  }

  private forward(req: IncomingMessage, res: ServerResponse, body: Buffer, call: StsCall): void {
    const basePath = this.targetUrl.pathname.replace(/\/$/, '');
    const headers: Record<string, string | string[]> = {};
    // rawHeaders keeps the original case and order; forward them verbatim.
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!;
      const value = req.rawHeaders[i + 1]!;
      const lower = name.toLowerCase();
      if (lower === 'connection' || lower === 'keep-alive' || lower === 'transfer-encoding') continue;
      const prev = headers[name];
      headers[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
    }
    // The body was buffered, so send it with an exact length.
    for (const k of Object.keys(headers)) if (k.toLowerCase() === 'content-length') delete headers[k];
    if (body.length > 0 || req.method === 'POST' || req.method === 'PUT') headers['Content-Length'] = String(body.length);

    const upstream = http.request(
      {
        protocol: 'http:',
        hostname: this.targetUrl.hostname,
        port: this.targetUrl.port || 80,
        method: req.method,
        path: `${basePath}${req.url ?? '/'}`,
        headers,
        agent: this.agent,
        setHost: false,
      },
      (up) => {
        call.status = up.statusCode ?? 502;
        const outHeaders: Record<string, string | string[]> = {};
        for (let i = 0; i + 1 < up.rawHeaders.length; i += 2) {
          const name = up.rawHeaders[i]!;
          const lower = name.toLowerCase();
          if (lower === 'connection' || lower === 'keep-alive') continue;
          const value = up.rawHeaders[i + 1]!;
          const prev = outHeaders[name];
          outHeaders[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
        }
        res.writeHead(call.status, up.statusMessage, outHeaders);
        if (call.action === 'AssumeRole' && call.status === 200) {
          const body: Buffer[] = [];
          up.on('data', (c: Buffer) => body.push(c));
          up.on('end', () => {
            const issued = /<AccessKeyId>([^<]+)<\/AccessKeyId>/.exec(Buffer.concat(body).toString('utf8'))?.[1];
            if (issued !== undefined) call.issuedAccessKeyId = issued;
          });
        }
        up.pipe(res);
        up.on('error', () => res.destroy());
      },
    );
    if (!('host' in req.headers)) upstream.setHeader('Host', this.targetUrl.host);
    upstream.on('error', (err) => {
      call.outcome = 'error';
      if (res.headersSent) {
        res.destroy();
        return;
      }
      call.status = 502;
      const requestId = randomUUID();
      const buf = Buffer.from(
        stsErrorXml('ServiceUnavailable', `StsProxy: upstream error: ${err.message}`, 'Receiver', requestId),
      );
      res.writeHead(502, { 'Content-Type': 'text/xml', 'Content-Length': String(buf.length) });
      res.end(buf);
    });
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    upstream.end(body);
  }
}
