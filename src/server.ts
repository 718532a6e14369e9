/**
 * Builds (does not start) podiam's HTTP server: path safety, routes, timeouts, and the one
 * place where errors become HTTP answers.
 */
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BadRequest, ImdsTokenRequired, PathRefused, PodiamError, toHttpResponse } from './errors.js';
import type { PathKind } from './imds/allow-list.js';
import { TOKEN_PATH, checkMethod, classifyPath, isUserData } from './imds/allow-list.js';
import type { Callers } from './imds/callers.js';
import { callerId } from './imds/callers.js';
import type { CredentialAnswer, CredentialRoutes } from './imds/credentials.js';
import type { Passthrough } from './imds/passthrough.js';
import { TOKEN_HEADER, TTL_HEADER } from './imds/passthrough.js';
import { TokenBroker } from './imds/tokens.js';
import type { TokenHolder } from './imds/tokens.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import type { PodInfo } from './roles.js';

export interface Health {
  readonly ready: boolean;
  readonly [part: string]: unknown;
}

export interface ServerDeps {
  readonly credentials: CredentialRoutes;
  readonly passthrough: Passthrough;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly health: () => Health;
  /** Serve /metrics on this server (when --metrics-port equals --app-port). */
  readonly serveMetrics: boolean;
  /** --debug: serve /debug/store, to the node itself only (loopback or --host-ip): pods never see the index. */
  readonly debugStore?: () => unknown;
  readonly hostIp?: string;
  readonly tokens?: TokenBroker;
  /** --allow-signed-identity: forward pkcs7/signature/rsa2048 (the node's signed identity) to pods. */
  readonly allowSignedIdentity?: boolean;
  /** Who may use the token route and the forwarded paths: this node's pods and the node itself. */
  readonly callers: Pick<Callers, 'admit'>;
  /** --allow-user-data: forward user-data to pods too (the node always gets it). */
  readonly allowUserData?: boolean;
  /** IMDSv2 required (src/imds/token-policy.ts): a GET without a valid token is 401, as on EC2. */
  readonly imdsTokensRequired?: () => boolean;
}

const MAX_PATH = 1024;
const TOKEN_MISSING = `IMDSv2 is required on this node: PUT ${TOKEN_PATH} for a token and send it in X-aws-ec2-metadata-token`;
const MAX_BODY = 64 * 1024;
const TEXT = 'text/plain';

/** Routes, for metrics labels; bounded, so label cardinality is too. */
type Route = 'credentials' | 'role-name' | 'iam-info' | 'iam' | 'token' | 'proxy' | 'refused' | 'health' | 'metrics' | 'debug' | 'invalid';

/** The metadata version segment: latest, 1.0 or a date (EC2 serves all of them). */
const VERSION = '(?:latest|1\\.0|\\d{4}-\\d{2}-\\d{2})';
// Case-insensitive on purpose: whatever the real IMDS would do with IAM/ or Identity-Credentials/,
// those paths never reach it from a pod.
const IAM_PATH = new RegExp(`^/${VERSION}/meta-data/iam(?:/(.*))?$`, 'i');
const IDENTITY_PATH = new RegExp(`^/${VERSION}/meta-data/identity-credentials(?:/.*)?$`, 'i');
// The node's signed identity: with it a pod could authenticate as the node (Vault's and SPIRE's
// AWS attestors accept it). The unsigned document (region, account) stays available.
const SIGNED_IDENTITY_PATH = new RegExp(`^/${VERSION}/dynamic/instance-identity/(?:pkcs7|signature|rsa2048)/?$`, 'i');

/**
 * Security-relevant: the decision is taken on the decoded path, and a path that could mean
 * something else upstream (dot segments, encoded or doubled slashes, backslashes, control
 * characters) is refused, so no spelling of a refused path reaches the real service.
 */
export function safePath(rawUrl: string): { path: string; decoded: string } {
  const q = rawUrl.indexOf('?');
  const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
  if (path.length > MAX_PATH) throw new BadRequest(414, `path longer than ${MAX_PATH} bytes`);
  if (!path.startsWith('/')) throw new BadRequest(400, 'path must start with /');
  // http-proxy cuts the upstream path at '#': refuse it, so the path judged is the path sent.
  if (path.includes('#')) throw new BadRequest(400, 'path must not contain #');
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    throw new BadRequest(400, 'path has invalid percent-encoding');
  }
  if (/[\\\u0000-\u001f\u007f]/.test(decoded) || decoded.includes('//') || /%2f|%5c/i.test(path) || /(^|\/)\.{1,2}(\/|$)/.test(decoded)) {
    throw new BadRequest(400, 'path has dot segments, doubled or encoded slashes, or control characters');
  }
  return { path, decoded };
}

/** What a request URL means, decided once per distinct URL (see parseUrl). */
interface ParsedUrl {
  readonly path: string;
  readonly decoded: string;
  /** What the allow-list makes of the path (allow-list.ts); a path it refuses is never parsed. */
  readonly kind: PathKind;
  /** The part after meta-data/iam/ ('' for meta-data/iam itself); undefined for other paths. */
  readonly iamRest: string | undefined;
  /** For .../security-credentials[/<role>]: the role asked for, '' for the listing; else undefined. */
  readonly credentialRole: string | undefined;
}

/** Distinct URLs remembered; pods ask for the same few, and an unbounded set must not grow memory. */
const PARSED_URLS_MAX = 512;

export function createServer(deps: ServerDeps): http.Server {
  const { credentials, passthrough, metrics, log } = deps;
  const tokens = deps.tokens ?? new TokenBroker();
  const tokensRequired = deps.imdsTokensRequired ?? (() => false);

  const holdsToken = (req: IncomingMessage, podIp: string, pod: PodInfo): boolean => {
    const token = req.headers[TOKEN_HEADER];
    return typeof token === 'string' && tokens.unwrap(token, { ip: podIp, id: callerId(pod) }) !== undefined;
  };

  /** With IMDSv2 required: the GET carries a token of this caller's, else EC2's 401. */
  const checkImdsToken = (req: IncomingMessage, holder: TokenHolder): void => {
    const token = req.headers[TOKEN_HEADER];
    if (token === undefined) throw new ImdsTokenRequired(TOKEN_MISSING);
    if (typeof token !== 'string' || tokens.unwrap(token, holder) === undefined) throw new ImdsTokenRequired(`the IMDSv2 token is invalid or expired; PUT ${TOKEN_PATH} for a new one`);
  };
  // winston's isDebugEnabled() walks the transports on every call; its answer only changes with the level.
  let debugLevel: string | undefined;
  let debugEnabled = false;
  const debugOn = (): boolean => {
    if (log.level !== debugLevel) {
      debugLevel = log.level;
      debugEnabled = log.isDebugEnabled();
    }
    return debugEnabled;
  };

  // safePath and the IAM route match, once per distinct URL: they are pure functions of it.
  // A URL safePath refuses is never remembered, so it is refused (and counted) every time.
  const parsedUrls = new Map<string, ParsedUrl>();
  const parseUrl = (rawUrl: string): ParsedUrl => {
    const known = parsedUrls.get(rawUrl);
    if (known !== undefined) return known;
    const { path, decoded } = safePath(rawUrl);
    const kind = classifyPath(path);
    const iam = IAM_PATH.exec(decoded);
    const iamRest = iam === null ? undefined : (iam[1] ?? '');
    const parts = iamRest === undefined ? null : /^security-credentials(?:\/([^/]*))?\/?$/i.exec(iamRest);
    const parsed: ParsedUrl = { path, decoded, kind, iamRest, credentialRole: parts === null ? undefined : (parts[1] ?? '') };
    if (parsedUrls.size >= PARSED_URLS_MAX) parsedUrls.clear();
    parsedUrls.set(rawUrl, parsed);
    return parsed;
  };

  const send = (res: ServerResponse, status: number, body: string | Buffer, contentType = TEXT): void => {
    res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body), Server: 'EC2ws' });
    res.end(body);
  };

  const fail = (req: IncomingMessage, res: ServerResponse, route: Route, err: unknown): void => {
    const answer = toHttpResponse(err);
    if (!(err instanceof PodiamError)) log.error('unexpected error', { route, error: (err as Error)?.stack ?? String(err) });
    else if (debugOn()) log.debug('request denied', { route, ip: remoteIp(req), status: answer.status, code: answer.code, reason: (err as Error).message });
    if (answer.status === 403 || answer.status === 404) metrics.denials.inc({ code: answer.code });
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // A refused request may still be sending its body: do not keep that connection.
    if (err instanceof BadRequest) res.setHeader('Connection', 'close');
    send(res, answer.status, answer.body);
  };

  const sendCredentials = (res: ServerResponse, answer: CredentialAnswer, podIp: string): void => {
    send(res, 200, answer.body);
    if (debugOn()) log.debug('credentials served', { pod: `${answer.pod.namespace}/${answer.pod.name}`, ip: podIp, roleArn: answer.role.roleArn });
  };

  /** Answers the request; `at.route` always names the route reached, for metrics and logs. */
  const handle = async (req: IncomingMessage, res: ServerResponse, at: { route: Route }): Promise<Route> => {
    const method = req.method ?? 'GET';
    const { path, decoded, kind, iamRest: rest, credentialRole } = parseUrl(req.url ?? '/');
    const podIp = remoteIp(req);
    // The allow-list, before any routing: GET/HEAD on metadata and local paths, PUT on the token route.
    checkMethod(method, kind, decoded);
    // IMDSv2 required: a token-less GET is refused before routing, as EC2 does.
    if (kind === 'metadata' && tokensRequired() && req.headers[TOKEN_HEADER] === undefined) throw new ImdsTokenRequired(TOKEN_MISSING);

    if (rest !== undefined) {
      if (tokensRequired()) {
        // Answered by podiam, not forwarded: the token is checked here, against its holder.
        const caller = await deps.callers.admit(podIp);
        checkImdsToken(req, { ip: podIp, id: caller.id });
      }
      if (credentialRole === '') {
        at.route = 'role-name';
        send(res, 200, await credentials.roleName(podIp));
        return 'role-name';
      }
      if (credentialRole !== undefined) {
        at.route = 'credentials';
        sendCredentials(res, await credentials.credentials(podIp, credentialRole), podIp);
        return 'credentials';
      }
      if (/^info\/?$/i.test(rest)) {
        at.route = 'iam-info';
        send(res, 200, await credentials.iamInfo(podIp));
        return 'iam-info';
      }
      if (rest === '') {
        send(res, 200, 'info\nsecurity-credentials/');
        return 'iam';
      }
      throw new BadRequest(404, `${decoded} not found`);
    }
    if (IDENTITY_PATH.test(decoded)) throw new PathRefused(decoded, "identity-credentials are the node's own");
    if (deps.allowSignedIdentity !== true && SIGNED_IDENTITY_PATH.test(decoded)) throw new PathRefused(decoded, "the signed instance identity is the node's own");

    switch (decoded) {
      case '/healthz':
        send(res, 200, 'ok\n');
        return 'health';
      case '/readyz': {
        const health = deps.health();
        send(res, health.ready ? 200 : 503, JSON.stringify(health) + '\n', 'application/json');
        return 'health';
      }
      case '/metrics':
        if (!deps.serveMetrics) break;
        send(res, 200, await metrics.registry.metrics(), metrics.registry.contentType);
        return 'metrics';
      case '/debug/store':
        if (deps.debugStore === undefined || !(isLoopback(podIp) || podIp === deps.hostIp)) break;
        send(res, 200, JSON.stringify(deps.debugStore(), null, 2) + '\n', 'application/json');
        return 'debug';
    }
    // A local path not served here (/metrics on its own port, /debug/store without --debug) is never forwarded.
    if (kind === 'local') throw new BadRequest(404, `${decoded} is not served here`);

    const length = Number(req.headers['content-length'] ?? 0);
    if (!(length <= MAX_BODY)) throw new BadRequest(413, `request body larger than ${MAX_BODY} bytes`);
    if (req.headers['transfer-encoding'] !== undefined) throw new BadRequest(411, 'chunked request bodies are not accepted');

    // Only this node's pods and the node itself get tokens or the real service's answers.
    at.route = kind === 'token' ? 'token' : 'proxy';
    const caller = await deps.callers.admit(podIp);
    const holder = { ip: podIp, id: caller.id };
    if (caller.kind === 'pod' && deps.allowUserData !== true && isUserData(decoded)) {
      throw new PathRefused(decoded, "user-data is the node's bootstrap script (kubeadm and kOps join tokens in it let a pod join the cluster as a node); --allow-user-data serves it");
    }

    if (kind === 'token') {
      at.route = 'token';
      // EC2 refuses token requests that came through a proxy (they carry X-Forwarded-For);
      // podiam keeps that protection for pods instead of hiding the header.
      if (req.headers['x-forwarded-for'] !== undefined) throw new BadRequest(403, 'token requests with X-Forwarded-For are refused (as EC2 does)');
      const ttl = req.headers[TTL_HEADER];
      const upstream = await passthrough.token(typeof ttl === 'string' ? ttl : undefined);
      if (upstream.status !== 200) {
        // EC2's own refusal (400 bad TTL, 403, 405...) reaches the SDK as is: it decides v1 fallback on it.
        send(res, upstream.status, upstream.body);
        return 'token';
      }
      const seconds = upstream.ttl ?? (typeof ttl === 'string' ? ttl : '21600');
      const podToken = tokens.wrap(upstream.body, Number(seconds), holder);
      res.writeHead(200, { 'Content-Type': TEXT, 'Content-Length': podToken.length, [TTL_HEADER]: seconds, Server: 'EC2ws' });
      res.end(podToken);
      return 'token';
    }

    // A pod's token stands for a real one only for that pod; anything else is EC2's 401.
    const podToken = req.headers[TOKEN_HEADER];
    let upstreamToken: string | undefined;
    if (podToken !== undefined) {
      upstreamToken = typeof podToken === 'string' ? tokens.unwrap(podToken, holder) : undefined;
      if (upstreamToken === undefined) throw new BadRequest(401, 'the IMDSv2 token is invalid or expired; PUT /latest/api/token for a new one');
    }
    at.route = 'proxy';
    await new Promise<void>((resolve) => {
      passthrough.forward(
        req,
        res,
        path,
        (err) => {
          fail(req, res, 'proxy', err);
          resolve();
        },
        upstreamToken,
      );
      res.on('close', () => resolve());
    });
    return 'proxy';
  };

  const server = http.createServer(
    {
      // Slowloris and oversized input are bounded by the server, before any handler runs.
      requestTimeout: 10_000,
      headersTimeout: 5_000,
      maxHeaderSize: 16 * 1024,
      keepAliveTimeout: 65_000,
      // How often those timeouts are enforced (Node's default is every 30 s).
      connectionsCheckingInterval: 1_000,
    },
    (req, res) => {
      const started = performance.now();
      // The hot path, a pod asking for its credentials, without handle()'s own async frame: the
      // same steps in the same order (parseUrl, remoteIp, method check, credentials, send, log).
      const parsed = parsedUrls.get(req.url ?? '/');
      if (parsed !== undefined && parsed.credentialRole !== undefined && parsed.credentialRole !== '' && (req.method === 'GET' || req.method === 'HEAD')) {
        const podIp = remoteIp(req);
        const now = credentials.credentialsNow(podIp, parsed.credentialRole);
        const required = tokensRequired();
        // Known pod, its own role, fresh credentials in memory (and, IMDSv2 required, the pod's own token: one Map lookup): answered in this tick.
        if (now !== undefined && (!required || holdsToken(req, podIp, now.pod))) {
          sendCredentials(res, now, podIp);
          observe(req, started, 'credentials', 200);
          return;
        }
        if (required) {
          // The full path checks the token against the caller and answers 401 as EC2 would.
          handleFull(req, res, started);
          return;
        }
        credentials.credentials(podIp, parsed.credentialRole).then(
          (answer) => {
            sendCredentials(res, answer, podIp);
            observe(req, started, 'credentials', res.statusCode);
          },
          (err: unknown) => failed(req, res, started, err, 'credentials'),
        );
        return;
      }
      handleFull(req, res, started);
    },
  );
  // Outside the request callback, so a request does not allocate them (two closures a request, before).
  function handleFull(req: IncomingMessage, res: ServerResponse, started: number): void {
    const at: { route: Route } = { route: 'invalid' };
    handle(req, res, at).then(
      (route) => observe(req, started, route, res.statusCode),
      (err: unknown) => failed(req, res, started, err, at.route),
    );
  }
  function failed(req: IncomingMessage, res: ServerResponse, started: number, err: unknown, reached: Route): void {
    const route: Route = err instanceof PathRefused ? 'refused' : err instanceof BadRequest ? 'invalid' : reached;
    fail(req, res, route, err);
    observe(req, started, route, res.statusCode);
  }
  function observe(req: IncomingMessage, started: number, route: Route, code: number): void {
    const seconds = (performance.now() - started) / 1000;
    metrics.observeRequest(route, code, seconds);
    // Requests are logged at debug only: the hot path never logs at info.
    if (debugOn()) log.debug('request', { method: req.method, path: req.url?.slice(0, 256), ip: remoteIp(req), route, status: code, ms: Math.round(seconds * 10_000) / 10 });
  }
  server.on('clientError', (err: Error & { code?: string }, socket) => {
    // Malformed, oversized or too slow: answer if we still can, then close both directions
    // (a half-closed socket would stay open as long as the client keeps it so).
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () => socket.destroy());
    else socket.destroy();
  });
  return server;
}

function isLoopback(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1';
}

/** The caller is the TCP peer. Headers (X-Forwarded-For and friends) never change who it is. */
export function remoteIp(req: IncomingMessage): string {
  const ip = req.socket.remoteAddress ?? '';
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

/** A small server for /metrics alone, when --metrics-port differs from --app-port. */
export function createMetricsServer(metrics: Metrics, health: () => Health): http.Server {
  return http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      metrics.registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'Content-Type': metrics.registry.contentType });
          res.end(body);
        },
        () => {
          res.writeHead(500);
          res.end();
        },
      );
    } else if (path === '/healthz') {
      res.end('ok\n');
    } else if (path === '/readyz') {
      const h = health();
      res.writeHead(h.ready ? 200 : 503, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(h) + '\n');
    } else {
      res.writeHead(404);
      res.end('not found\n');
    }
  });
}
