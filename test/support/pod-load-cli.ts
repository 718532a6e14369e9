/**
 * First-time pods at a steady rate, in the node lab (run inside a node's namespace, where the
 * Kubernetes test API and the agent are): for each pod in turn, create it on the node (a role
 * annotation of its own), report it Running with an address, and ask the agent for its
 * credentials — a pod the agent and the broker have never seen, every time. Two ways to ask:
 *
 *  - mode 'imds' (default): GET <imdsUrl>/latest/meta-data/iam/security-credentials/<role> from
 *    the pod's own address (the source IP is the identity, as for a pod behind the DNAT): the
 *    pods' addresses are 10.99.x.y, which the caller makes local to the node namespace first
 *    (`ip route add local 10.99.0.0/16 dev lo`);
 *  - mode 'token': a token bound to the pod (TokenRequest, as the kubelet does for the projected
 *    volume), then GET <tokenUrl> with it (costlier: a TokenRequest and two TokenReviews a pod).
 *
 *   node dist/test/support/pod-load-cli.js '<json spec>'
 *   spec: { mode, kubeUrl, imdsUrl, tokenUrl, node, namespace, prefix, count, ratePerSec, audience, out }
 *
 * Writes every pod's outcome to `out` (JSON: name, uid, role, created/asked/answered times,
 * status, the AccessKeyId served) and prints a one-line summary.
 */
import { writeFileSync } from 'node:fs';
import http from 'node:http';

interface Spec {
  mode?: 'imds' | 'token';
  kubeUrl: string;
  imdsUrl?: string;
  tokenUrl?: string;
  node: string;
  namespace: string;
  prefix: string;
  count: number;
  ratePerSec: number;
  audience?: string;
  out: string;
}

export interface LoadResult {
  name: string;
  uid: string;
  role: string;
  createdMs: number;
  askedMs: number;
  answeredMs: number;
  status: number;
  accessKeyId?: string;
  error?: string;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as Spec;
// The harness's own calls to the test API server get a connection each: a pooled keep-alive
// socket the server is closing as idle meanwhile fails the call with ECONNRESET (seen on Node 24),
// which would count as a failed pod although podiam was never asked.
const agent = new http.Agent({ keepAlive: false, maxSockets: 64 });

function request(url: string, method: string, body?: unknown, headers: Record<string, string> = {}, contentType = 'application/json', localAddress?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    // A pod's own request comes from its own address, on a connection of its own.
    const req = http.request(url, { method, ...(localAddress === undefined ? { agent } : { agent: false, localAddress }), timeout: 30_000, headers: { ...headers, ...(data === undefined ? {} : { 'Content-Type': contentType, 'Content-Length': String(Buffer.byteLength(data)) }) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', (err) => resolve({ status: 0, body: err.message }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 0, body: err.message }));
    req.end(data);
  });
}

async function onePod(i: number): Promise<LoadResult> {
  const name = `${spec.prefix}-${i}`;
  const role = `${spec.prefix}-role-${i}`;
  const createdMs = Date.now();
  const ns = encodeURIComponent(spec.namespace);
  const created = await request(`${spec.kubeUrl}/api/v1/namespaces/${ns}/pods`, 'POST', {
    metadata: { name, namespace: spec.namespace, annotations: { 'iam.amazonaws.com/role': role } },
    spec: { nodeName: spec.node, containers: [{ name: 'app', image: 'app' }] },
  });
  const base = { name, role, createdMs };
  if (created.status !== 201) return { ...base, uid: '', askedMs: 0, answeredMs: 0, status: 0, error: `create: ${created.status} ${created.body.slice(0, 200)}` };
  const uid = (JSON.parse(created.body) as { metadata: { uid: string } }).metadata.uid;
  const octet = (n: number): number => (n % 250) + 2;
  const ip = `10.99.${octet(Math.floor(i / 250))}.${octet(i)}`;
  await request(`${spec.kubeUrl}/api/v1/namespaces/${ns}/pods/${name}/status`, 'PATCH', { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } }, {}, 'application/merge-patch+json');
  if ((spec.mode ?? 'imds') === 'imds') {
    const askedMs = Date.now();
    const answer = await request(`${spec.imdsUrl}/latest/meta-data/iam/security-credentials/${role}`, 'GET', undefined, {}, undefined, ip);
    return answerOf({ ...base, uid, askedMs }, answer);
  }
  const tr = await request(`${spec.kubeUrl}/api/v1/namespaces/${ns}/serviceaccounts/default/token`, 'POST', {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: { audiences: [spec.audience ?? 'pods.eks.amazonaws.com'], expirationSeconds: 3600, boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name, uid } },
  });
  const token = tr.status === 201 ? (JSON.parse(tr.body) as { status: { token: string } }).status.token : undefined;
  if (token === undefined) return { ...base, uid, askedMs: 0, answeredMs: 0, status: 0, error: `token: ${tr.status} ${tr.body.slice(0, 200)}` };
  const askedMs = Date.now();
  const answer = await request(spec.tokenUrl!, 'GET', undefined, { Authorization: token });
  return answerOf({ ...base, uid, askedMs }, answer);
}

function answerOf(asked: Omit<LoadResult, 'answeredMs' | 'status'>, answer: { status: number; body: string }): LoadResult {
  const answeredMs = Date.now();
  let accessKeyId: string | undefined;
  if (answer.status === 200) {
    try {
      accessKeyId = (JSON.parse(answer.body) as { AccessKeyId?: string }).AccessKeyId;
    } catch {
      accessKeyId = undefined;
    }
  }
  return { ...asked, answeredMs, status: answer.status, ...(accessKeyId !== undefined && { accessKeyId }), ...((answer.status !== 200 || accessKeyId === undefined) && { error: answer.body.slice(0, 300) }) };
}

async function main(): Promise<void> {
  const results: LoadResult[] = [];
  const pending: Array<Promise<void>> = [];
  const t0 = Date.now();
  for (let i = 0; i < spec.count; i++) {
    // A steady rate: pod i starts at t0 + i / rate, whatever the others are doing.
    const due = t0 + (i * 1000) / spec.ratePerSec;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    pending.push(onePod(i).then((r) => void results.push(r)));
  }
  await Promise.all(pending);
  agent.destroy();
  writeFileSync(spec.out, JSON.stringify(results));
  const statuses: Record<string, number> = {};
  for (const r of results) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
  process.stdout.write(`${JSON.stringify({ pods: results.length, statuses, wallMs: Date.now() - t0 })}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`pod-load-cli: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
