/**
 * The PodIdentityAssociation custom resource on the Kubernetes test API server (registered by
 * kube-api-server.ts), as kube-apiserver serves a CRD with a structural schema and a status
 * subresource (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/):
 *
 *  - `GET /apis/podiam.io/v1alpha1/podidentityassociations` (list, chunked; `?watch=1`: the
 *    store's watch, with history, selectors and bookmarks) and `.../{name}`; 404 for all of them
 *    while the CRD is not installed (`installed = false`), as on a cluster without it.
 *  - `POST` (201; 409 on a taken name), `PUT .../{name}` and `DELETE .../{name}`. The main
 *    resource ignores `status`; `metadata.generation` is 1 on create and grows when `spec` changes.
 *  - `PUT`/`PATCH .../{name}/status` (merge patch): only `status` changes, generation does not.
 *  - Validation from the CRD manifest itself (manifests/base/podidentityassociation-crd.yaml):
 *    types, `required`, `pattern`, `minLength`/`maxLength`, `enum`, defaults, and unknown fields
 *    pruned, as the real server does. A violation is a 422 Invalid naming the field. The
 *    `x-kubernetes-validations` CEL rules are NOT evaluated here (test/deploy checks they exist).
 *
 * Test controls: `installed`, `forbidden` (403 for everything, as without RBAC), `create()`, `update()`, `remove()`, `get()`, `statusWrites`.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { ServerResponse } from 'node:http';
import { parse } from 'yaml';
import type { KubeApiServer, KubeObject, KubeObjectInput } from './kube-api-server.js';
import { ROOT } from './podiam-process.js';

export const CRD_FILE = path.join(ROOT, 'manifests/base/podidentityassociation-crd.yaml');
const GROUP = 'podiam.io';
const VERSION = 'v1alpha1';
const PLURAL = 'podidentityassociations';

type Schema = Record<string, any>;

/** The CRD's openAPIV3Schema, read from the shipped manifest. */
export function associationSchema(): Schema {
  const crd = parse(readFileSync(CRD_FILE, 'utf8')) as Schema;
  return crd.spec.versions.find((v: Schema) => v.name === VERSION).schema.openAPIV3Schema as Schema;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Validates `value` at `at` against a structural schema; returns the pruned, defaulted value.
 * Errors are pushed as the API server words them: `spec.roleArn: Invalid value: "x": should match '^arn…'`.
 */
export function validateAgainst(schema: Schema, value: unknown, at: string, errors: string[]): unknown {
  const type = schema['type'];
  const bad = (why: string): unknown => {
    errors.push(`${at}: Invalid value: ${JSON.stringify(value)}: ${why}`);
    return value;
  };
  if (type === 'object') {
    if (!isRecord(value)) return bad('must be of type object');
    const out: Record<string, unknown> = {};
    const props = (schema['properties'] ?? {}) as Record<string, Schema>;
    for (const [k, sub] of Object.entries(props)) {
      if (value[k] !== undefined) out[k] = validateAgainst(sub, value[k], at === '' ? k : `${at}.${k}`, errors);
      else if (sub['default'] !== undefined) out[k] = sub['default'];
    }
    for (const req of (schema['required'] ?? []) as string[]) if (out[req] === undefined) errors.push(`${at === '' ? req : `${at}.${req}`}: Required value`);
    return out; // unknown fields pruned
  }
  if (type === 'array') {
    if (!Array.isArray(value)) return bad('must be of type array');
    return value.map((item, i) => validateAgainst(schema['items'] as Schema, item, `${at}[${i}]`, errors));
  }
  if (type === 'string') {
    if (typeof value !== 'string') return bad('must be of type string');
    if (schema['maxLength'] !== undefined && value.length > schema['maxLength']) return bad(`may not be more than ${schema['maxLength']} bytes`);
    if (schema['minLength'] !== undefined && value.length < schema['minLength']) return bad(`should be at least ${schema['minLength']} chars long`);
    if (schema['pattern'] !== undefined && !new RegExp(schema['pattern'] as string, 'u').test(value)) return bad(`should match '${schema['pattern']}'`);
    if (schema['enum'] !== undefined && !(schema['enum'] as string[]).includes(value)) return bad(`supported values: ${(schema['enum'] as string[]).map((e) => JSON.stringify(e)).join(', ')}`);
    return value;
  }
  if (type === 'boolean') return typeof value === 'boolean' ? value : bad('must be of type boolean');
  if (type === 'integer') return Number.isInteger(value) ? value : bad('must be of type integer');
  return value;
}

export class KubeAssociationApi {
  /** false: the CRD is not installed, every path of the group is a 404 (as on a cluster without it). */
  installed = true;
  /** true: every request of the group is a 403 Forbidden (a ClusterRole without the resource). */
  forbidden = false;
  /** Status writes received (PUT or PATCH of the status subresource), in order. */
  readonly statusWrites: Array<{ name: string; body: unknown }> = [];
  private readonly schema = associationSchema();

  constructor(private readonly server: KubeApiServer) {}

  // ---------------------------------------------------------------- test controls

  create(input: KubeObjectInput): KubeObject {
    return this.createValid(input);
  }

  get(name: string): KubeObject | undefined {
    return this.server.store.get(PLURAL, name);
  }

  /** Changes the spec (as a PUT would); status cannot be changed this way. */
  update(name: string, mutate: (spec: Record<string, unknown>) => void): KubeObject {
    const current = this.get(name);
    if (current === undefined) throw new Error(`${PLURAL} "${name}" not found`);
    const spec = structuredClone(current.spec ?? {});
    mutate(spec);
    return this.replace(name, { ...current, spec });
  }

  remove(name: string): KubeObject {
    return this.server.store.remove(PLURAL, name);
  }

  // ---------------------------------------------------------------- HTTP

  /** Answers the request if it is this group's; false otherwise (the server goes on). */
  handle(res: ServerResponse, method: string, parts: string[], query: Record<string, string>, watch: boolean, contentType: string | undefined, body: string): boolean {
    if (parts[0] !== 'apis' || parts[1] !== GROUP || parts[2] !== VERSION || parts[3] !== PLURAL) return false;
    const { store } = this.server;
    if (this.forbidden) {
      store.send(res, 403, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `${PLURAL}.${GROUP} is forbidden: User "system:serviceaccount:kube-system:podiam" cannot list resource "${PLURAL}" in API group "${GROUP}" at the cluster scope`, reason: 'Forbidden', details: { group: GROUP, kind: PLURAL }, code: 403 });
      return true;
    }
    if (!this.installed) {
      store.send(res, 404, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'the server could not find the requested resource', reason: 'NotFound', details: {}, code: 404 });
      return true;
    }
    const name = parts[4];
    const sub = parts[5];
    if (name === undefined && method === 'GET') store.collection(res, PLURAL, query, watch);
    else if (name === undefined && method === 'POST') store.send(res, 201, this.createValid(parseJson(body, store)));
    else if (name !== undefined && sub === undefined && method === 'GET') store.send(res, ...this.found(name));
    else if (name !== undefined && sub === undefined && method === 'PUT') store.send(res, 200, this.replace(name, parseJson(body, store) as KubeObject));
    else if (name !== undefined && sub === undefined && method === 'DELETE') {
      this.found(name);
      store.send(res, 200, store.remove(PLURAL, name));
    } else if (name !== undefined && sub === 'status' && (method === 'PATCH' || method === 'PUT')) store.send(res, 200, this.writeStatus(name, method, contentType, parseJson(body, store)));
    else store.send(res, 405, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `${method} is not supported here`, reason: 'MethodNotAllowed', code: 405 });
    return true;
  }

  private found(name: string): [number, KubeObject] {
    const obj = this.get(name);
    if (obj === undefined) throw this.server.store.error(404, `${PLURAL}.${GROUP} "${name}" not found`, 'NotFound', { name, group: GROUP, kind: PLURAL });
    return [200, obj];
  }

  private validate(input: Record<string, unknown>, name: string): { spec: Record<string, unknown> } {
    const errors: string[] = [];
    const out = validateAgainst({ ...this.schema, properties: { spec: this.schema['properties'].spec } }, { spec: input['spec'] }, '', errors) as { spec: Record<string, unknown> };
    if (errors.length > 0) throw this.server.store.error(422, `PodIdentityAssociation.${GROUP} "${name}" is invalid: ${errors.join(', ')}`, 'Invalid', { name, group: GROUP, kind: 'PodIdentityAssociation' });
    return out;
  }

  private createValid(input: KubeObjectInput | unknown): KubeObject {
    if (!isRecord(input) || !isRecord(input['metadata'])) throw this.server.store.error(400, 'request body must be an object with metadata');
    const meta = { ...(input['metadata'] as Record<string, unknown>) };
    const name = typeof meta['name'] === 'string' ? meta['name'] : '';
    if (name === '') throw this.server.store.error(422, 'PodIdentityAssociation "" is invalid: metadata.name: Required value', 'Invalid');
    const { spec } = this.validate(input, name);
    delete meta['uid'];
    delete meta['resourceVersion'];
    delete meta['creationTimestamp'];
    delete meta['namespace'];
    // The status subresource: status is not written through the main resource.
    return this.server.store.create(PLURAL, name, { metadata: { ...meta, generation: 1 }, spec });
  }

  private replace(name: string, input: KubeObject): KubeObject {
    const [, current] = this.found(name);
    const { spec } = this.validate(input as Record<string, unknown>, name);
    return this.server.store.update(PLURAL, name, (obj) => {
      if (JSON.stringify(obj.spec) !== JSON.stringify(spec)) obj.metadata['generation'] = Number(current.metadata['generation'] ?? 1) + 1;
      obj.spec = spec;
      obj.metadata.annotations = input.metadata?.annotations ?? obj.metadata.annotations;
      obj.metadata.labels = input.metadata?.labels ?? obj.metadata.labels;
    });
  }

  private writeStatus(name: string, method: string, contentType: string | undefined, body: unknown): KubeObject {
    const [, current] = this.found(name);
    if (!isRecord(body)) throw this.server.store.error(400, 'request body must be a JSON object');
    const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
    if (method === 'PATCH' && type !== 'application/merge-patch+json') throw this.server.store.error(415, `the body of the request was in an unknown format (${type}); this test server takes application/merge-patch+json`, 'UnsupportedMediaType');
    this.statusWrites.push({ name, body });
    const next = method === 'PUT' ? body['status'] : mergePatch(current.status ?? {}, body['status'] ?? {});
    const errors: string[] = [];
    const status = validateAgainst(this.schema['properties'].status as Schema, next ?? {}, 'status', errors) as Record<string, unknown>;
    if (errors.length > 0) throw this.server.store.error(422, `PodIdentityAssociation.${GROUP} "${name}" is invalid: ${errors.join(', ')}`, 'Invalid');
    return this.server.store.update(PLURAL, name, (obj) => {
      obj.status = status;
    });
  }
}

function parseJson(body: string, store: KubeApiServer['store']): unknown {
  try {
    return JSON.parse(body);
  } catch {
    throw store.error(400, 'request body is not valid JSON');
  }
}

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isRecord(patch)) return structuredClone(patch);
  const out: Record<string, unknown> = isRecord(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}
