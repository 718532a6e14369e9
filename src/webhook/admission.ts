/**
 * One AdmissionReview, read top-down: parse → is it a pod CREATE → protected namespace → did
 * IRSA's webhook already inject it (then it is left alone) → does the
 * pod opt in (its own say, else its namespace's) → does it have a role (its own, else its
 * ServiceAccount's) → the patch. Every way out is an answer that allows the pod: this webhook
 * adds a convenience, it never decides whether a pod may run.
 * AdmissionReview v1: https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#request
 */
import type { Lookups } from './lookups.js';
import { injectionPatch, irsaInjected, namespaceChoice, optsIn, podChoice, PROTECTED_NAMESPACES, roleOf, serviceAccountOf } from './mutate.js';
import type { MutateOptions, PodShape, SkipReason } from './mutate.js';

export type AdmissionResult = 'mutated' | 'skipped' | 'error';
export type AdmissionReason = SkipReason | 'injected' | 'not-a-pod-create' | 'bad-review' | 'bad-pod' | 'lookup-failed';

export interface AdmissionOutcome {
  readonly result: AdmissionResult;
  readonly reason: AdmissionReason;
  /** namespace/name (or namespace/generateName*), for the log line. */
  readonly pod: string;
  readonly uid: string;
  readonly role?: string;
  readonly detail?: string;
  readonly patchOps?: number;
}

export interface AdmissionAnswer {
  /** The AdmissionReview to send back, always with allowed: true. */
  readonly review: Record<string, unknown>;
  readonly outcome: AdmissionOutcome;
}

interface ReviewRequest {
  uid: string;
  kind?: { group?: string; version?: string; kind?: string };
  resource?: { group?: string; version?: string; resource?: string };
  subResource?: string;
  operation?: string;
  namespace?: string;
  object?: unknown;
}

export async function admit(body: unknown, lookups: Lookups, options: MutateOptions): Promise<AdmissionAnswer> {
  const request = reviewRequest(body);
  if (typeof request === 'string') return answer('', { result: 'error', reason: 'bad-review', pod: '', detail: request });
  const { uid } = request;
  if (!isPodCreate(request)) return answer(uid, { result: 'skipped', reason: 'not-a-pod-create', pod: '' });

  const pod = request.object;
  const objectNamespace = isObject(pod) && isObject(pod.metadata) ? stringOr(pod.metadata.namespace, '') : '';
  const namespace = stringOr(request.namespace, '') || objectNamespace;
  const podName = nameOf(pod, namespace);
  if (!isPod(pod) || namespace === '') return answer(uid, { result: 'error', reason: 'bad-pod', pod: podName, detail: 'request.object is not a pod with containers in a namespace' });
  // The only namespace this answer may read: the request's. The API server makes the object's
  // agree with it before admission, so a review where they differ (or a name no Kubernetes object
  // can have) was not sent by it: answered without any read.
  if ((objectNamespace !== '' && objectNamespace !== namespace) || !DNS_LABEL.test(namespace) || !DNS_SUBDOMAIN.test(serviceAccountOf(pod))) {
    return answer(uid, { result: 'error', reason: 'bad-pod', pod: podName, detail: 'the pod\'s namespace or ServiceAccount name is not one the API server would send' });
  }
  if (PROTECTED_NAMESPACES.has(namespace)) return answer(uid, { result: 'skipped', reason: 'protected-namespace', pod: podName });
  if (irsaInjected(pod)) return answer(uid, { result: 'skipped', reason: 'irsa-injected', pod: podName, detail: "IRSA's webhook already injected its web identity (AWS_ROLE_ARN / AWS_WEB_IDENTITY_TOKEN_FILE / the eks.amazonaws.com token volume)" });

  const own = podChoice(pod, options.optInKey);
  if (own === 'out') return answer(uid, { result: 'skipped', reason: 'opted-out', pod: podName, detail: `pod ${options.optInKey}=false` });
  if (own === 'bad') return answer(uid, { result: 'skipped', reason: 'bad-opt-in-value', pod: podName, detail: `${options.optInKey} must be "true" or "false"` });
  if (own === undefined) {
    const read = await attempt(() => lookups.namespace(namespace));
    if (read.failed) return answer(uid, { result: 'error', reason: 'lookup-failed', pod: podName, detail: `namespace ${namespace}: ${read.error}` });
    const ns = read.value;
    if (!optsIn(pod, ns, options)) {
      const saidNo = ns !== undefined && namespaceChoice(ns, options.optInKey) === 'out';
      return answer(uid, { result: 'skipped', reason: saidNo ? 'opted-out' : 'not-opted-in', pod: podName, detail: saidNo ? `namespace ${options.optInKey}=false` : undefined });
    }
  }

  let role = roleOf(pod, undefined, options.roleKey);
  if (role === undefined) {
    const serviceAccount = serviceAccountOf(pod);
    const read = await attempt(() => lookups.serviceAccount(namespace, serviceAccount));
    if (read.failed) return answer(uid, { result: 'error', reason: 'lookup-failed', pod: podName, detail: `serviceaccount ${namespace}/${serviceAccount}: ${read.error}` });
    role = roleOf(pod, read.value, options.roleKey);
    if (role === undefined) return answer(uid, { result: 'skipped', reason: 'no-role', pod: podName, detail: `neither the pod nor serviceaccount ${serviceAccount} has ${options.roleKey}` });
  }

  const patch = injectionPatch(pod, options);
  if (patch.length === 0) return answer(uid, { result: 'skipped', reason: 'already-injected', pod: podName, role });
  return answer(uid, { result: 'mutated', reason: 'injected', pod: podName, role, patchOps: patch.length }, patch);
}

/** The request of an AdmissionReview v1, or why it is not one. */
function reviewRequest(body: unknown): ReviewRequest | string {
  if (!isObject(body)) return 'body is not a JSON object';
  const review = body as { apiVersion?: unknown; kind?: unknown; request?: unknown };
  if (review.apiVersion !== 'admission.k8s.io/v1' || review.kind !== 'AdmissionReview') return 'not an admission.k8s.io/v1 AdmissionReview';
  if (!isObject(review.request)) return 'AdmissionReview has no request';
  const request = review.request as unknown as ReviewRequest;
  if (typeof request.uid !== 'string' || request.uid === '') return 'AdmissionReview request has no uid';
  return request;
}

/** Namespace names are DNS labels; ServiceAccount names DNS subdomains (RFC 1123). */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function isPodCreate(request: ReviewRequest): boolean {
  const kind = request.kind;
  return request.operation === 'CREATE' && !request.subResource && kind?.group === '' && kind?.version === 'v1' && kind?.kind === 'Pod';
}

/** The shape every patch operation relies on: spec is an object and containers a list of objects. */
function isPod(value: unknown): value is PodShape {
  if (!isObject(value)) return false;
  const pod = value as { metadata?: unknown; spec?: { containers?: unknown; initContainers?: unknown; volumes?: unknown } };
  if (pod.metadata !== undefined && !isObject(pod.metadata)) return false;
  if (!isObject(pod.spec)) return false;
  const list = (v: unknown, required: boolean): boolean => (v === undefined || v === null ? !required : Array.isArray(v) && v.every(isObject));
  return list(pod.spec!.containers, true) && (pod.spec!.containers as unknown[]).length > 0 && list(pod.spec!.initContainers, false) && list(pod.spec!.volumes, false);
}

function answer(uid: string, outcome: Omit<AdmissionOutcome, 'uid'>, patch?: readonly unknown[]): AdmissionAnswer {
  const response: Record<string, unknown> = { uid, allowed: true };
  if (patch !== undefined) {
    response.patchType = 'JSONPatch';
    response.patch = Buffer.from(JSON.stringify(patch)).toString('base64');
  }
  // Warnings reach the user (kubectl prints them): only when something was wrong with the input.
  if (outcome.result === 'error' || outcome.reason === 'bad-opt-in-value') {
    response.warnings = [`podiam: token identity not injected (${outcome.reason}): ${outcome.detail ?? ''}`.slice(0, 250)];
  }
  return { review: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response }, outcome: { ...outcome, uid } };
}

async function attempt<T>(read: () => Promise<T>): Promise<{ failed: false; value: T } | { failed: true; error: string }> {
  try {
    return { failed: false, value: await read() };
  } catch (err) {
    return { failed: true, error: err instanceof Error ? err.message : String(err) };
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function stringOr(v: unknown, fallback: string): string {
  return typeof v === 'string' ? v : fallback;
}

function nameOf(pod: unknown, namespace: string): string {
  const meta = isObject(pod) && isObject(pod.metadata) ? pod.metadata : {};
  const name = stringOr(meta.name, '') || (typeof meta.generateName === 'string' ? `${meta.generateName}*` : '');
  return `${namespace}/${name}`;
}
