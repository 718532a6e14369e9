/**
 * Builds (does not start) the webhook's two servers: HTTPS for the API server's AdmissionReview
 * calls (POST /mutate), plain HTTP for probes and Prometheus (/healthz, /readyz, /metrics).
 */
import http from 'node:http';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BadRequest, toHttpResponse } from '../errors.js';
import type { Logger } from '../log.js';
import { admit } from './admission.js';
import type { AdmissionOutcome } from './admission.js';
import type { Lookups } from './lookups.js';
import type { WebhookMetrics } from './metrics.js';
import type { MutateOptions } from './mutate.js';
import type { CertificatePair } from './tls.js';

/** An AdmissionReview carries the pod (and the API server caps a request at 3 MiB). */
const MAX_BODY_BYTES = 4 * 1024 * 1024;
/** Longer than any timeoutSeconds the API server may use (max 30 s): a stuck client is cut off. */
const REQUEST_TIMEOUT_MS = 30_000;

export interface WebhookServerDeps {
  readonly lookups: Lookups;
  readonly options: MutateOptions;
  readonly log: Logger;
  readonly metrics: WebhookMetrics;
}

export function createAdmissionServer(certificate: CertificatePair, deps: WebhookServerDeps): https.Server {
  const server = https.createServer({ cert: certificate.cert, key: certificate.key, minVersion: 'TLSv1.2' }, (req, res) => {
    void handleAdmission(req, res, deps);
  });
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.headersTimeout = 10_000;
  server.keepAliveTimeout = 30_000;
  return server;
}

async function handleAdmission(req: IncomingMessage, res: ServerResponse, deps: WebhookServerDeps): Promise<void> {
  const started = process.hrtime.bigint();
  try {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/mutate') throw new BadRequest(404, `no route ${path}; AdmissionReviews go to POST /mutate`);
    if (req.method !== 'POST') throw new BadRequest(405, `${req.method} not allowed on /mutate; use POST`);
    const text = await readBody(req);
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
    deps.metrics.admissions.inc({ result: 'error', reason: 'bad-request' });
    deps.log.warn('webhook request refused', { method: req.method, path: req.url, status: answer.status, error: answer.code });
    send(res, answer.status, 'text/plain; charset=utf-8', answer.body);
  } finally {
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

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        req.pause();
        reject(new BadRequest(413, `AdmissionReview larger than ${MAX_BODY_BYTES} bytes`));
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
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
