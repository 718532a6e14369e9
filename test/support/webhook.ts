/**
 * Helpers for tests that use `podiam webhook`: serving certificates made with the openssl CLI
 * (Node's crypto cannot issue X.509 certificates), pod AdmissionReviews as the API server sends
 * them, and applying the JSON Patch answered, so a test (or the node lab) can create a pod
 * exactly as the webhook mutated it.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import jsonpatch from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';

type Obj = Record<string, any>;

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A test CA in `dir` (ca.crt, ca.key); returns the CA certificate (PEM) for clients. */
export function makeCa(dir: string): Buffer {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=podiam-test-ca'], dir);
  return readFileSync(path.join(dir, 'ca.crt'));
}

/**
 * A serving certificate for 127.0.0.1/localhost (or `subjectAltNames`, e.g. ['IP:192.0.2.1']) signed
 * by the CA in `dir`: <name>.crt and <name>.key.
 */
export function makeServingCertificate(dir: string, name: string, cn: string, subjectAltNames: readonly string[] = ['IP:127.0.0.1', 'DNS:localhost']): { certFile: string; keyFile: string } {
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
  writeFileSync(path.join(dir, `${name}.ext`), `subjectAltName=${subjectAltNames.join(',')}\nextendedKeyUsage=serverAuth\n`);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '1', '-extfile', `${name}.ext`], dir);
  return { certFile: path.join(dir, `${name}.crt`), keyFile: path.join(dir, `${name}.key`) };
}

/** A client certificate (as the API server presents with an AdmissionConfiguration kubeconfig) signed by the CA in `dir`. */
export function makeClientCertificate(dir: string, name: string, cn: string): { cert: Buffer; key: Buffer } {
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
  writeFileSync(path.join(dir, `${name}.ext`), 'extendedKeyUsage=clientAuth\n');
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '1', '-extfile', `${name}.ext`], dir);
  return { cert: readFileSync(path.join(dir, `${name}.crt`)), key: readFileSync(path.join(dir, `${name}.key`)) };
}

let reviews = 0;

/**
 * An AdmissionReview v1 for a pod CREATE, as the API server sends it: the object's namespace is
 * the request's (the API server sets it, or refuses a pod whose namespace differs, before admission).
 */
export function podAdmissionReview(pod: Obj, namespace: string, request: Obj = {}): Obj {
  if (pod !== null && typeof pod === 'object' && pod.metadata !== null && typeof pod.metadata === 'object') pod = { ...pod, metadata: { ...pod.metadata, namespace } };
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: `uid-${process.pid}-${++reviews}`,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      requestResource: { group: '', version: 'v1', resource: 'pods' },
      name: pod.metadata?.name ?? '',
      namespace,
      operation: 'CREATE',
      userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller' },
      object: pod,
      oldObject: null,
      dryRun: false,
      options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
      ...request,
    },
  };
}

/** The pod with the answer's JSON Patch applied (every operation validated), or unchanged when there is none. */
export function applyAdmissionPatch(pod: Obj, response: Obj): Obj {
  if (response.patch === undefined) return structuredClone(pod);
  if (response.patchType !== 'JSONPatch') throw new Error(`patchType ${String(response.patchType)}, expected JSONPatch`);
  const ops = JSON.parse(Buffer.from(response.patch as string, 'base64').toString()) as Operation[];
  return jsonpatch.applyPatch(structuredClone(pod), ops, true, false).newDocument as Obj;
}

/** A running `podiam webhook`, as its API server reaches it. */
export interface WebhookEndpoint {
  readonly port: number;
  /** The CA its serving certificate is verified against. */
  readonly ca: Buffer;
  /**
   * POSTs an AdmissionReview (JSON) to /mutate and resolves with the 200 answer's body. Default:
   * HTTPS from this process to 127.0.0.1:port; the node lab passes one that sends from the
   * namespace the webhook runs in.
   */
  readonly post?: (review: string) => Promise<string>;
}

/** Sends the pod through a running `podiam webhook` (HTTPS, verified against `ca`) and returns it as admitted. */
export async function mutateThroughWebhook(webhook: WebhookEndpoint, pod: Obj, namespace: string): Promise<{ pod: Obj; response: Obj }> {
  const review = podAdmissionReview(pod, namespace);
  const text = await (webhook.post ?? ((body: string) => postReview(webhook, body)))(JSON.stringify(review));
  const response = (JSON.parse(text) as Obj).response as Obj;
  if (response.uid !== review.request.uid || response.allowed !== true) throw new Error(`unexpected admission answer: ${text}`);
  return { pod: applyAdmissionPatch(pod, response), response };
}

function postReview(webhook: WebhookEndpoint, body: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: webhook.port, path: '/mutate?timeout=3s', method: 'POST', ca: webhook.ca, agent: false, headers: { 'Content-Type': 'application/json' }, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks).toString()) : reject(new Error(`webhook answered HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error('webhook did not answer within 5 s')));
    req.on('error', reject);
    req.end(body);
  });
}
