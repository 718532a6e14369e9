/**
 * The injection patch over a table of pod shapes: it applies with a real JSON Patch
 * implementation (fast-json-patch, validating each operation), the result validates against the
 * Pod schema, nothing the pod had is changed, and a second pass adds nothing.
 */
import jsonpatch from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import { Pod } from 'kubernetes-models/v1/Pod';
import {
  CREDENTIALS_FULL_URI,
  TOKEN_DIR,
  TOKEN_FILE,
  TOKEN_VOLUME,
  injectionPatch,
  namespaceChoice,
  optsIn,
  podChoice,
  roleOf,
  serviceAccountOf,
} from '../../src/webhook/mutate.js';
import type { MutateOptions, PodShape } from '../../src/webhook/mutate.js';

type Obj = Record<string, any>;
const OPTIONS: MutateOptions = { tokenAudience: 'pods.eks.amazonaws.com', roleKey: 'iam.amazonaws.com/role', optInKey: 'podiam.io/token-identity', injectAllWithRole: false };
const ENV_NAMES = ['AWS_CONTAINER_CREDENTIALS_FULL_URI', 'AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE'];

function pod(spec: Obj, metadata: Obj = {}): Obj {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'team-a', ...metadata }, spec: { serviceAccountName: 'app', ...spec } };
}
const c = (name: string, extra: Obj = {}): Obj => ({ name, image: 'public.ecr.aws/docker/library/busybox:1.36', ...extra });
const apiTokenVolume = {
  name: 'kube-api-access-abcde',
  projected: { sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }, { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } }] },
};
const apiTokenMount = { name: 'kube-api-access-abcde', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true };

/** name → the pod before injection. */
const SHAPES: ReadonlyArray<[string, Obj]> = [
  ['one container, no env, no mounts, no volumes', pod({ containers: [c('app')] })],
  ['empty env, mounts and volumes lists', pod({ containers: [c('app', { env: [], volumeMounts: [] })], volumes: [] })],
  [
    'what the API server admits: the ServiceAccount admission plugin’s token volume and mount',
    pod({ containers: [c('app', { volumeMounts: [apiTokenMount] })], volumes: [apiTokenVolume] }),
  ],
  [
    'sidecars and init containers, each with its own env and mounts',
    pod({
      initContainers: [c('migrate', { env: [{ name: 'DB', value: 'x' }] }), c('wait')],
      containers: [
        c('app', { env: [{ name: 'A', value: '1' }, { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } }], volumeMounts: [{ name: 'data', mountPath: '/data' }, apiTokenMount] }),
        c('envoy', { ports: [{ containerPort: 15001 }] }),
        c('log-shipper', { envFrom: [{ configMapRef: { name: 'shipper' } }], volumeMounts: [{ name: 'data', mountPath: '/data', readOnly: true }] }),
      ],
      volumes: [{ name: 'data', emptyDir: {} }, apiTokenVolume],
    }),
  ],
  [
    'the pod sets the credentials URI itself in one container: its value stays',
    pod({ containers: [c('app', { env: [{ name: 'AWS_CONTAINER_CREDENTIALS_FULL_URI', value: 'http://127.0.0.1:9911/creds' }] }), c('sidecar')] }),
  ],
  [
    'the pod sets the token file from a field reference: it stays',
    pod({ containers: [c('app', { env: [{ name: 'AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE', valueFrom: { configMapKeyRef: { name: 'cfg', key: 'tokenFile' } } }] })] }),
  ],
  [
    'a container already mounts its own volume at the token directory: no second mount there',
    pod({ containers: [c('app', { volumeMounts: [{ name: 'own-token', mountPath: TOKEN_DIR }] }), c('sidecar')], volumes: [{ name: 'own-token', secret: { secretName: 't' } }] }),
  ],
  [
    'the pod already has a volume named like the token volume: it is used, not replaced',
    pod({ containers: [c('app')], volumes: [{ name: TOKEN_VOLUME, projected: { sources: [{ serviceAccountToken: { audience: 'custom', expirationSeconds: 3600, path: 'eks-pod-identity-token' } }] } }] }),
  ],
  ['null env and volumeMounts (as some clients serialise them)', pod({ containers: [c('app', { env: null, volumeMounts: null })], volumes: null })],
];

function apply(document: Obj, ops: readonly unknown[]): Obj {
  // validateOperation = true: an op whose parent path does not exist throws, as the API server's patch would fail.
  return jsonpatch.applyPatch(structuredClone(document), structuredClone(ops) as Operation[], true, false).newDocument as Obj;
}

function schemaErrors(obj: Obj): string {
  try {
    new Pod(obj as never).validate();
    return '';
  } catch (err) {
    return (err as Error).message;
  }
}

function containersOf(p: Obj): Obj[] {
  return [...(p.spec.initContainers ?? []), ...p.spec.containers];
}

describe.each(SHAPES)('injection patch: %s', (_name, before) => {
  const ops = injectionPatch(before as PodShape, OPTIONS);
  const after = apply(before, ops);

  test('the original pod is valid, and the patched pod validates against the Pod schema', () => {
    expect(schemaErrors(before)).toBe('');
    expect(schemaErrors(after)).toBe('');
  });

  test('only adds: every operation is an add, and everything the pod had is still there, unchanged and in order', () => {
    expect(ops.length).toBeGreaterThan(0);
    for (const op of ops) expect(op.op).toBe('add');
    expect(after.metadata).toEqual(before.metadata);
    expect(after.spec.serviceAccountName).toBe(before.spec.serviceAccountName);
    expect(after.spec.volumes.slice(0, (before.spec.volumes ?? []).length)).toEqual(before.spec.volumes ?? []);
    const old = containersOf(before);
    containersOf(after).forEach((ctr, i) => {
      const was = old[i]!;
      expect(ctr.name).toBe(was.name);
      expect(ctr.env.slice(0, (was.env ?? []).length)).toEqual(was.env ?? []);
      expect(ctr.volumeMounts.slice(0, (was.volumeMounts ?? []).length)).toEqual(was.volumeMounts ?? []);
      const { env: _e, volumeMounts: _m, ...rest } = ctr;
      const { env: _e2, volumeMounts: _m2, ...wasRest } = was;
      expect(rest).toEqual(wasRest);
    });
  });

  test('every container and init container has both variables exactly once; the pod’s own values win', () => {
    const old = containersOf(before);
    containersOf(after).forEach((ctr, i) => {
      for (const name of ENV_NAMES) {
        const entries = (ctr.env as Obj[]).filter((e) => e.name === name);
        expect(entries).toHaveLength(1);
        const own = ((old[i]!.env ?? []) as Obj[]).find((e) => e.name === name);
        const injected = name === 'AWS_CONTAINER_CREDENTIALS_FULL_URI' ? CREDENTIALS_FULL_URI : TOKEN_FILE;
        expect(entries[0]).toEqual(own ?? { name, value: injected });
      }
    });
  });

  test('one token volume, and every container mounts something (the token volume unless it had its own) at the token directory', () => {
    const volumes = (after.spec.volumes as Obj[]).filter((v) => v.name === TOKEN_VOLUME);
    expect(volumes).toHaveLength(1);
    const own = ((before.spec.volumes ?? []) as Obj[]).find((v) => v.name === TOKEN_VOLUME);
    expect(volumes[0]).toEqual(
      own ?? { name: TOKEN_VOLUME, projected: { sources: [{ serviceAccountToken: { audience: 'pods.eks.amazonaws.com', expirationSeconds: 86400, path: 'eks-pod-identity-token' } }] } },
    );
    const old = containersOf(before);
    containersOf(after).forEach((ctr, i) => {
      const atDir = (ctr.volumeMounts as Obj[]).filter((m) => m.mountPath === TOKEN_DIR);
      expect(atDir).toHaveLength(1);
      const ownMount = ((old[i]!.volumeMounts ?? []) as Obj[]).find((m) => m.mountPath === TOKEN_DIR);
      expect(atDir[0]).toEqual(ownMount ?? { name: TOKEN_VOLUME, mountPath: TOKEN_DIR, readOnly: true });
    });
    // The token file the env names is in the directory the volume is mounted at.
    expect(TOKEN_FILE.startsWith(`${TOKEN_DIR}/`)).toBe(true);
  });

  test('a second pass adds nothing (reinvocation is a no-op)', () => {
    expect(injectionPatch(after as PodShape, OPTIONS)).toEqual([]);
  });
});

test('a sidecar added by another webhook after the first pass gets the injection on reinvocation, and only it', () => {
  const first = apply(SHAPES[0]![1], injectionPatch(SHAPES[0]![1] as PodShape, OPTIONS));
  first.spec.containers.push(c('istio-proxy', { env: [{ name: 'ISTIO_META', value: '1' }] }));
  const ops = injectionPatch(first as PodShape, OPTIONS);
  expect(ops.map((o) => o.path)).toEqual(['/spec/containers/1/env/-', '/spec/containers/1/env/-', '/spec/containers/1/volumeMounts']);
  const second = apply(first, ops);
  expect(schemaErrors(second)).toBe('');
  expect(injectionPatch(second as PodShape, OPTIONS)).toEqual([]);
});

test('the audience is the configured one', () => {
  const ops = injectionPatch(SHAPES[0]![1] as PodShape, { tokenAudience: 'podiam.example.com' });
  const after = apply(SHAPES[0]![1], ops);
  expect(after.spec.volumes[0].projected.sources[0].serviceAccountToken.audience).toBe('podiam.example.com');
});

describe('who opts in', () => {
  const ns = (labels: Record<string, string> = {}) => ({ labels, annotations: {} });
  const p = (annotations: Record<string, string> = {}, labels: Record<string, string> = {}): PodShape => ({ metadata: { annotations, labels }, spec: { containers: [] } });
  const KEY = OPTIONS.optInKey;

  test.each([
    ['pod annotation true', p({ [KEY]: 'true' }), ns(), false, true],
    ['pod annotation true beats namespace false', p({ [KEY]: 'true' }), ns({ [KEY]: 'false' }), false, true],
    ['pod annotation false beats namespace true', p({ [KEY]: 'false' }), ns({ [KEY]: 'true' }), false, false],
    ['pod label true', p({}, { [KEY]: 'true' }), ns(), false, true],
    ['pod annotation wins over pod label', p({ [KEY]: 'false' }, { [KEY]: 'true' }), ns(), false, false],
    ['namespace label true', p(), ns({ [KEY]: 'true' }), false, true],
    ['namespace label false, all-with-role', p(), ns({ [KEY]: 'false' }), true, false],
    ['nothing said, all-with-role', p(), ns(), true, true],
    ['nothing said', p(), ns(), false, false],
    ['namespace unknown (not found), all-with-role', p(), undefined, true, true],
    ['a value other than true/false says nothing', p(), ns({ [KEY]: 'yes' }), false, false],
  ])('%s', (_n, thePod, theNs, all, expected) => {
    expect(optsIn(thePod, theNs, { ...OPTIONS, injectAllWithRole: all })).toBe(expected);
  });

  test('podChoice and namespaceChoice read true/false/other', () => {
    expect(podChoice(p({ [KEY]: 'True' }), KEY)).toBe('bad');
    expect(podChoice(p(), KEY)).toBeUndefined();
    expect(namespaceChoice(ns({ [KEY]: 'false' }), KEY)).toBe('out');
  });
});

describe('roles and service accounts', () => {
  const KEY = OPTIONS.roleKey;
  test('the pod’s role wins, else the ServiceAccount’s, else none; blank values are none', () => {
    const sa = { labels: {}, annotations: { [KEY]: 'sa-role' } };
    expect(roleOf({ metadata: { annotations: { [KEY]: 'pod-role' } } }, sa, KEY)).toBe('pod-role');
    expect(roleOf({ metadata: { annotations: { [KEY]: '  ' } } }, sa, KEY)).toBe('sa-role');
    expect(roleOf({ metadata: {} }, sa, KEY)).toBe('sa-role');
    expect(roleOf({ metadata: {} }, { labels: {}, annotations: {} }, KEY)).toBeUndefined();
    expect(roleOf({}, undefined, KEY)).toBeUndefined();
  });
  test('a pod without serviceAccountName runs as default', () => {
    expect(serviceAccountOf({ spec: {} })).toBe('default');
    expect(serviceAccountOf({ spec: { serviceAccountName: 'app' } })).toBe('app');
  });
});

test('the schema check itself fails on a malformed pod (so the checks above can fail)', () => {
  expect(schemaErrors(pod({ containers: [c('app', { env: [{ name: 'X', value: 1 }] })] }))).toMatch(/value/);
  expect(schemaErrors(pod({ containers: [c('app', { volumeMounts: [{ name: 'x' }] })] }))).toMatch(/mountPath/);
});
