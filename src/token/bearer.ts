/**
 * Security-relevant parsing of the container-credentials Authorization header and of the
 * token's claims. The claims read here are NOT trusted: they only decide, before any API call,
 * whether a token could possibly be valid here (right audience, not expired, bound to a pod of
 * this node). Trust comes from the TokenReview (reviews.ts).
 */
import crypto from 'node:crypto';
import { BadRequest, InvalidToken } from '../errors.js';

/** Projected tokens are ~1 KB; anything much larger is not one. */
const MAX_TOKEN = 16 * 1024;
const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/**
 * The token, from `Authorization: <token>` as the SDKs send it (the file's content, verbatim;
 * botocore and the JS SDK send no scheme). A `Bearer ` prefix is tolerated; surrounding
 * whitespace (a trailing newline in the file) is not part of the token.
 */
export function tokenFromHeader(header: string | string[] | undefined): string {
  if (header === undefined || header === '') throw new BadRequest(400, 'missing Authorization header: send the ServiceAccount token from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE');
  if (typeof header !== 'string') throw new BadRequest(400, 'more than one Authorization header');
  let token = header.trim();
  if (/^bearer\s+/i.test(token)) token = token.replace(/^bearer\s+/i, '');
  if (token.length > MAX_TOKEN) throw new BadRequest(400, `Authorization header longer than ${MAX_TOKEN} bytes`);
  if (!JWT.test(token)) throw new BadRequest(400, 'malformed Authorization header: expected a ServiceAccount token (a JWT)');
  return token;
}

/** crypto.hash (Node ≥ 20.12) is one call instead of a Hash object per request. */
const oneShot = (crypto as { hash?: (algorithm: string, data: string, encoding: 'base64url') => string }).hash;

export function tokenHash(token: string): string {
  return oneShot !== undefined ? oneShot('sha256', token, 'base64url') : crypto.createHash('sha256').update(token).digest('base64url');
}

/** What a bound ServiceAccount token claims (Kubernetes' `kubernetes.io` private claim). */
export interface BoundClaims {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly podName: string;
  readonly podUid: string;
  readonly audiences: readonly string[];
  readonly expMs: number;
}

/** The claims, unverified; InvalidToken when they cannot be those of a pod-bound token for `audience`. */
export function claimsOf(token: string, audience: string, nowMs: number): BoundClaims {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new InvalidToken('its payload is not JSON');
  }
  if (raw === null || typeof raw !== 'object') throw new InvalidToken('its payload is not a JSON object');
  const aud = typeof raw['aud'] === 'string' ? [raw['aud']] : Array.isArray(raw['aud']) ? (raw['aud'] as unknown[]).filter((a): a is string => typeof a === 'string') : [];
  if (!aud.includes(audience)) throw new InvalidToken(`its audience is not ${audience}`);
  const exp = raw['exp'];
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new InvalidToken('it has no expiry');
  if (exp * 1000 <= nowMs) throw new InvalidToken('it has expired');
  const k = raw['kubernetes.io'] as { namespace?: unknown; pod?: { name?: unknown; uid?: unknown }; serviceaccount?: { name?: unknown } } | undefined;
  const str = (v: unknown): v is string => typeof v === 'string' && v !== '' && v.length <= 253;
  if (k === undefined || k === null || !str(k.namespace) || !str(k.pod?.name) || !str(k.pod?.uid) || !str(k.serviceaccount?.name)) {
    throw new InvalidToken('it is not bound to a pod (request it with a projected serviceAccountToken volume)');
  }
  return { namespace: k.namespace, serviceAccount: k.serviceaccount.name, podName: k.pod.name, podUid: k.pod.uid, audiences: aud, expMs: exp * 1000 };
}
