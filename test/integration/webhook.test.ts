/**
 * `podiam webhook` as the API server uses it: AdmissionReview v1 over HTTPS (certificates made
 * here with the openssl CLI, verified by the client against their CA), Namespaces and
 * ServiceAccounts read from a small in-test API server over real HTTP. Also: bad input answered
 * within the timeout, a slow API server never holding a pod, certificate rotation without a
 * restart, metrics and log lines for every decision, clean shutdown.
 */
import { mkdtempSync, rmSync, renameSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { Pod } from 'kubernetes-models/v1/Pod';
import { freePort } from '../support/net.js';
import { FakeApi } from '../support/webhook-api.js';
import { PodiamProcess, runCli } from '../support/podiam-process.js';
import { waitFor } from '../support/wait.js';
import { applyAdmissionPatch, makeCa, makeServingCertificate, mutateThroughWebhook, podAdmissionReview } from '../support/webhook.js';
import { metricSum } from '../support/metrics-text.js';

type Obj = Record<string, any>;
const ROLE = 'arn:aws:iam::123456789012:role/app';

let dir: string;
let api: FakeApi;
let webhook: PodiamProcess;
let port: number;
let metricsPort: number;
let ca: Buffer;

async function startWebhook(extra: string[] = []): Promise<PodiamProcess> {
  port = await freePort();
  metricsPort = await freePort();
  return PodiamProcess.start(
    [
      'webhook',
      `--port=${port}`,
      `--metrics-port=${metricsPort}`,
      `--tls-cert-file=${path.join(dir, 'tls.crt')}`,
      `--tls-key-file=${path.join(dir, 'tls.key')}`,
      '--tls-reload-interval=200ms',
      `--api-server=http://127.0.0.1:${api.port}`,
      '--api-token=test-token',
      '--insecure',
      '--lookup-timeout=300ms',
      '--cache-ttl=0s',
      '--shutdown-delay=0s',
      '--log-format=json',
      ...extra,
    ],
    { PATH: process.env.PATH },
    { port: metricsPort },
  );
}

interface Posted {
  status: number;
  body: string;
  ms: number;
  peerSerial: string;
}

function post(body: string, opts: { path?: string; method?: string; timeoutMs?: number } = {}): Promise<Posted> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, path: opts.path ?? '/mutate?timeout=3s', method: opts.method ?? 'POST', ca, agent: false, headers: { 'Content-Type': 'application/json' }, timeout: opts.timeoutMs ?? 5000 },
      (res) => {
        const serial = (res.socket as tls.TLSSocket).getPeerCertificate().serialNumber;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), ms: Date.now() - started, peerSerial: serial }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

function review(object: Obj, namespace = 'team-a', request: Obj = {}): Obj {
  return podAdmissionReview(object, namespace, request);
}

function pod(name: string, annotations: Record<string, string> = {}, spec: Obj = {}): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'team-a', annotations },
    spec: {
      serviceAccountName: 'app',
      containers: [{ name: 'app', image: 'busybox:1.36', env: [{ name: 'A', value: '1' }] }, { name: 'sidecar', image: 'envoy:1' }],
      initContainers: [{ name: 'init', image: 'busybox:1.36' }],
      ...spec,
    },
  };
}

async function admitted(object: Obj, namespace = 'team-a'): Promise<{ response: Obj; ms: number }> {
  const sent = review(object, namespace);
  const r = await post(JSON.stringify(sent));
  expect(r.status).toBe(200);
  const answer = JSON.parse(r.body) as Obj;
  expect(answer.apiVersion).toBe('admission.k8s.io/v1');
  expect(answer.kind).toBe('AdmissionReview');
  expect(answer.response.uid).toBe(sent.request.uid);
  expect(answer.response.allowed).toBe(true);
  return { response: answer.response, ms: r.ms };
}

function patched(object: Obj, response: Obj): Obj {
  expect(response.patchType).toBe('JSONPatch');
  return applyAdmissionPatch(object, response);
}

function logFor(p: PodiamProcess, pod: string): Obj | undefined {
  return p.logLines().find((l) => l.pod === pod);
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'podiam-webhook-'));
  ca = makeCa(dir);
  makeServingCertificate(dir, 'tls', 'podiam-webhook-1');
  api = new FakeApi();
  await api.start();
  api.namespace('team-a');
  api.namespace('team-b', { 'podiam.io/token-identity': 'true' });
  api.namespace('team-c', { 'podiam.io/token-identity': 'false' });
  api.serviceAccount('team-a', 'app', { 'iam.amazonaws.com/role': ROLE });
  api.serviceAccount('team-b', 'app', { 'iam.amazonaws.com/role': ROLE });
  api.serviceAccount('team-a', 'plain');
  webhook = await startWebhook();
}, 60_000);

afterAll(async () => {
  await webhook?.stop();
  await api?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('AdmissionReview over HTTPS → the expected patch', () => {
  test('an opted-in pod whose ServiceAccount has a role: the env, the projected token volume and the mounts, in every container', async () => {
    const before = pod('opted-in', { 'podiam.io/token-identity': 'true' });
    const { response } = await admitted(before);
    expect(response.warnings).toBeUndefined();
    const after = patched(before, response);
    expect(() => new Pod(after as never).validate()).not.toThrow();
    expect(after.spec.volumes).toEqual([
      { name: 'eks-pod-identity-token', projected: { sources: [{ serviceAccountToken: { audience: 'pods.eks.amazonaws.com', expirationSeconds: 86400, path: 'eks-pod-identity-token' } }] } },
    ]);
    for (const c of [...after.spec.initContainers, ...after.spec.containers] as Obj[]) {
      expect((c.env as Obj[]).filter((e) => e.name.startsWith('AWS_'))).toEqual([
        { name: 'AWS_CONTAINER_CREDENTIALS_FULL_URI', value: 'http://169.254.170.23/v1/credentials' },
        { name: 'AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE', value: '/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token' },
      ]);
      expect(c.volumeMounts).toEqual([{ name: 'eks-pod-identity-token', mountPath: '/var/run/secrets/pods.eks.amazonaws.com/serviceaccount', readOnly: true }]);
    }
    expect(after.spec.containers[0].env[0]).toEqual({ name: 'A', value: '1' });
    // The ServiceAccount was read from the API server, with the token.
    expect(api.requests).toContain('GET /api/v1/namespaces/team-a/serviceaccounts/app Bearer test-token');
    // Second pass (reinvocation): allowed, nothing to add.
    const again = await admitted(after);
    expect(again.response.patch).toBeUndefined();
    await waitFor(() => webhook.logLines().some((l) => l.pod === 'team-a/opted-in' && l.reason === 'already-injected'), 5000, 'already-injected log line');
    expect(logFor(webhook, 'team-a/opted-in')).toMatchObject({ level: 'info', message: 'pod mutated: token identity injected', reason: 'injected', role: ROLE });
  });

  test('mutateThroughWebhook (for the node lab): a pod carrying its own role and opt-in needs no API read', async () => {
    const before = api.requests.length;
    const { pod: after } = await mutateThroughWebhook({ port, ca }, pod('lab-pod', { 'podiam.io/token-identity': 'true', 'iam.amazonaws.com/role': ROLE }), 'team-a');
    expect(api.requests.length).toBe(before);
    expect(after.spec.containers[1].env).toEqual([
      { name: 'AWS_CONTAINER_CREDENTIALS_FULL_URI', value: 'http://169.254.170.23/v1/credentials' },
      { name: 'AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE', value: '/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token' },
    ]);
  });

  test('a namespace labelled podiam.io/token-identity=true opts its pods in', async () => {
    const before = { ...pod('in-labelled-ns'), metadata: { generateName: 'web-7d9f-', namespace: 'team-b' } };
    const { response } = await admitted(before, 'team-b');
    expect(patched(before, response).spec.volumes).toHaveLength(1);
    await waitFor(() => logFor(webhook, 'team-b/web-7d9f-*')?.reason === 'injected', 5000, 'mutated log line for a generateName pod');
  });

  test('pass-through: pods that do not opt in, opt out, have no role, or are in kube-system get allowed with no patch', async () => {
    const cases: Array<[Obj, string, string]> = [
      [pod('not-opted-in'), 'team-a', 'not-opted-in'],
      [pod('pod-opts-out', { 'podiam.io/token-identity': 'false' }), 'team-b', 'opted-out'],
      [pod('ns-opts-out'), 'team-c', 'opted-out'],
      [pod('no-role', { 'podiam.io/token-identity': 'true' }, { serviceAccountName: 'plain' }), 'team-a', 'no-role'],
      [pod('system', { 'podiam.io/token-identity': 'true', 'iam.amazonaws.com/role': ROLE }), 'kube-system', 'protected-namespace'],
    ];
    for (const [p, ns, reason] of cases) {
      const { response } = await admitted(p, ns);
      expect({ pod: p.metadata.name, patch: response.patch, patchType: response.patchType }).toEqual({ pod: p.metadata.name, patch: undefined, patchType: undefined });
      await waitFor(() => logFor(webhook, `${ns}/${p.metadata.name}`)?.reason === reason, 5000, `log line for ${p.metadata.name} with reason ${reason}`);
    }
  });

  test('every decision is counted by result and reason', async () => {
    const m = (result: string, reason: string) => metric('podiam_webhook_admissions_total', { result, reason });
    expect(await m('mutated', 'injected')).toBeGreaterThanOrEqual(2);
    expect(await m('skipped', 'already-injected')).toBeGreaterThanOrEqual(1);
    expect(await m('skipped', 'not-opted-in')).toBeGreaterThanOrEqual(1);
    expect(await m('skipped', 'opted-out')).toBeGreaterThanOrEqual(2);
    expect(await m('skipped', 'no-role')).toBeGreaterThanOrEqual(1);
    expect(await m('skipped', 'protected-namespace')).toBeGreaterThanOrEqual(1);
    expect(await metric('podiam_webhook_admission_duration_seconds_count')).toBeGreaterThanOrEqual(8);
  });
});

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await new Promise<string>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: metricsPort, path: '/metrics' }, (res) => {
      let b = '';
      res.on('data', (c: Buffer) => (b += c.toString()));
      res.on('end', () => resolve(b));
    }).on('error', reject);
  });
  return metricSum(text, name, labels);
}

describe('bad input: answered at once, allowed, with a warning', () => {
  test.each([
    ['not JSON', '{"apiVersion": "admission.k8s.io/v1", "kind": "Admiss', '', 'bad-review'],
    ['an empty body', '', '', 'bad-review'],
    ['a JSON array', '[1,2,3]', '', 'bad-review'],
    ['a pod object that is a string', JSON.stringify(review('x' as never)), 'uid', 'bad-pod'],
    ['containers that is a number', JSON.stringify(review({ metadata: { name: 'x' }, spec: { containers: 7 } })), 'uid', 'bad-pod'],
  ])('%s', async (_name, body, uid, reason) => {
    const r = await post(body);
    expect(r.status).toBe(200);
    expect(r.ms).toBeLessThan(2000);
    const answer = JSON.parse(r.body) as Obj;
    expect(answer.response.allowed).toBe(true);
    if (uid === 'uid') expect(answer.response.uid).toMatch(/^uid-\d+-\d+$/);
    else expect(answer.response.uid).toBe('');
    expect(answer.response.patch).toBeUndefined();
    expect(answer.response.warnings[0]).toContain(`(${reason})`);
  });

  test('wrong path, wrong method, oversized body: HTTP errors, quickly', async () => {
    expect((await post('{}', { path: '/validate' })).status).toBe(404);
    expect((await post('', { method: 'GET' })).status).toBe(405);
    const big = await post('x'.repeat(5 * 1024 * 1024)).catch((e: Error) => ({ status: -1, body: e.message, ms: 0, peerSerial: '' }));
    // Either the 413 answer, or the connection cut while still sending: never a hang.
    expect([413, -1]).toContain(big.status);
    expect(await metric('podiam_webhook_admissions_total', { result: 'error', reason: 'bad-request' })).toBeGreaterThanOrEqual(2);
    if (big.status === 413) expect(await metric('podiam_webhook_admissions_total', { result: 'error', reason: 'too-large' })).toBeGreaterThanOrEqual(1);
  });

  test('a slow API server does not hold the pod: answered after --lookup-timeout, allowed, with a warning', async () => {
    api.delayMs = 5000;
    try {
      const p = pod('slow-api', { 'podiam.io/token-identity': 'true' });
      const { response, ms } = await admitted(p);
      expect(ms).toBeLessThan(2000); // the lookup timeout is 300 ms; the MutatingWebhookConfiguration allows 3 s
      expect(response.patch).toBeUndefined();
      expect(response.warnings[0]).toMatch(/lookup-failed.*no answer within 300 ms/);
      await waitFor(() => logFor(webhook, 'team-a/slow-api')?.reason === 'lookup-failed', 5000, 'lookup-failed log line');
      expect(logFor(webhook, 'team-a/slow-api')).toMatchObject({ level: 'warn' });
    } finally {
      api.delayMs = 0;
    }
  });
});

describe('TLS', () => {
  test('a rotated certificate is served without a restart; a broken pair is refused and the old one kept', async () => {
    const first = (await post(JSON.stringify(review(pod('tls-1'))))).peerSerial;
    // cert-manager renews: a new key and certificate, swapped in as the kubelet swaps a Secret volume (rename).
    makeServingCertificate(dir, 'next', 'podiam-webhook-2');
    renameSync(path.join(dir, 'next.key'), path.join(dir, 'tls.key'));
    renameSync(path.join(dir, 'next.crt'), path.join(dir, 'tls.crt'));
    let second = first;
    await waitFor(
      async () => {
        second = (await post(JSON.stringify(review(pod('tls-2'))))).peerSerial;
        return second !== first;
      },
      10_000,
      'the new certificate served',
    );
    expect(webhook.logLines().some((l) => l.message === 'serving certificate reloaded' && String(l.subject).includes('podiam-webhook-2'))).toBe(true);
    expect(await metric('podiam_webhook_certificate_reloads_total', { outcome: 'success' })).toBe(2);

    // A key that does not belong to the certificate: refused, the current certificate stays.
    makeServingCertificate(dir, 'other', 'podiam-webhook-3');
    // (The two renames above are not one atomic swap, so a tick between them may have counted a failure already.)
    const failuresBefore = await metric('podiam_webhook_certificate_reloads_total', { outcome: 'failure' });
    renameSync(path.join(dir, 'other.key'), path.join(dir, 'tls.key'));
    await waitFor(async () => (await metric('podiam_webhook_certificate_reloads_total', { outcome: 'failure' })) === failuresBefore + 1, 10_000, 'a failed reload counted');
    expect((await post(JSON.stringify(review(pod('tls-3'))))).peerSerial).toBe(second);
    const expiry = await metric('podiam_webhook_certificate_expiry_timestamp_seconds');
    expect(expiry * 1000).toBeGreaterThan(Date.now());
    expect(expiry * 1000).toBeLessThan(Date.now() + 2 * 86_400_000);

    // Its certificate arrives: the pair loads again and is served.
    renameSync(path.join(dir, 'other.crt'), path.join(dir, 'tls.crt'));
    await waitFor(async () => (await post(JSON.stringify(review(pod('tls-4'))))).peerSerial !== second, 10_000, 'the repaired pair served');
    expect(await metric('podiam_webhook_certificate_reloads_total', { outcome: 'success' })).toBe(3);
  }, 40_000);

  test('a client that does not trust the CA is refused (the server presents the certificate from the files)', async () => {
    await expect(
      new Promise((resolve, reject) => {
        const req = https.request({ host: '127.0.0.1', port, path: '/mutate', method: 'POST', agent: false }, resolve);
        req.on('error', reject);
        req.end('{}');
      }),
    ).rejects.toThrow(/self[- ]signed|unable to verify|certificate/i);
  });
});

describe('the process', () => {
  test('a bad flag exits 2 naming it; a missing certificate exits 1 saying which flags', async () => {
    const bad = await runCli(['webhook', '--lookup-timeout=forever']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^podiam webhook: --lookup-timeout: "forever" is not a duration.*e\.g\. --lookup-timeout=1s/);
    const noCert = await runCli(['webhook', `--tls-cert-file=${path.join(dir, 'absent.crt')}`, '--api-server=http://127.0.0.1:1', '--insecure', `--port=${await freePort()}`, `--metrics-port=${await freePort()}`]);
    expect(noCert.code).toBe(1);
    expect(noCert.stderr).toMatch(/--tls-cert-file/);
    const help = await runCli(['webhook', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: podiam webhook/);
    expect((await runCli(['--help'])).stdout).toContain('podiam webhook [flags]');
  });

  test('SIGTERM: not ready at once, still answering for --shutdown-delay, then exit 0', async () => {
    const other = await startWebhook(['--shutdown-delay=2s']);
    const readyz = () =>
      new Promise<number>((resolve) => {
        http.get({ host: '127.0.0.1', port: metricsPort, path: '/readyz' }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).on('error', () => resolve(-1));
      });
    expect(await readyz()).toBe(200);
    other.child.kill('SIGTERM');
    await waitFor(async () => (await readyz()) === 503, 5000, '/readyz 503 after SIGTERM');
    // Still serving admissions while the endpoints catch up.
    const { response } = await admitted(pod('during-shutdown', { 'podiam.io/token-identity': 'true' }));
    expect(response.patchType).toBe('JSONPatch');
    const r = await other.exited();
    expect(r.code).toBe(0);
    expect(other.output()).toMatch(/podiam webhook stopped/);
  });
});
