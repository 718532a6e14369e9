/**
 * Token identity without editing pod specs, end to end in the node lab (issues #14, #21), from the
 * manifests an operator renders: a CNI overlay plus components/token-identity. The node agent
 * runs with exactly the rendered DaemonSet's args ($(VARS) expanded as the kubelet does, plus the
 * API server address a pod would get in-cluster); `podiam webhook` with exactly the rendered
 * Deployment's args (its TLS files where the lab wrote them, and its metrics port moved off the
 * lab API server's 8080). `podiam webhook` (the bundle, HTTPS) runs in the node namespace beside
 * the Kubernetes test API server it reads; a pod is sent through it as the API server would send it (an AdmissionReview), its
 * JSON Patch applied, and the mutated pod created through the test API server. The test then
 * plays the kubelet (test/support/lab-kubelet.ts): the projected token the webhook asked for,
 * written where the webhook mounts it, and the containers' env as the webhook left it. botocore
 * and the AWS SDK for JavaScript v3 get the pod's role from the node agent's /v1/credentials at
 * 169.254.170.23 with no variable set by the test. Needs root.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { decode } from '../support/kube-token-api.js';
import { LabKubeletPod } from '../support/lab-kubelet.js';
import type { LabPod, LabPodiam, LabProcess } from '../support/lab.js';
import { ACCOUNT, Lab, NODE_IP, NODE_IP6, NODE_NAME, SYSTEM_PATH, pythonWithBotocore } from '../support/lab.js';
import type { Obj as Rendered } from '../support/manifests.js';
import { kustomize, kustomizeOwn } from '../support/manifests.js';
import { ROOT, podiamArgv } from '../support/podiam-process.js';
import { waitFor } from '../support/wait.js';
import type { WebhookEndpoint } from '../support/webhook.js';
import { makeCa, makeServingCertificate, mutateThroughWebhook } from '../support/webhook.js';

type Obj = Record<string, any>;

const OPT_IN = 'podiam.io/token-identity';
/** In the node namespace: kube test API on 8080, podiam on 8181, moto on 5000. */
const WEBHOOK_PORT = 8443;
const WEBHOOK_METRICS_PORT = 8282;

/** What an operator on Calico applies: the overlay plus the token identity component. */
function rendered(): Rendered[] {
  return kustomizeOwn((rel) => ['apiVersion: kustomize.config.k8s.io/v1beta1', 'kind: Kustomization', 'resources:', `  - ${rel('overlays/calico')}`, 'components:', `  - ${rel('components/token-identity')}`]);
}

function containerOf(objs: readonly Rendered[], kind: string): Rendered {
  return objs.find((o) => o.kind === kind)!.spec.template.spec.containers[0] as Rendered;
}

/** The DaemonSet's args as the kubelet expands them on the lab's node. */
function agentArgs(objs: readonly Rendered[]): string[] {
  const c = containerOf(objs, 'DaemonSet');
  const env: Record<string, string> = { 'status.hostIP': NODE_IP, 'status.hostIPs': `${NODE_IP},${NODE_IP6}`, 'spec.nodeName': NODE_NAME };
  const vars: Record<string, string> = {};
  for (const e of c.env as Rendered[]) vars[e.name] = e.value ?? env[e.valueFrom.fieldRef.fieldPath];
  return (c.args as string[]).map((a) => a.replace(/\$\(([A-Z_]+)\)/g, (m, name: string) => vars[name] ?? m));
}

function arnOf(role: string): string {
  return `arn:aws:iam::${ACCOUNT}:role/${role}`;
}

let lab: Lab;
let podiam: LabPodiam;
let webhookProcess: LabProcess;
let webhook: WebhookEndpoint;

beforeAll(async () => {
  lab = await Lab.create({
    pods: [
      { name: 'wh-app', role: 'role-wh-app', fixture: false },
      { name: 'wh-plain', role: 'role-wh-plain', fixture: false },
      { name: 'wh-none', role: 'role-wh-none', fixture: false },
      { name: 'wh-team', namespace: 'team-in', fixture: false },
    ],
    namespaceLabels: { 'team-in': { [OPT_IN]: 'true' } },
    serviceAccounts: [{ namespace: 'team-in', name: 'app', annotations: { 'iam.amazonaws.com/role': arnOf('role-wh-team') } }],
  });
  const objs = rendered();
  const args = agentArgs(objs);
  expect(args).toEqual(expect.arrayContaining(['--token-identity', '--token-interface=pod-id-link0', '--iptables', '--host-interface=cali+']));
  // In-cluster, the agent finds the API server from its ServiceAccount; the lab's is on the node.
  // This machine's kernel has no dummy link type (`ip link add … type dummy`: Unknown device
  // type), so the token addresses go on the node namespace's lo instead of pod-id-link0.
  const labArgs = args.map((a) => (a === '--token-interface=pod-id-link0' ? '--token-interface=lo' : a));
  podiam = await lab.startPodiam({ args: [...labArgs, `--api-server=${lab.kubeUrl}`, '--insecure'] });
  await podiam.waitFor(/token identity listening/);
  webhook = await startWebhook(containerOf(objs, 'Deployment').args as string[]);
}, 120_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

/**
 * `podiam webhook` in the node namespace, reading the lab's API server, with a serving
 * certificate for 127.0.0.1 from a test CA. Its AdmissionReviews are POSTed from the node
 * namespace too (curl, verifying the certificate against the CA), as the API server would.
 */
async function startWebhook(renderedArgs: readonly string[]): Promise<WebhookEndpoint> {
  const dir = mkdtempSync(path.join(lab.dir, 'webhook-'));
  const ca = makeCa(dir);
  const { certFile, keyFile } = makeServingCertificate(dir, 'tls', 'podiam-webhook');
  expect(renderedArgs).toContain(`--port=${WEBHOOK_PORT}`);
  const args = [
    ...renderedArgs.map((a) =>
      a.startsWith('--tls-cert-file=') ? `--tls-cert-file=${certFile}` : a.startsWith('--tls-key-file=') ? `--tls-key-file=${keyFile}` : a.startsWith('--metrics-port=') ? `--metrics-port=${WEBHOOK_METRICS_PORT}` : a,
    ),
    `--api-server=${lab.kubeUrl}`,
    '--insecure',
    '--shutdown-delay=0s',
  ];
  webhookProcess = lab.spawnIn(lab.nodeNs, 'podiam webhook', [process.execPath, ...podiamArgv(args)], { PATH: SYSTEM_PATH });
  await webhookProcess.waitFor(/podiam webhook listening/, 30_000);
  let reviews = 0;
  const post = async (review: string): Promise<string> => {
    const file = path.join(dir, `review-${++reviews}.json`);
    writeFileSync(file, review);
    const r = await lab.exec(lab.nodeNs, ['curl', '-sS', '--max-time', '5', '--cacert', path.join(dir, 'ca.crt'), '-H', 'Content-Type: application/json', '--data-binary', `@${file}`, '-o', '-', '-w', '\n%{http_code}', `https://127.0.0.1:${WEBHOOK_PORT}/mutate?timeout=3s`]);
    const cut = r.stdout.lastIndexOf('\n');
    if (r.stdout.slice(cut + 1) !== '200') throw new Error(`webhook answered ${r.stdout.slice(cut + 1) || r.stderr.trim()}: ${r.stdout.slice(0, cut)}`);
    return r.stdout.slice(0, cut);
  };
  return { port: WEBHOOK_PORT, ca, post };
}

/**
 * The pod as its ReplicaSet creates it, after the ServiceAccount admission plugin (which runs
 * before webhooks) set serviceAccountName; nodeName is set up front, the lab has no scheduler.
 * Two containers: the app and a sidecar, each with env of its own and no AWS variable.
 */
function podManifest(labPod: LabPod, annotations: Record<string, string>, serviceAccount: string): Obj {
  // Full ARNs: the rendered DaemonSet has no --base-role-arn.
  const role = labPod.role === undefined ? {} : { 'iam.amazonaws.com/role': arnOf(labPod.role) };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: labPod.name, namespace: labPod.namespace, annotations: { ...role, ...annotations } },
    spec: {
      nodeName: NODE_NAME,
      serviceAccountName: serviceAccount,
      containers: [
        { name: 'app', image: 'app:1', env: [{ name: 'APP_MODE', value: 'lab' }] },
        { name: 'sidecar', image: 'sidecar:1' },
      ],
    },
  };
}

/** Through the webhook, then created through the API server as admitted, then run (lab kubelet). */
async function admitCreateRun(labPod: LabPod, annotations: Record<string, string>, serviceAccount = 'default'): Promise<{ response: Obj; running: LabKubeletPod }> {
  const { pod: admitted, response } = await mutateThroughWebhook(webhook, podManifest(labPod, annotations, serviceAccount), labPod.namespace);
  const created = await lab.kube('POST', `/api/v1/namespaces/${labPod.namespace}/pods`, admitted);
  expect(created.status).toBe(201);
  const indexed = await podiam.metric('podiam_pods_indexed');
  const running = await LabKubeletPod.start(lab, created.body);
  // The node agent's informer has the pod (both its addresses) before its containers run.
  await waitFor(async () => (await podiam.metric('podiam_pods_indexed')) >= indexed + 2, 15_000, `podiam indexing ${labPod.name}`);
  return { response, running };
}

function arn(role: string, session: string): string {
  return `arn:aws:sts::${ACCOUNT}:assumed-role/${role}/${session}`;
}

function lastJsonLine(stdout: string): Record<string, string> {
  return JSON.parse(stdout.trim().split('\n').pop() || '{}') as Record<string, string>;
}

async function botocore(running: LabKubeletPod, container: string): Promise<Record<string, string>> {
  const r = await running.exec(container, [pythonWithBotocore()!, path.join(ROOT, 'scripts/lab/whoami-botocore.py'), lab.motoUrl]);
  if (r.stdout.trim() === '') return { error: r.stderr.trim().split('\n').pop() ?? `exit ${r.code}` };
  return lastJsonLine(r.stdout);
}

async function sdk(running: LabKubeletPod, container: string): Promise<Record<string, string>> {
  const r = await running.exec(container, [process.execPath, path.join(ROOT, 'dist/scripts/lab/whoami-sdk.js'), lab.motoUrl]);
  if (r.stdout.trim() === '') return { error: r.stderr.trim().split('\n').pop() ?? `exit ${r.code}` };
  return lastJsonLine(r.stdout);
}

/** Answers of the node agent by route (container-credentials: the token path; credentials: IMDS). */
async function served(): Promise<{ token: number; imds: number }> {
  return { token: await podiam.metric('podiam_http_requests_total', { route: 'container-credentials', code: '200' }), imds: await podiam.metric('podiam_http_requests_total', { route: 'credentials', code: '200' }) };
}

function webhookLog(pod: string): Obj | undefined {
  return webhookProcess
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Obj)
    .find((l) => l.pod === pod && typeof l.reason === 'string');
}

describe('an opted-in pod, created as the webhook mutated it', () => {
  let response: Obj;
  let running: LabKubeletPod;

  beforeAll(async () => {
    ({ response, running } = await admitCreateRun(lab.pod('wh-app'), { [OPT_IN]: 'true' }));
  }, 60_000);

  test('the webhook patched it; the API server holds the projected token volume, env and mounts it added', async () => {
    expect(response.patchType).toBe('JSONPatch');
    expect(response.warnings).toBeUndefined();
    await waitFor(() => webhookLog('default/wh-app') !== undefined, 5000, 'the webhook log line');
    expect(webhookLog('default/wh-app')).toMatchObject({ reason: 'injected', role: arnOf('role-wh-app') });
    const stored = (await lab.kube('GET', '/api/v1/namespaces/default/pods/wh-app')).body;
    expect(stored.status).toMatchObject({ phase: 'Running', podIP: lab.pod('wh-app').ip });
    const tokenVolumes = (stored.spec.volumes as Obj[]).filter((v) => v.projected?.sources?.some((s: Obj) => s.serviceAccountToken));
    expect(tokenVolumes).toHaveLength(1);
    for (const name of ['app', 'sidecar']) {
      expect(Object.keys(running.env(name)).filter((k) => k.startsWith('AWS_')).sort()).toEqual(['AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE', 'AWS_CONTAINER_CREDENTIALS_FULL_URI']);
      expect(running.container(name).volumeMounts).toContainEqual(expect.objectContaining({ name: tokenVolumes[0]!.name }));
    }
    expect(running.env('app').APP_MODE).toBe('lab');
  });

  test('the kubelet part: the token is the one the volume asks for, at the file the env names', async () => {
    expect(running.tokens).toHaveLength(1);
    const token = running.tokens[0]!;
    const claims = decode(readFileSync(token.file, 'utf8'))!;
    // Audience and lifetime as the patched volume says (the webhook's --token-audience and 24 h).
    expect(claims.aud).toEqual([token.audience]);
    expect(claims.exp - claims.iat).toBe(token.expirationSeconds);
    expect(claims['kubernetes.io']).toMatchObject({ namespace: 'default', pod: { name: 'wh-app', uid: running.pod.metadata.uid }, serviceaccount: { name: 'default' } });
    for (const name of ['app', 'sidecar']) {
      const mount = (running.container(name).volumeMounts as Obj[]).find((m) => m.name === token.volume)!;
      expect(running.env(name).AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE).toBe(path.posix.join(mount.mountPath, token.path));
      // Inside the container, the file the env names is the token (read-only, as mounted).
      const seen = await running.exec(name, ['sh', '-c', 'cat "$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" && ! touch "$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" 2>/dev/null']);
      expect(seen).toMatchObject({ code: 0, stdout: readFileSync(token.file, 'utf8') });
    }
    // Mounted in the containers' mount namespaces only, never on the host.
    expect(existsSync(path.posix.join(running.container('app').volumeMounts[0].mountPath, token.path))).toBe(false);
  });

  test('botocore in the app container gets the pod role over the token path', async () => {
    const before = await served();
    const who = await botocore(running, 'app');
    expect(who).toMatchObject({ arn: arn('role-wh-app', 'default.wh-app'), method: 'container-role' });
    const after = await served();
    expect(after.token).toBeGreaterThan(before.token);
    expect(after.imds).toBe(before.imds);
  });

  test('the AWS SDK for JavaScript v3 in the sidecar gets the pod role over the token path', async () => {
    const before = await served();
    const who = await sdk(running, 'sidecar');
    expect(who.arn).toBe(arn('role-wh-app', 'default.wh-app'));
    const after = await served();
    expect(after.token).toBeGreaterThan(before.token);
    expect(after.imds).toBe(before.imds);
  });
});

describe('a pod of a namespace labelled to opt in, its role on its ServiceAccount (both read by the webhook from the API server)', () => {
  let response: Obj;
  let running: LabKubeletPod;

  beforeAll(async () => {
    ({ response, running } = await admitCreateRun(lab.pod('wh-team'), {}, 'app'));
  }, 60_000);

  test('patched, and its token is bound to its own ServiceAccount', async () => {
    expect(response.patchType).toBe('JSONPatch');
    await waitFor(() => webhookLog('team-in/wh-team') !== undefined, 5000, 'the webhook log line');
    expect(webhookLog('team-in/wh-team')).toMatchObject({ reason: 'injected', role: arnOf('role-wh-team') });
    expect(running.pod.metadata.annotations).toEqual({});
    expect(decode(readFileSync(running.tokens[0]!.file, 'utf8'))!['kubernetes.io'].serviceaccount.name).toBe('app');
  });

  test('botocore and the SDK for JavaScript v3 get the ServiceAccount role over the token path', async () => {
    const before = await served();
    expect(await botocore(running, 'app')).toMatchObject({ arn: arn('role-wh-team', 'team-in.wh-team'), method: 'container-role' });
    expect((await sdk(running, 'sidecar')).arn).toBe(arn('role-wh-team', 'team-in.wh-team'));
    const after = await served();
    expect(after.token).toBeGreaterThanOrEqual(before.token + 2);
    expect(after.imds).toBe(before.imds);
  });
});

describe('a pod that does not opt in', () => {
  let response: Obj;
  let running: LabKubeletPod;

  beforeAll(async () => {
    ({ response, running } = await admitCreateRun(lab.pod('wh-plain'), {}));
  }, 60_000);

  test('gets no patch, so no container-credentials env, volume or mount', async () => {
    expect(response.patch).toBeUndefined();
    expect(response.warnings).toBeUndefined();
    await waitFor(() => webhookLog('default/wh-plain') !== undefined, 5000, 'the webhook log line');
    expect(webhookLog('default/wh-plain')).toMatchObject({ reason: 'not-opted-in' });
    expect(running.pod.spec.volumes).toBeUndefined();
    for (const name of ['app', 'sidecar']) {
      expect(Object.keys(running.env(name)).filter((k) => k.startsWith('AWS_'))).toEqual([]);
      expect(running.container(name).volumeMounts).toBeUndefined();
    }
    expect(running.tokens).toEqual([]);
  });

  test('its clients do not use the token path (botocore falls back to the metadata service)', async () => {
    const before = await served();
    const who = await botocore(running, 'app');
    expect(who.method).not.toBe('container-role');
    expect(who).toMatchObject({ arn: arn('role-wh-plain', 'default.wh-plain'), method: 'iam-role' });
    const after = await served();
    expect(after.token).toBe(before.token);
    expect(after.imds).toBeGreaterThan(before.imds);
  });
});

describe('the component absent (the CNI overlay alone)', () => {
  let running: LabKubeletPod;

  beforeAll(async () => {
    const objs = kustomize(path.join(ROOT, 'manifests/overlays/calico'));
    // Nothing calls a webhook, and the agent serves no token path: nothing points pods there.
    expect(objs.filter((o) => o.kind === 'MutatingWebhookConfiguration')).toEqual([]);
    expect(agentArgs(objs)).not.toContain('--token-identity');
    const labPod = lab.pod('wh-none');
    // Created as the API server admits it with no webhook configured: the pod spec as written.
    const created = await lab.kube('POST', `/api/v1/namespaces/${labPod.namespace}/pods`, podManifest(labPod, { [OPT_IN]: 'true' }, 'default'));
    expect(created.status).toBe(201);
    const indexed = await podiam.metric('podiam_pods_indexed');
    running = await LabKubeletPod.start(lab, created.body);
    await waitFor(async () => (await podiam.metric('podiam_pods_indexed')) >= indexed + 2, 15_000, 'podiam indexing wh-none');
  }, 60_000);

  test('a pod asking to opt in is not injected: no container-credentials env, and its SDKs get the role over IMDS', async () => {
    expect(running.tokens).toEqual([]);
    for (const name of ['app', 'sidecar']) expect(Object.keys(running.env(name)).filter((k) => k.startsWith('AWS_'))).toEqual([]);
    const before = await served();
    expect(await botocore(running, 'app')).toMatchObject({ arn: arn('role-wh-none', 'default.wh-none'), method: 'iam-role' });
    expect((await sdk(running, 'sidecar')).arn).toBe(arn('role-wh-none', 'default.wh-none'));
    const after = await served();
    expect(after.token).toBe(before.token);
    expect(after.imds).toBeGreaterThan(before.imds);
  });
});
