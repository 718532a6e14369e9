/**
 * Issue 19 (second adversarial review), `podiam webhook` as anyone who can reach its port sees
 * it: the real CLI over HTTPS, Namespaces and ServiceAccounts from a small API server on loopback.
 *  - 16 connections sending 4 MB AdmissionReviews (and 16 sending the largest allowed) while the
 *    API server admits real pods: their admissions stay fast;
 *  - the oracle: a review naming another namespace than its pod's, or a name no object can have,
 *    makes no read; the answers for "no role", "no such ServiceAccount" and "no such namespace"
 *    are the same bytes; with --client-ca-file a caller without the API server's client
 *    certificate gets no TLS session at all.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { metricSum } from '../support/metrics-text.js';
import { freePort } from '../support/net.js';
import { PodiamProcess } from '../support/podiam-process.js';
import { sleep } from '../support/wait.js';
import { FakeApi } from '../support/webhook-api.js';
import { makeCa, makeClientCertificate, makeServingCertificate, podAdmissionReview } from '../support/webhook.js';

type Obj = Record<string, any>;
const ROLE = 'arn:aws:iam::123456789012:role/app';
const OPT_IN = { 'podiam.io/token-identity': 'true' };

let dir: string;
let api: FakeApi;
let ca: Buffer;
const started: PodiamProcess[] = [];

interface Webhook {
  readonly process: PodiamProcess;
  readonly port: number;
  readonly metricsPort: number;
}

async function startWebhook(extra: string[] = []): Promise<Webhook> {
  const port = await freePort();
  const metricsPort = await freePort();
  const p = await PodiamProcess.start(
    [
      'webhook',
      `--port=${port}`,
      `--metrics-port=${metricsPort}`,
      `--tls-cert-file=${path.join(dir, 'tls.crt')}`,
      `--tls-key-file=${path.join(dir, 'tls.key')}`,
      `--api-server=http://127.0.0.1:${api.port}`,
      '--api-token=test-token',
      '--insecure',
      '--cache-ttl=0s',
      '--shutdown-delay=0s',
      '--log-format=json',
      ...extra,
    ],
    { PATH: process.env.PATH },
    { port: metricsPort },
  );
  started.push(p);
  return { process: p, port, metricsPort };
}

interface Posted {
  status: number;
  body: string;
  ms: number;
}

function post(port: number, body: string, tlsOptions: https.RequestOptions = {}): Promise<Posted> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, path: '/mutate?timeout=3s', method: 'POST', ca, agent: false, headers: { 'Content-Type': 'application/json' }, timeout: 10_000, ...tlsOptions },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), ms: performance.now() - t0 }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

function pod(name: string, namespace: string, serviceAccountName: string, annotations: Record<string, string> = OPT_IN): Obj {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, annotations }, spec: { serviceAccountName, containers: [{ name: 'app', image: 'busybox:1.36' }] } };
}

async function response(port: number, review: Obj): Promise<Obj> {
  const r = await post(port, JSON.stringify(review));
  expect(r.status).toBe(200);
  const answer = JSON.parse(r.body) as Obj;
  expect(answer.response.uid).toBe(review.request.uid);
  expect(answer.response.allowed).toBe(true);
  return answer.response as Obj;
}

async function metric(w: Webhook, name: string, labels: Record<string, string>): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${w.metricsPort}/metrics`);
  return metricSum(await res.text(), name, labels);
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'podiam-webhook-limits-'));
  ca = makeCa(dir);
  makeServingCertificate(dir, 'tls', 'podiam-webhook-1');
  api = new FakeApi();
  await api.start();
  api.namespace('team-a');
  api.namespace('victim');
  api.serviceAccount('team-a', 'app', { 'iam.amazonaws.com/role': ROLE });
  api.serviceAccount('team-a', 'plain');
  api.serviceAccount('victim', 'secret-sa', { 'iam.amazonaws.com/role': 'arn:aws:iam::123456789012:role/victim' });
}, 30_000);

afterAll(async () => {
  await Promise.all(started.map((p) => p.stop().catch(() => undefined)));
  await api?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/**
 * The attacker in its own process (so this one, measuring, stays responsive): `connections`
 * loops, each on its own keep-alive connection, POSTing `bytes`-byte AdmissionReviews to /mutate
 * without pause until killed.
 */
function flood(port: number, connections: number, bytes: number): ChildProcess {
  const script = `
    const https = require('node:https');
    const [port, connections, bytes] = process.argv.slice(1).map(Number);
    const filler = 'x'.repeat(bytes - 400);
    const body = JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'flood', kind: { group: '', version: 'v1', kind: 'Pod' }, operation: 'CREATE', namespace: 'team-a',
      object: { metadata: { name: 'flood', namespace: 'team-a', annotations: { 'podiam.io/token-identity': 'true', filler } }, spec: { serviceAccountName: 'app', containers: [{ name: 'a' }] } } } });
    const one = (agent) => new Promise((resolve) => {
      const req = https.request({ host: '127.0.0.1', port, path: '/mutate', method: 'POST', agent, rejectUnauthorized: false, headers: { 'Content-Type': 'application/json' } }, (res) => { res.resume(); res.on('end', resolve); res.on('error', resolve); });
      req.on('error', resolve);
      req.end(body);
    });
    for (let i = 0; i < connections; i++) {
      const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
      (async () => { for (;;) await one(agent); })();
    }`;
  const child = spawn(process.execPath, ['-e', script, String(port), String(connections), String(bytes)], { stdio: 'ignore' });
  return child;
}

/** Real admissions, one after another, as the API server sends them: their latencies in ms. */
async function realAdmissions(port: number, n: number): Promise<number[]> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = await post(port, JSON.stringify(podAdmissionReview(pod(`real-${i}`, 'team-a', 'app'), 'team-a')));
    expect(r.status).toBe(200);
    expect((JSON.parse(r.body) as Obj).response.patch).toBeDefined();
    ms.push(r.ms);
  }
  return ms;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe('large AdmissionReviews from anyone do not slow the API server’s admissions', () => {
  test.each([
    ['4 MB reviews (the review’s attack)', 4 * 1024 * 1024],
    ['reviews just under the 2 MiB limit', 2 * 1024 * 1024 - 1024],
  ])('16 connections sending %s', async (_what, bytes) => {
    const w = await startWebhook();
    const quiet = await realAdmissions(w.port, 20);
    const attacker = flood(w.port, 16, bytes);
    try {
      await sleep(1500);
      const loaded = await realAdmissions(w.port, 30);
      const p50 = median(loaded);
      const max = Math.max(...loaded);
      console.log(`${_what}: real admissions ${median(quiet).toFixed(1)} ms quiet; under the flood p50 ${p50.toFixed(1)} ms, max ${max.toFixed(1)} ms`);
      // Today's main, on this (shared, 2-CPU) machine: p50 1.1-1.7 s, max 1.7-3.7 s; the review saw
      // 0.5-1.2 s. Now ~50-150 ms p50. The bounds leave room for a noisy machine; the webhook's
      // timeoutSeconds is 3.
      expect(p50).toBeLessThan(300);
      expect(max).toBeLessThan(1500);
      const refused = (await metric(w, 'podiam_webhook_admissions_total', { result: 'error', reason: 'too-large' })) + (await metric(w, 'podiam_webhook_admissions_total', { result: 'error', reason: 'busy' }));
      expect(refused).toBeGreaterThan(0);
    } finally {
      attacker.kill('SIGKILL');
      await w.process.stop();
    }
  }, 90_000);

  test('a review announcing more than 2 MiB is refused (413) from its headers, unread', async () => {
    const w = await startWebhook();
    try {
      const r = await new Promise<{ status: number; ms: number }>((resolve, reject) => {
        const t0 = performance.now();
        const req = https.request({ host: '127.0.0.1', port: w.port, path: '/mutate', method: 'POST', ca, agent: false, headers: { 'Content-Type': 'application/json', 'Content-Length': String(3 * 1024 * 1024) } }, (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0 });
        });
        req.on('error', reject);
        // Only the headers and a first chunk are sent: the answer must not wait for the rest.
        req.write('{"apiVersion":');
      });
      expect(r.status).toBe(413);
      expect(await metric(w, 'podiam_webhook_admissions_total', { result: 'error', reason: 'too-large' })).toBe(1);
    } finally {
      await w.process.stop();
    }
  }, 30_000);
});

describe('the oracle: what a caller that is not the API server can learn', () => {
  let w: Webhook;
  beforeAll(async () => {
    w = await startWebhook();
  }, 30_000);

  test('a review whose pod names another namespace than the request reads nothing of either, and injects nothing', async () => {
    api.requests.length = 0;
    const forged = podAdmissionReview(pod('probe', 'team-a', 'secret-sa'), 'victim');
    forged.request.object.metadata.namespace = 'team-a';
    const r = await response(w.port, forged);
    expect(r.patch).toBeUndefined();
    expect(api.requests).toEqual([]);
  });

  test.each([['..'], ['../victim'], ['Secret-SA'], ['a/b'], ['%2e%2e']])('ServiceAccount name %j: no read, nothing injected', async (name) => {
    api.requests.length = 0;
    const r = await response(w.port, podAdmissionReview(pod('probe', 'team-a', name), 'team-a'));
    expect(r.patch).toBeUndefined();
    expect(api.requests).toEqual([]);
  });

  test('"no role", "no such ServiceAccount" and "no such namespace" are the same answer; a role is a patch and nothing more', async () => {
    const answer = async (namespace: string, sa: string): Promise<string> => {
      const review = podAdmissionReview(pod('probe', namespace, sa), namespace);
      const r = await response(w.port, review);
      return JSON.stringify({ ...r, uid: '' });
    };
    const noRole = await answer('team-a', 'plain');
    expect(await answer('team-a', 'missing')).toBe(noRole);
    expect(await answer('no-such-namespace', 'app')).toBe(noRole);
    expect(JSON.parse(noRole)).toEqual({ uid: '', allowed: true });
    // The positive control: the answer carries the patch, never the role or anything of the ServiceAccount.
    const withRole = await answer('team-a', 'app');
    expect(Object.keys(JSON.parse(withRole)).sort()).toEqual(['allowed', 'patch', 'patchType', 'uid']);
    expect(Buffer.from(JSON.parse(withRole).patch as string, 'base64').toString()).not.toContain(ROLE);
  });

  test('--client-ca-file: without the API server’s client certificate there is no TLS session, so no answer at all', async () => {
    const clientDir = path.join(dir, 'client-ca');
    mkdirSync(clientDir);
    makeCa(clientDir);
    const apiServerCert = makeClientCertificate(clientDir, 'apiserver', 'kube-apiserver');
    const otherDir = path.join(dir, 'other-ca');
    mkdirSync(otherDir);
    makeCa(otherDir);
    const strangerCert = makeClientCertificate(otherDir, 'stranger', 'kube-apiserver');

    const strict = await startWebhook([`--client-ca-file=${path.join(clientDir, 'ca.crt')}`]);
    try {
      const probe = JSON.stringify(podAdmissionReview(pod('probe', 'team-a', 'app'), 'team-a'));
      await expect(post(strict.port, probe)).rejects.toThrow();
      await expect(post(strict.port, probe, strangerCert)).rejects.toThrow();
      const r = await post(strict.port, probe, apiServerCert);
      expect(r.status).toBe(200);
      expect((JSON.parse(r.body) as Obj).response.patch).toBeDefined();
    } finally {
      await strict.process.stop();
    }
  }, 30_000);
});
