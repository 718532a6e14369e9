/**
 * Pure: what the webhook does to a pod. Pod (+ its namespace's labels, + its ServiceAccount's
 * annotations) in; a decision and JSON Patch operations out. No I/O, so every pod shape is a
 * unit test.
 *
 * What is injected matches what EKS Pod Identity injects, so the AWS SDKs' container credential
 * provider finds the node agent's token path (/v1/credentials on 169.254.170.23):
 * https://docs.aws.amazon.com/eks/latest/userguide/pod-id-how-it-works.html
 */

export const CREDENTIALS_FULL_URI = 'http://169.254.170.23/v1/credentials';
export const TOKEN_VOLUME = 'eks-pod-identity-token';
export const TOKEN_DIR = '/var/run/secrets/pods.eks.amazonaws.com/serviceaccount';
export const TOKEN_FILE_NAME = 'eks-pod-identity-token';
export const TOKEN_FILE = `${TOKEN_DIR}/${TOKEN_FILE_NAME}`;
/** EKS Pod Identity's token lifetime; the kubelet rotates the file at 80% of it. */
export const TOKEN_EXPIRATION_SECONDS = 86_400;

/** The namespaces the webhook never touches, whatever their labels say. */
export const PROTECTED_NAMESPACES: ReadonlySet<string> = new Set(['kube-system']);

/** The parts of a pod the webhook reads. Anything else in it is left as it is. */
export interface PodShape {
  metadata?: { name?: string; generateName?: string; namespace?: string; annotations?: Record<string, unknown> | null; labels?: Record<string, unknown> | null } | null;
  spec?: {
    serviceAccountName?: string;
    volumes?: Array<{ name?: string }> | null;
    containers?: ContainerShape[] | null;
    initContainers?: ContainerShape[] | null;
  } | null;
}

export interface ContainerShape {
  name?: string;
  env?: Array<{ name?: string }> | null;
  volumeMounts?: Array<{ name?: string; mountPath?: string }> | null;
}

export interface ObjectFacts {
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
}

export interface MutateOptions {
  readonly tokenAudience: string;
  readonly roleKey: string;
  readonly optInKey: string;
  readonly injectAllWithRole: boolean;
}

export interface JsonPatchOp {
  readonly op: 'add';
  readonly path: string;
  readonly value: unknown;
}

/** Why a pod was or was not mutated: the `reason` label of podiam_webhook_admissions_total. */
export type SkipReason = 'protected-namespace' | 'irsa-injected' | 'opted-out' | 'not-opted-in' | 'bad-opt-in-value' | 'no-role' | 'already-injected';

/** IRSA's ServiceAccount annotation: the node agent reads it as the ServiceAccount's role (after podiam's key). */
export const IRSA_ROLE_KEY = 'eks.amazonaws.com/role-arn';
/**
 * What EKS's IRSA webhook (amazon-eks-pod-identity-webhook) injects: the web identity env and the
 * `aws-iam-token` volume mounted under /var/run/secrets/eks.amazonaws.com/serviceaccount.
 * https://github.com/aws/amazon-eks-pod-identity-webhook#usage
 */
const IRSA_ENV: ReadonlySet<string> = new Set(['AWS_ROLE_ARN', 'AWS_WEB_IDENTITY_TOKEN_FILE']);
const IRSA_VOLUME = 'aws-iam-token';
const IRSA_TOKEN_DIR = '/var/run/secrets/eks.amazonaws.com/';

/**
 * Whether IRSA's webhook already gave the pod its identity: then it is left as it is (the SDKs
 * prefer the container provider, so injecting would silently take the pod off its IRSA role).
 */
export function irsaInjected(pod: PodShape): boolean {
  if ((pod.spec?.volumes ?? []).some((v) => v?.name === IRSA_VOLUME)) return true;
  for (const c of [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])]) {
    if ((c?.env ?? []).some((e) => typeof e?.name === 'string' && IRSA_ENV.has(e.name))) return true;
    if ((c?.volumeMounts ?? []).some((m) => typeof m?.mountPath === 'string' && m.mountPath.startsWith(IRSA_TOKEN_DIR))) return true;
  }
  return false;
}

/** The pod's own say: its annotation, else its label (`true`/`false`), else nothing. */
export function podChoice(pod: PodShape, optInKey: string): 'in' | 'out' | 'bad' | undefined {
  const value = pod.metadata?.annotations?.[optInKey] ?? pod.metadata?.labels?.[optInKey];
  if (value === undefined || value === null) return undefined;
  if (value === 'true') return 'in';
  if (value === 'false') return 'out';
  return 'bad';
}

/** The namespace's say, from its label: `true`, `false`, or nothing. */
export function namespaceChoice(namespace: ObjectFacts, optInKey: string): 'in' | 'out' | undefined {
  const value = namespace.labels[optInKey];
  if (value === 'true') return 'in';
  if (value === 'false') return 'out';
  return undefined;
}

/**
 * Whether the pod opts in. The pod decides first (it is the more specific object), then its
 * namespace, then --inject-all-with-role.
 */
export function optsIn(pod: PodShape, namespace: ObjectFacts | undefined, options: MutateOptions): boolean {
  const own = podChoice(pod, options.optInKey);
  if (own !== undefined) return own === 'in';
  const ns = namespace === undefined ? undefined : namespaceChoice(namespace, options.optInKey);
  if (ns !== undefined) return ns === 'in';
  return options.injectAllWithRole;
}

/** The ServiceAccount a pod runs as (the ServiceAccount admission plugin sets it before webhooks run). */
export function serviceAccountOf(pod: PodShape): string {
  const name = pod.spec?.serviceAccountName;
  return typeof name === 'string' && name !== '' ? name : 'default';
}

/** The role annotation of the pod, else of its ServiceAccount (podiam's key, then IRSA's, as the node agent reads them). */
export function roleOf(pod: PodShape, serviceAccount: ObjectFacts | undefined, roleKey: string): string | undefined {
  const own = pod.metadata?.annotations?.[roleKey];
  if (typeof own === 'string' && own.trim() !== '') return own.trim();
  for (const key of [roleKey, IRSA_ROLE_KEY]) {
    const fromSa = serviceAccount?.annotations[key];
    if (typeof fromSa === 'string' && fromSa.trim() !== '') return fromSa.trim();
  }
  return undefined;
}

/**
 * The JSON Patch that gives every container and init container the token identity: the two env
 * vars (a name the container already has is left alone: the pod's own value wins), the mount (not
 * where the container already mounts something), and the projected token volume (not when the pod
 * already has a volume of that name). On an injected pod it is empty: reinvocation and a second
 * webhook pass add nothing.
 */
export function injectionPatch(pod: PodShape, options: Pick<MutateOptions, 'tokenAudience'>): JsonPatchOp[] {
  const ops: JsonPatchOp[] = [];
  const spec = pod.spec ?? {};
  const volumes = Array.isArray(spec.volumes) ? spec.volumes : undefined;
  const volume = {
    name: TOKEN_VOLUME,
    projected: {
      sources: [{ serviceAccountToken: { audience: options.tokenAudience, expirationSeconds: TOKEN_EXPIRATION_SECONDS, path: TOKEN_FILE_NAME } }],
    },
  };
  if (volumes === undefined) ops.push({ op: 'add', path: '/spec/volumes', value: [volume] });
  else if (!volumes.some((v) => v?.name === TOKEN_VOLUME)) ops.push({ op: 'add', path: '/spec/volumes/-', value: volume });

  const env = [
    { name: 'AWS_CONTAINER_CREDENTIALS_FULL_URI', value: CREDENTIALS_FULL_URI },
    { name: 'AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE', value: TOKEN_FILE },
  ];
  const mount = { name: TOKEN_VOLUME, mountPath: TOKEN_DIR, readOnly: true };
  for (const field of ['initContainers', 'containers'] as const) {
    const containers = spec[field];
    if (!Array.isArray(containers)) continue;
    containers.forEach((container, i) => {
      const at = `/spec/${field}/${i}`;
      const ownEnv = Array.isArray(container?.env) ? container.env : undefined;
      const missing = env.filter((e) => !ownEnv?.some((o) => o?.name === e.name));
      if (ownEnv === undefined) ops.push({ op: 'add', path: `${at}/env`, value: missing });
      else for (const e of missing) ops.push({ op: 'add', path: `${at}/env/-`, value: e });

      const mounts = Array.isArray(container?.volumeMounts) ? container.volumeMounts : undefined;
      // A second mount at the same path would make the API server refuse the pod.
      if (mounts === undefined) ops.push({ op: 'add', path: `${at}/volumeMounts`, value: [mount] });
      else if (!mounts.some((m) => m?.mountPath === TOKEN_DIR)) ops.push({ op: 'add', path: `${at}/volumeMounts/-`, value: mount });
    });
  }
  return ops;
}
