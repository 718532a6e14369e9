/**
 * Builds (does not start) the webhook's two servers: HTTPS for the API server's AdmissionReview
 * calls (POST /mutate), plain HTTP for probes and Prometheus (/healthz, /readyz, /metrics).
 */
import http from 'node:http';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ConnectionLimiter } from '../connection-limits.js';
import { BadRequest, toHttpResponse } from '../errors.js';
import { readBody } from '../http-body.js';
import type { Logger } from '../log.js';
import { admit } from './admission.js';
import type { AdmissionOutcome } from './admission.js';
import type { Lookups } from './lookups.js';
import type { WebhookMetrics } from './metrics.js';
import type { MutateOptions } from './mutate.js';
import type { CertificatePair } from './tls.js';

/**
 * An AdmissionReview carries the pod, and a pod is at most what etcd stores (1.5 MiB by default):
 * 2 MiB leaves room for the review around it. Larger is refused from its Content-Length, unread.
 */
export const MAX_BODY_BYTES = 2 * 1024 * 1024;
/** Real pods are a few KiB; a review larger than this is "large" and shares LARGE_BUDGET_BYTES. */
export const LARGE_BODY_BYTES = 64 * 1024;
/**
 * Large reviews being read and parsed at once, in bytes: a 2 MiB body costs tens of ms of the one
 * thread (TLS, JSON.parse), so a few callers sending them must not queue a real admission behind
 * dozens. Over it: 429 at once, unread. Small reviews never wait for large ones. One review of
 * the largest size at a time.
 */
export const LARGE_BUDGET_BYTES = MAX_BODY_BYTES;
/** Admissions in flight (reading, looking up, answering); over it: 429 at once. */
export const MAX_INFLIGHT = 64;
/** Open connections in all (each costs a TLS session): more are closed at once. */
export const MAX_CONNECTIONS = 1024;
/** Longer than any timeoutSeconds the API server may use (max 30 s): a stuck client is cut off. */
const REQUEST_TIMEOUT_MS = 30_000;

export interface WebhookServerDeps {
  readonly lookups: Lookups;
  readonly options: MutateOptions;
  readonly log: Logger;
  readonly metrics: WebhookMetrics;
  /** --client-ca-file: only callers with a client certificate signed by this CA (the API server) get a TLS session. */
  readonly clientCa?: Buffer;
}

/** What is in flight now: admissions, and bytes of large reviews. */
interface Inflight {
  admissions: number;
  largeBytes: number;
}

export function createAdmissionServer(certificate: CertificatePair, deps: WebhookServerDeps): https.Server {
  const inflight: Inflight = { admissions: 0, largeBytes: 0 };
  const refused = refusalLogger(deps.log);
  const clientAuth = deps.clientCa === undefined ? {} : { ca: deps.clientCa, requestCert: true, rejectUnauthorized: true };
  const server = https.createServer({ cert: certificate.cert, key: certificate.key, minVersion: 'TLSv1.2', ...clientAuth }, (req, res) => {
    void handleAdmission(req, res, deps, inflight, refused);
  });
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.headersTimeout = 10_000;
  server.keepAliveTimeout = 30_000;
  new ConnectionLimiter({ maxPerIp: MAX_CONNECTIONS, max: MAX_CONNECTIONS, onRefused: () => deps.metrics.admissions.inc({ result: 'error', reason: 'too-many-connections' }) }).attach(server);
  return server;
}

/**
 * Takes room for one admission whose body is `length` bytes (undefined: not announced, so the
 * largest allowed), or says why there is none. Decided on the headers, before a byte is read.
 */
function reserve(inflight: Inflight, length: number | undefined): { release(): void } | BadRequest {
  if (length !== undefined && length > MAX_BODY_BYTES) return new BadRequest(413, `AdmissionReview larger than ${MAX_BODY_BYTES} bytes`);
  if (inflight.admissions >= MAX_INFLIGHT) return new BadRequest(429, `more than ${MAX_INFLIGHT} admissions in flight`);
  const size = length ?? MAX_BODY_BYTES;
  const large = size > LARGE_BODY_BYTES ? size : 0;
  if (large > 0 && inflight.largeBytes + large > LARGE_BUDGET_BYTES) return new BadRequest(429, `large AdmissionReviews in flight exceed ${LARGE_BUDGET_BYTES} bytes`);
  inflight.admissions += 1;
  inflight.largeBytes += large;
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      inflight.admissions -= 1;
      inflight.largeBytes -= large;
    },
  };
}

/**
 * One warn line per refused request, at most one a second per status (a flood of them must not
 * become a flood of log lines); the lines skipped are counted in the next one.
 */
function refusalLogger(log: Logger): (status: number, fields: Record<string, unknown>) => void {
  const last = new Map<number, { atMs: number; suppressed: number }>();
  return (status, fields) => {
    const now = Date.now();
    const seen = last.get(status);
    if (seen !== undefined && now - seen.atMs < 1000) {
      seen.suppressed++;
      return;
    }
    log.warn('webhook request refused', { ...fields, status, ...(seen?.suppressed ? { suppressed: seen.suppressed } : {}) });
    last.set(status, { atMs: now, suppressed: 0 });
  };
}

async function handleAdmission(req: IncomingMessage, res: ServerResponse, deps: WebhookServerDeps, inflight: Inflight, refused: (status: number, fields: Record<string, unknown>) => void): Promise<void> {
  const started = process.hrtime.bigint();
  let room: { release(): void } | undefined;
  try {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/mutate') throw new BadRequest(404, `no route ${path}; AdmissionReviews go to POST /mutate`);
    if (req.method !== 'POST') throw new BadRequest(405, `${req.method} not allowed on /mutate; use POST`);
    const announced = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
    const taken = reserve(inflight, announced !== undefined && Number.isFinite(announced) ? announced : undefined);
    if (taken instanceof BadRequest) throw taken;
    room = taken;
    const text = await readBody(req, MAX_BODY_BYTES, 'AdmissionReview');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined; // answered by admit() as a bad review: allowed, with a warning
    }
    const { review, outcome } = await admit(body, deps.lookups, deps.options);
    record(outcome, deps);
    send(res, 200, 'application/json', JSON.stringify(review));
  } catch (err) {
    const answer = toHttpResponse(err);
    const reason = answer.status === 429 ? 'busy' : answer.status === 413 ? 'too-large' : 'bad-request';
    deps.metrics.admissions.inc({ result: 'error', reason });
    refused(answer.status, { method: req.method, path: req.url?.slice(0, 256), error: answer.code, reason: (err as Error).message });
    // The body (if any) is left unread: the connection goes with the answer.
    if (!req.complete) res.setHeader('Connection', 'close');
    send(res, answer.status, 'text/plain; charset=utf-8', answer.body);
  } finally {
    room?.release();
    deps.metrics.admissionSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
  }
}

/** A metric and a log line for every admission, with the reason. */
function record(outcome: AdmissionOutcome, deps: WebhookServerDeps): void {
  deps.metrics.admissions.inc({ result: outcome.result, reason: outcome.reason });
  const fields = { pod: outcome.pod, uid: outcome.uid, reason: outcome.reason, role: outcome.role, detail: outcome.detail, patchOps: outcome.patchOps };
  if (outcome.result === 'mutated') deps.log.info('pod mutated: token identity injected', fields);
  else if (outcome.result === 'error') deps.log.warn('pod admitted without token identity: bad input or lookup failure', fields);
  else if (outcome.reason === 'not-a-pod-create') deps.log.debug('admission skipped', fields);
  else deps.log.info('pod skipped', fields);
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

/** /healthz (the process answers), /readyz (the admission listener is up), /metrics. */
export function createHealthServer(deps: { metrics: Pick<WebhookMetrics, 'registry'>; ready: () => boolean }): http.Server {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'method not allowed\n');
    if (path === '/healthz') return send(res, 200, 'text/plain', 'ok\n');
    if (path === '/readyz') return deps.ready() ? send(res, 200, 'text/plain', 'ok\n') : send(res, 503, 'text/plain', 'not ready\n');
    if (path === '/metrics') {
      deps.metrics.registry.metrics().then(
        (text) => send(res, 200, deps.metrics.registry.contentType, text),
        () => send(res, 500, 'text/plain', 'metrics unavailable\n'),
      );
      return;
    }
    send(res, 404, 'text/plain', 'not found\n');
  });
  server.requestTimeout = 10_000;
  return server;
}
