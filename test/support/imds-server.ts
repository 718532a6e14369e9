/**
 * FakeImds: a fake EC2 instance metadata service (IMDS) that follows EC2's rules
 * closely enough to test a metadata proxy against it.
 *
 * Rules implemented (as documented for EC2 IMDSv2):
 *  - `PUT /latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds`, an integer
 *    1..21600, else 400. The reply body is a random token and the reply echoes the TTL header.
 *  - A PUT to a dated token path (`/2021-03-23/api/token`) is 403, and so is any PUT that
 *    carries `X-Forwarded-For`.
 *  - A GET/HEAD carrying `X-aws-ec2-metadata-token` with an unknown or expired token is 401;
 *    with `requireV2` a GET/HEAD without a token is 401.
 *  - Responses are `text/plain` with `Server: EC2ws`; directory listings are newline
 *    separated, subdirectories end in `/`. Unknown paths are 404; methods other than
 *    GET/HEAD/PUT are 405.
 *
 * Every request (method, path, headers) is recorded in `requests`.
 */
import http from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { closeServer, hostUrl, listen } from './net.js';

/** Node (instance profile) credentials served by the fake. Assert these never reach a pod. */
export const NODE_ACCESS_KEY_ID = 'ASIANODE0000EXAMPLE1';
export const NODE_SECRET = 'NODESECRET0000000000wJalrXUtnFEMIK7MDENG';
export const NODE_TOKEN =
  'NODETOKEN//////////wEaCXVzLWVhc3QtMSJHMEUCIQDnodeSessionTokenExampleOnlyForTestsAAAAAAAAAAAAAAAAAAAAAAAA==';
/** Node identity credentials (`identity-credentials/ec2/security-credentials/ec2-instance`). */
export const NODE_IDENTITY_ACCESS_KEY_ID = 'ASIANODEIDENTITY0001';
export const NODE_IDENTITY_SECRET = 'NODESECRETIDENTITY000000000000000000000X';
export const NODE_IDENTITY_TOKEN =
  'NODETOKENIDENTITY///wEaCXVzLWVhc3QtMSJHMEUCIQDnodeIdentityTokenExampleOnlyForTestsAAAAAAAAAAAAAAAAAAAA==';
/** Every secret-ish node string, for "never leaks" assertions. */
export const NODE_CREDENTIAL_STRINGS: readonly string[] = [
  NODE_ACCESS_KEY_ID,
  NODE_SECRET,
  NODE_TOKEN,
  NODE_IDENTITY_ACCESS_KEY_ID,
  NODE_IDENTITY_SECRET,
  NODE_IDENTITY_TOKEN,
];

export const INSTANCE_ID = 'i-0123456789abcdef0';
export const LOCAL_IPV4 = '10.0.1.23';
export const AMI_ID = 'ami-0abcdef1234567890';
export const INSTANCE_TYPE = 'm5.large';
export const INSTANCE_PROFILE_ID = 'AIPAEXAMPLENODE000001';
export const USER_DATA = '#!/bin/bash\necho "hello from fake user-data"\n';

export const TOKEN_TTL_HEADER = 'x-aws-ec2-metadata-token-ttl-seconds';
export const TOKEN_HEADER = 'x-aws-ec2-metadata-token';
export const MAX_TOKEN_TTL_SECONDS = 21600;

export interface FakeImdsOptions {
  /** Default 0 (ephemeral). */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** IMDSv2 only: GETs without a token are 401. Default false. */
  requireV2?: boolean;
  /** Instance profile role name. Default 'node-role'. */
  nodeRole?: string;
  /** Default '123456789012'. */
  accountId?: string;
  /** Default 'us-east-1'. */
  region?: string;
  /** Delay before every response. Default 0. */
  latencyMs?: number;
  /** How long an idle keep-alive connection is kept open. Default 1000. */
  keepAliveMs?: number;
}

export interface RecordedImdsRequest {
  method: string;
  /** The raw request target (path plus any query string). */
  path: string;
  /** Lower-cased header names, as Node parses them. */
  headers: IncomingHttpHeaders;
  time: number;
}

type Tree = { [name: string]: Tree | string };

const VERSION_RE = /^(?:latest|\d{4}-\d{2}-\d{2})$/;
const VERSIONS = ['1.0', '2007-01-19', '2008-02-01', '2009-04-04', '2012-01-12', '2016-09-02', '2021-03-23', 'latest'];

/** `2024-01-02T03:04:05Z` (second precision, like EC2). */
function isoSeconds(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export class FakeImds {
  readonly requests: RecordedImdsRequest[] = [];
  readonly url: string;
  readonly port: number;
  readonly host: string;
  readonly nodeRole: string;
  readonly accountId: string;
  readonly region: string;

  private requireV2: boolean;
  private latencyMs: number;
  private readonly tokens = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly startedAt = Date.now();

  private constructor(
    private readonly server: http.Server,
    host: string,
    port: number,
    opts: FakeImdsOptions,
  ) {
    this.host = host;
    this.port = port;
    this.url = hostUrl(host, port);
    this.requireV2 = opts.requireV2 ?? false;
    this.latencyMs = opts.latencyMs ?? 0;
    this.nodeRole = opts.nodeRole ?? 'node-role';
    this.accountId = opts.accountId ?? '123456789012';
    this.region = opts.region ?? 'us-east-1';
  }

  static async start(opts: FakeImdsOptions = {}): Promise<FakeImds> {
    const host = opts.host ?? '127.0.0.1';
    const server = http.createServer();
    server.keepAliveTimeout = opts.keepAliveMs ?? 1000;
    const port = await listen(server, opts.port ?? 0, host);
    const imds = new FakeImds(server, host, port, opts);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => imds.onRequest(req, res));
    return imds;
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await closeServer(this.server);
  }

  setLatency(ms: number): void {
    this.latencyMs = ms;
  }

  setRequireV2(required: boolean): void {
    this.requireV2 = required;
  }

  /** Make every token issued so far invalid (as if its TTL had elapsed). */
  expireTokens(): void {
    for (const token of this.tokens.keys()) this.tokens.set(token, 0);
  }

  /** Number of tokens issued so far. */
  get tokensIssued(): number {
    return this.tokens.size;
  }

  clearRequests(): void {
    this.requests.length = 0;
  }

  /** Requests whose path (without query) equals `path`. */
  requestsTo(path: string): RecordedImdsRequest[] {
    return this.requests.filter((r) => r.path.split('?')[0] === path);
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    this.requests.push({ method, path, headers: { ...req.headers }, time: Date.now() });
    // Drain any body; IMDS ignores it.
    req.resume();
    req.on('end', () => {
      const reply = (): void => {
        if (res.destroyed) return;
        this.handle(method, path, req.headers, res);
      };
      if (this.latencyMs > 0) {
        const t = setTimeout(() => {
          this.timers.delete(t);
          reply();
        }, this.latencyMs);
        this.timers.add(t);
      } else {
        reply();
      }
    });
  }

  private send(
    res: ServerResponse,
    method: string,
    status: number,
    body: string,
    extraHeaders: Record<string, string> = {},
  ): void {
    const buf = Buffer.from(body, 'utf8');
    res.writeHead(status, {
      'Content-Type': 'text/plain',
      'Content-Length': String(buf.length),
      Server: 'EC2ws',
      Date: new Date().toUTCString(),
      ...extraHeaders,
    });
    res.end(method === 'HEAD' ? undefined : buf);
  }

  private handle(method: string, rawPath: string, headers: IncomingHttpHeaders, res: ServerResponse): void {
    const pathname = rawPath.split('?')[0] ?? '/';

    if (method === 'PUT') {
      this.handlePut(pathname, headers, res);
      return;
    }
    if (method !== 'GET' && method !== 'HEAD') {
      this.send(res, method, 405, 'Method Not Allowed\n', { Allow: 'GET, HEAD, PUT' });
      return;
    }

    // Token validation happens before routing, as on EC2.
    const token = headers[TOKEN_HEADER];
    if (token !== undefined) {
      const value = Array.isArray(token) ? token[0] : token;
      const exp = value === undefined ? undefined : this.tokens.get(value);
      if (exp === undefined || exp <= Date.now()) {
        this.send(res, method, 401, 'Unauthorized\n');
        return;
      }
    } else if (this.requireV2) {
      this.send(res, method, 401, 'Unauthorized\n');
      return;
    }

    if (pathname === '/') {
      this.send(res, method, 200, VERSIONS.join('\n'));
      return;
    }
    const segments = pathname.split('/').filter((s) => s !== '');
    const version = segments.shift();
    if (version === undefined || !VERSION_RE.test(version)) {
      this.send(res, method, 404, 'Not Found\n');
      return;
    }
    if (segments[0] === 'api' && segments[1] === 'token' && segments.length === 2) {
      this.send(res, method, 405, 'Method Not Allowed\n', { Allow: 'PUT' });
      return;
    }

    let node: Tree | string = this.tree();
    for (const seg of segments) {
      if (typeof node === 'string' || !Object.prototype.hasOwnProperty.call(node, seg)) {
        this.send(res, method, 404, 'Not Found\n');
        return;
      }
      node = node[seg] as Tree | string;
    }
    if (typeof node === 'string') {
      this.send(res, method, 200, node);
    } else {
      // EC2 marks subdirectories with a trailing '/', except in the top-level /latest/ listing.
      const top = segments.length === 0;
      const listing = Object.entries(node).map(([k, v]) => (typeof v === 'string' || top ? k : `${k}/`));
      if (top) listing.sort();
      this.send(res, method, 200, listing.join('\n'));
    }
  }

  private handlePut(pathname: string, headers: IncomingHttpHeaders, res: ServerResponse): void {
    if (headers['x-forwarded-for'] !== undefined) {
      this.send(res, 'PUT', 403, 'Forbidden\n');
      return;
    }
    const m = /^\/([^/]+)\/api\/token\/?$/.exec(pathname);
    if (m === null) {
      this.send(res, 'PUT', 405, 'Method Not Allowed\n', { Allow: 'GET, HEAD' });
      return;
    }
    if (m[1] !== 'latest') {
      this.send(res, 'PUT', 403, 'Forbidden\n');
      return;
    }
    const rawTtl = headers[TOKEN_TTL_HEADER];
    const ttlText = Array.isArray(rawTtl) ? rawTtl[0] : rawTtl;
    const ttl = ttlText !== undefined && /^\d+$/.test(ttlText.trim()) ? Number(ttlText.trim()) : NaN;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TOKEN_TTL_SECONDS) {
      this.send(res, 'PUT', 400, 'Bad Request\n');
      return;
    }
    const token = randomBytes(42).toString('base64');
    this.tokens.set(token, Date.now() + ttl * 1000);
    this.send(res, 'PUT', 200, token, { 'X-aws-ec2-metadata-token-ttl-seconds': String(ttl) });
  }

  private credentialsJson(accessKeyId: string, secret: string, token: string): string {
    const now = Date.now();
    return JSON.stringify(
      {
        Code: 'Success',
        LastUpdated: isoSeconds(now - 60_000),
        Type: 'AWS-HMAC',
        AccessKeyId: accessKeyId,
        SecretAccessKey: secret,
        Token: token,
        Expiration: isoSeconds(now + 6 * 3600_000),
      },
      null,
      2,
    );
  }

  /** Built per request so timestamps are fresh. */
  private tree(): Tree {
    const az = `${this.region}a`;
    const mac = '0e:12:34:56:78:9a';
    const identityDocument = JSON.stringify(
      {
        accountId: this.accountId,
        architecture: 'x86_64',
        availabilityZone: az,
        billingProducts: null,
        devpayProductCodes: null,
        marketplaceProductCodes: null,
        imageId: AMI_ID,
        instanceId: INSTANCE_ID,
        instanceType: INSTANCE_TYPE,
        kernelId: null,
        pendingTime: isoSeconds(this.startedAt),
        privateIp: LOCAL_IPV4,
        ramdiskId: null,
        region: this.region,
        version: '2017-09-30',
      },
      null,
      2,
    );
    const localHostname = `ip-${LOCAL_IPV4.replaceAll('.', '-')}.ec2.internal`;
    return {
      'meta-data': {
        'ami-id': AMI_ID,
        'ami-launch-index': '0',
        hostname: localHostname,
        iam: {
          info: JSON.stringify(
            {
              Code: 'Success',
              LastUpdated: isoSeconds(Date.now() - 60_000),
              InstanceProfileArn: `arn:aws:iam::${this.accountId}:instance-profile/${this.nodeRole}`,
              InstanceProfileId: INSTANCE_PROFILE_ID,
            },
            null,
            2,
          ),
          'security-credentials': {
            [this.nodeRole]: this.credentialsJson(NODE_ACCESS_KEY_ID, NODE_SECRET, NODE_TOKEN),
          },
        },
        'identity-credentials': {
          ec2: {
            info: JSON.stringify(
              { Code: 'Success', LastUpdated: isoSeconds(Date.now() - 60_000), AccountId: this.accountId },
              null,
              2,
            ),
            'security-credentials': {
              'ec2-instance': this.credentialsJson(
                NODE_IDENTITY_ACCESS_KEY_ID,
                NODE_IDENTITY_SECRET,
                NODE_IDENTITY_TOKEN,
              ),
            },
          },
        },
        'instance-id': INSTANCE_ID,
        'instance-type': INSTANCE_TYPE,
        'local-hostname': localHostname,
        'local-ipv4': LOCAL_IPV4,
        mac,
        placement: {
          'availability-zone': az,
          'availability-zone-id': 'use1-az1',
          region: this.region,
        },
        'reservation-id': 'r-0123456789abcdef0',
        'security-groups': 'node-sg',
      },
      dynamic: {
        'instance-identity': {
          document: identityDocument,
        },
      },
      'user-data': USER_DATA,
    };
  }
}
