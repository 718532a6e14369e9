/**
 * The broker's internal API, version 1, in one place for both ends (src/broker/server.ts answers,
 * broker-client.ts asks). Security-relevant parsing: what an agent sends is only a pod's
 * coordinates (namespace, name, uid) and the caller's proof; the broker decides everything else.
 *
 *   POST /v1/credentials  {"namespace","name","uid","proof":{"kind":"ip"}|{"kind":"token","token":"…"}}
 *     200 {"roleArn","roleName","sessionName","externalId"?,"credentials":{"AccessKeyId","SecretAccessKey","Token","Expiration"},"issuedMs"}
 *   POST /v1/role         {"namespace","name","uid"}
 *     200 {"roleArn","roleName","sessionName","externalId"?}
 *   POST /v1/changes      {"since"?}   (a long poll, held up to 20 s; src/broker/policy-changes.ts)
 *     200 {"now","reset","changes":[{"namespace","serviceAccount"?}]}: policy changes in the
 *     namespaces that have pods on the agent's node, after `since` (the broker's clock)
 *   errors: {"code","message"} with the PodiamError's status (403 refusals and denials, 404 unknown
 *   pod or no role, 503 not ready, 5xx STS).
 */
import { BadRequest } from '../errors.js';

export const CREDENTIALS_PATH = '/v1/credentials';
export const ROLE_PATH = '/v1/role';
export const CHANGES_PATH = '/v1/changes';

export type WireProof = { readonly kind: 'ip' } | { readonly kind: 'token'; readonly token: string };

export interface WirePodRequest {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly proof: WireProof;
}

export interface WireRole {
  readonly roleArn: string;
  readonly roleName: string;
  readonly sessionName: string;
  readonly externalId?: string;
}

export interface WireCredentials extends WireRole {
  readonly credentials: { readonly AccessKeyId: string; readonly SecretAccessKey: string; readonly Token: string; readonly Expiration: string };
  readonly issuedMs: number;
}

const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const UID = /^[A-Za-z0-9-]{1,64}$/;
const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** A request body that must be one JSON object; BadRequest (400) otherwise. */
function jsonObject(text: string): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new BadRequest(400, 'body is not JSON');
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new BadRequest(400, 'body must be a JSON object');
  return raw as Record<string, unknown>;
}

/** An agent's request body; BadRequest (400) for anything else. The token is a JWT of at most 16 KB. */
export function parsePodRequest(text: string, withProof: boolean): WirePodRequest {
  const r = jsonObject(text);
  const str = (k: string, re: RegExp): string => {
    const v = r[k];
    if (typeof v !== 'string' || !re.test(v)) throw new BadRequest(400, `${k} is missing or not a valid Kubernetes ${k}`);
    return v;
  };
  const pod = { namespace: str('namespace', NAME), name: str('name', NAME), uid: str('uid', UID) };
  if (!withProof) return { ...pod, proof: { kind: 'ip' } };
  const p = r['proof'] as Record<string, unknown> | undefined;
  if (p === null || typeof p !== 'object') throw new BadRequest(400, 'proof is missing: {"kind":"ip"} or {"kind":"token","token":"…"}');
  if (p['kind'] === 'ip') return { ...pod, proof: { kind: 'ip' } };
  if (p['kind'] === 'token' && typeof p['token'] === 'string' && p['token'].length <= 16 * 1024 && JWT.test(p['token'])) return { ...pod, proof: { kind: 'token', token: p['token'] } };
  throw new BadRequest(400, 'proof must be {"kind":"ip"} or {"kind":"token","token":"<ServiceAccount token>"}');
}

/** The broker's 200 answer to /v1/credentials, checked field by field; undefined when it is not one. */
export function parseCredentialsAnswer(raw: unknown): WireCredentials | undefined {
  const role = parseRoleAnswer(raw);
  if (role === undefined) return undefined;
  const r = raw as Record<string, unknown>;
  const c = r['credentials'] as Record<string, unknown> | undefined;
  if (c === null || typeof c !== 'object' || typeof r['issuedMs'] !== 'number') return undefined;
  for (const k of ['AccessKeyId', 'SecretAccessKey', 'Token', 'Expiration']) if (typeof c[k] !== 'string' || c[k] === '') return undefined;
  if (Number.isNaN(Date.parse(c['Expiration'] as string))) return undefined;
  return raw as WireCredentials;
}

export function parseRoleAnswer(raw: unknown): WireRole | undefined {
  if (raw === null || typeof raw !== 'object') return undefined;
  const r = raw as Record<string, unknown>;
  if (typeof r['roleArn'] !== 'string' || typeof r['roleName'] !== 'string' || typeof r['sessionName'] !== 'string') return undefined;
  if (r['externalId'] !== undefined && typeof r['externalId'] !== 'string') return undefined;
  return raw as WireRole;
}

/** A namespace's annotations changed (serviceAccount absent), or a ServiceAccount's, or an association of it. */
export interface WireChange {
  readonly namespace: string;
  readonly serviceAccount?: string;
}

export interface WireChanges {
  /** The broker's clock at the answer: the next poll's `since`. */
  readonly now: number;
  /** This replica cannot tell what changed since `since`: ask again about every pod. */
  readonly reset: boolean;
  readonly changes: readonly WireChange[];
}

/** A poll's body: `since` a time in ms, or nothing (the first poll). */
export function parseChangesRequest(text: string): number | undefined {
  const since = jsonObject(text)['since'];
  if (since === undefined) return undefined;
  if (typeof since !== 'number' || !Number.isSafeInteger(since) || since < 0) throw new BadRequest(400, 'since must be a time in ms (the last answer\'s "now")');
  return since;
}

export function parseChangesAnswer(raw: unknown): WireChanges | undefined {
  if (raw === null || typeof raw !== 'object') return undefined;
  const r = raw as Record<string, unknown>;
  if (typeof r['now'] !== 'number' || typeof r['reset'] !== 'boolean' || !Array.isArray(r['changes'])) return undefined;
  for (const c of r['changes'] as unknown[]) {
    if (c === null || typeof c !== 'object') return undefined;
    const ch = c as Record<string, unknown>;
    if (typeof ch['namespace'] !== 'string' || (ch['serviceAccount'] !== undefined && typeof ch['serviceAccount'] !== 'string')) return undefined;
  }
  return raw as WireChanges;
}
