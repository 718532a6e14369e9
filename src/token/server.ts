/**
 * Builds (does not start) the token listener: GET /v1/credentials only, JSON errors
 * `{"code","message"}`, and the same server-side bounds as the metadata server.
 */
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BadRequest, PodiamError, toJsonHttpResponse } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { remoteIp } from '../server.js';
import type { TokenAnswer, TokenCredentials } from './credentials.js';

export interface TokenServerDeps {
  readonly credentials: TokenCredentials;
  readonly metrics: Metrics;
  readonly log: Logger;
}

const ROUTE = 'container-credentials';
const PATH = '/v1/credentials';

export function createTokenServer(deps: TokenServerDeps): http.Server {
  const { credentials, metrics, log } = deps;
  const logDenial = denialLogger(log);

  const send = (res: ServerResponse, status: number, body: string | Buffer): void => {
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  };

  const fail = (req: IncomingMessage, res: ServerResponse, err: unknown): void => {
    const answer = toJsonHttpResponse(err);
    if (!(err instanceof PodiamError)) log.error('unexpected error', { route: ROUTE, error: (err as Error)?.stack ?? String(err) });
    else logDenial(answer.status, answer.code, err.message, req);
    if (answer.status === 401 || answer.status === 403 || answer.status === 404) metrics.denials.inc({ code: answer.code });
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof BadRequest) res.setHeader('Connection', 'close');
    send(res, answer.status, answer.body);
  };

  return http.createServer(
    { requestTimeout: 10_000, headersTimeout: 5_000, maxHeaderSize: 32 * 1024, keepAliveTimeout: 65_000, connectionsCheckingInterval: 1_000 },
    (req, res) => {
      const started = performance.now();
      const observe = (): void => metrics.observeRequest(ROUTE, res.statusCode, (performance.now() - started) / 1000);
      const q = (req.url ?? '/').indexOf('?');
      const path = q === -1 ? req.url : req.url!.slice(0, q);
      if (path !== PATH) {
        fail(req, res, new BadRequest(404, `only GET ${PATH} is served here`));
        return observe();
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        fail(req, res, new BadRequest(405, `${req.method} is not allowed on ${PATH}`));
        return observe();
      }
      const authorization = req.headers.authorization;
      // Reviewed token, live pod, fresh credentials: answered in this tick.
      const now = credentials.credentialsNow(authorization, req.socket);
      if (now !== undefined) {
        send(res, 200, now.body);
        return observe();
      }
      credentials.credentials(authorization).then(
        (answer: TokenAnswer) => {
          send(res, 200, answer.body);
          observe();
        },
        (err: unknown) => {
          fail(req, res, err);
          observe();
        },
      );
    },
  ).on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n', () => socket.destroy());
    else socket.destroy();
  });
}

/**
 * One log line per refusal, at most one per second per error code (a pod retrying with a bad
 * token must not flood the log); the lines skipped are counted in the next one. Never the token.
 */
function denialLogger(log: Logger): (status: number, code: string, reason: string, req: IncomingMessage) => void {
  const last = new Map<string, { atMs: number; suppressed: number }>();
  return (status, code, reason, req) => {
    const now = Date.now();
    const seen = last.get(code);
    if (seen !== undefined && now - seen.atMs < 1000) {
      seen.suppressed++;
      return;
    }
    log.info('token credentials refused', { path: 'token', status, code, reason, ip: remoteIp(req), ...(seen?.suppressed ? { suppressed: seen.suppressed } : {}) });
    last.set(code, { atMs: now, suppressed: 0 });
  };
}
