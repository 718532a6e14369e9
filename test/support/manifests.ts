/**
 * Rendering and validating the manifests without a cluster, for the deploy tests: `kubectl
 * kustomize` renders them; every object is checked against its schema (kubernetes-models and the
 * CRDs' own models) and for fields the API server would reject as unknown.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { ROOT } from './podiam-process.js';

export const MANIFESTS = path.join(ROOT, 'manifests');

// Loosely typed views of rendered YAML: the schema checks below are what make them trustworthy.
export type Obj = Record<string, any>;

export function kustomize(dir: string): Obj[] {
  let out: string;
  try {
    // kubectl kustomize renders locally; an empty KUBECONFIG makes sure no cluster is asked.
    out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', env: { ...process.env, KUBECONFIG: '/dev/null' }, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { code?: string; stderr?: string; message: string };
    if (e.code === 'ENOENT') throw new Error('kubectl is not on PATH: these tests render the manifests with `kubectl kustomize`');
    throw new Error(`kubectl kustomize ${dir} failed: ${e.stderr ?? e.message}`);
  }
  return parseAllDocuments(out).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`kubectl kustomize ${dir}: bad YAML: ${doc.errors[0]!.message}`);
    return doc.toJS() as Obj;
  });
}

/**
 * An operator's own kustomization.yaml, rendered: `lines(rel)` writes it, where `rel(p)` is
 * manifests/<p> relative to it (kustomize takes relative paths only).
 */
export function kustomizeOwn(lines: (rel: (p: string) => string) => readonly string[]): Obj[] {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'podiam-kustomize-'));
  try {
    const rel = (p: string): string => path.relative(dir, path.join(MANIFESTS, p));
    writeFileSync(path.join(dir, 'kustomization.yaml'), [...lines(rel), ''].join('\n'));
    return kustomize(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface Kind {
  /** kubernetes-models class: JSON-schema validation (types, enums, required fields). */
  readonly model: new (data: Obj) => { validate(): void };
  /** @kubernetes/client-node model name: the field list for the unknown-field check. */
  readonly clientModel?: string;
  readonly namespaced: boolean;
}

interface AttributeTypes {
  getAttributeTypeMap(): ReadonlyArray<{ baseName: string; type: string }>;
}

/**
 * Paths of fields the Kubernetes API does not know. kubectl apply validates fields strictly on
 * the server, so a misspelt field fails the operator's apply; the OpenAPI schemas allow extra
 * properties, so this walks the typed field lists of client-node's generated models.
 */
export function unknownFields(value: unknown, type: string, at: string, out: string[] = []): string[] {
  if (value === null || value === undefined) return out;
  const array = /^Array<(.+)>$/.exec(type);
  if (array !== null) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, array[1]!, `${at}[${i}]`, out));
    return out;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map !== null) {
    for (const [k, v] of Object.entries(value as Obj)) unknownFields(v, map[1]!, `${at}.${k}`, out);
    return out;
  }
  const model = (k8s as unknown as Record<string, Partial<AttributeTypes> | undefined>)[type];
  // Primitives, IntOrString and free-form objects have no field list.
  if (typeof model?.getAttributeTypeMap !== 'function' || typeof value !== 'object' || Array.isArray(value)) return out;
  const fields = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value as Obj)) {
    const t = fields.get(k);
    if (t === undefined) out.push(`${at}.${k}`);
    else unknownFields(v, t, `${at}.${k}`, out);
  }
  return out;
}

/** The checks for the kinds a test renders (an object of any other kind fails: add it to `kinds`). */
export function manifestChecks(kinds: Readonly<Record<string, Kind>>) {
  const kindOf = (obj: Obj): Kind => {
    const key = `${obj.apiVersion}/${obj.kind}`;
    const kind = kinds[key];
    if (kind === undefined) throw new Error(`no schema for ${key}: add it to KINDS in this test`);
    return kind;
  };
  /** Schema errors of one object, as text ('' when valid). */
  const schemaErrors = (obj: Obj): string => {
    try {
      new (kindOf(obj).model)(obj).validate();
      return '';
    } catch (err) {
      return (err as Error).message;
    }
  };
  const strictErrors = (obj: Obj): string[] => {
    const clientModel = kindOf(obj).clientModel;
    if (clientModel !== undefined) return unknownFields(obj, clientModel, obj.kind as string);
    // CRDs: at least the metadata is a core type (a CRD's structural schema prunes unknown fields
    // rather than refusing them).
    const extra = Object.keys(obj).filter((k) => !['apiVersion', 'kind', 'metadata', 'spec'].includes(k));
    return [...extra.map((k) => `${obj.kind}.${k}`), ...unknownFields(obj.metadata, 'V1ObjectMeta', `${obj.kind}.metadata`)];
  };
  return { kindOf, schemaErrors, strictErrors };
}
