/**
 * The only module that talks to the real metadata service: every path podiam does not answer
 * itself goes there through http-proxy, IMDSv2 token requests included.
 */
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import httpProxy from 'http-proxy';
import { UpstreamUnavailable } from '../errors.js';

export interface PassthroughOptions {
  readonly host: string;
  readonly port: number;
  readonly timeoutMs: number;
}

export const TOKEN_HEADER = 'x-aws-ec2-metadata-token';
export const TTL_HEADER = 'x-aws-ec2-metadata-token-ttl-seconds';

/** Headers a pod may not pass upstream: EC2 refuses token PUTs that carry X-Forwarded-For. */
const STRIPPED = ['x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'forwarded', 'x-real-ip'];

export class Passthrough {
  private readonly agent: http.Agent;
  private readonly proxy: httpProxy;
  readonly target: string;

  constructor(private readonly options: PassthroughOptions) {
    const host = options.host.includes(':') ? `[${options.host}]` : options.host;
    this.target = `http://${host}:${options.port}`;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 128, maxFreeSockets: 128, timeout: 30_000 });
    this.proxy = httpProxy.createProxyServer({
      target: this.target,
      agent: this.agent,
      // Never add X-Forwarded-For: EC2 answers 403 to a token PUT that has it.
      xfwd: false,
      changeOrigin: true,
      proxyTimeout: options.timeoutMs,
      ignorePath: false,
    });
    this.proxy.on('proxyReq', (proxyReq) => {
      for (const h of STRIPPED) proxyReq.removeHeader(h);
    });
  }

  /**
   * Forwards the request; on failure calls onError with a 502 naming the reason.
   * `upstreamToken` replaces the pod's IMDSv2 token header (see tokens.ts).
   */
  forward(req: IncomingMessage, res: ServerResponse, path: string, onError: (err: UpstreamUnavailable) => void, upstreamToken?: string): void {
    const started = performance.now();
    req.url = path;
    if (upstreamToken !== undefined) req.headers[TOKEN_HEADER] = upstreamToken;
    this.proxy.web(req, res, {}, (err: Error & { code?: string }) => {
      const elapsed = Math.round(performance.now() - started);
      const reason =
        elapsed >= this.options.timeoutMs - 5 && (err.code === 'ECONNRESET' || err.message === 'socket hang up')
          ? `no answer from ${this.target} within ${this.options.timeoutMs} ms`
          : `${err.code ?? err.message} from ${this.target} after ${elapsed} ms`;
      onError(new UpstreamUnavailable(reason));
    });
  }

  /**
   * A token PUT to the real metadata service with only the TTL header the pod sent (EC2 checks
   * it: 400 when missing or out of range). Resolves with EC2's answer, whatever its status.
   */
  token(ttlHeader: string | undefined): Promise<{ status: number; body: string; ttl: string | undefined }> {
    return this.request('PUT', '/latest/api/token', ttlHeader === undefined ? {} : { [TTL_HEADER]: ttlHeader }).then((r) => ({
      status: r.status,
      body: r.body,
      ttl: r.ttl,
    }));
  }

  /**
   * A GET of one metadata path from podiam itself (used for --auto-discover-base-arn), with an
   * IMDSv2 token when the service gives one and IMDSv1 otherwise, as the SDKs do.
   */
  async fetch(path: string): Promise<string> {
    const token = await this.request('PUT', '/latest/api/token', { [TTL_HEADER]: '60' }).then(
      (r) => (r.status === 200 ? r.body : undefined),
      () => undefined,
    );
    const r = await this.request('GET', path, token ? { [TOKEN_HEADER]: token } : {});
    if (r.status !== 200) throw new UpstreamUnavailable(`GET ${path} answered ${r.status}`);
    return r.body;
  }

  /** The status of a token-less GET (401 where the node requires IMDSv2); rejects when there is no answer. */
  async statusWithoutToken(path: string): Promise<number> {
    return (await this.request('GET', path, {})).status;
  }

  close(): void {
    this.proxy.close();
    this.agent.destroy();
  }

  private request(method: string, path: string, headers: Record<string, string>): Promise<{ status: number; body: string; ttl: string | undefined }> {
    return new Promise((resolve, reject) => {
      // A bodiless PUT says so (no chunked encoding towards the metadata service).
      const sent = method === 'PUT' ? { ...headers, 'content-length': '0' } : headers;
      const req = http.request(
        { host: this.options.host, port: this.options.port, method, path, headers: sent, agent: this.agent, timeout: this.options.timeoutMs },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            if (body.length < 65536) body += c;
          });
          const ttl = res.headers[TTL_HEADER];
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ttl: typeof ttl === 'string' ? ttl : undefined }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`timed out after ${this.options.timeoutMs} ms`)));
      req.on('error', (err) => reject(new UpstreamUnavailable(`${method} ${path}: ${err.message}`)));
      req.end();
    });
  }
}

/** kube2iam --auto-discover-base-arn: instance-profile ARN -> role ARN prefix, path dropped. */
export function baseArnFromIamInfo(iamInfoJson: string): string | undefined {
  let arn: unknown;
  try {
    arn = (JSON.parse(iamInfoJson) as { InstanceProfileArn?: unknown }).InstanceProfileArn;
  } catch {
    return undefined;
  }
  if (typeof arn !== 'string') return undefined;
  const m = /^(arn:aws[a-z-]*:iam::\d{12}):instance-profile\//.exec(arn);
  return m ? `${m[1]}:role/` : undefined;
}
