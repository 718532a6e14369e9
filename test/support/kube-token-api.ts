/**
 * The token side of the Kubernetes test API server (registered by kube-api-server.ts):
 *
 *  - TokenRequest: `POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token` (201). Bound
 *    tokens as kube-apiserver issues them: RS256 JWTs signed with a real RSA key, header `kid`
 *    (base64url SHA-256 of the public key's DER), claims `aud` (list), `exp`, `iat`, `nbf`, `iss`,
 *    `jti`, `sub` = `system:serviceaccount:<ns>:<sa>`, and `kubernetes.io` with `namespace`,
 *    `serviceaccount` {name, uid} and, for a Pod `boundObjectRef`, `pod` {name, uid} (and
 *    `node` when the pod is scheduled). Refusals as the real server: unknown ServiceAccount 404,
 *    bound pod missing 404, uid mismatch 409, pod of another ServiceAccount 400,
 *    `expirationSeconds` < 600 400.
 *  - TokenReview: `POST /apis/authentication.k8s.io/v1/tokenreviews` (201) checks the
 *    signature, `nbf`/`exp`, the audiences (the intersection of `spec.audiences` and the token's
 *    `aud` must not be empty; with no `spec.audiences`, the API server's own), that the
 *    ServiceAccount still exists with that uid and that the bound pod still exists with that uid
 *    (a pod deleted gracefully more than 60 s ago no longer validates, as in kube-apiserver).
 *    `status.user` carries username, uid, groups and `extra` with
 *    `authentication.kubernetes.io/pod-name`, `pod-uid` and `credential-id`; `status.audiences`.
 *    A failed review is `authenticated: false` with an `error`, as the real server answers.
 *  - OIDC discovery: `/.well-known/openid-configuration` (`application/json`) and
 *    `/openid/v1/jwks` (`application/jwk-set+json`), as kube-apiserver serves them: every public
 *    key it verifies with (`--service-account-key-file` may list several), each
 *    `{use: "sig", kty, kid, alg, n, e}`; tokens are signed with the newest
 *    (`--service-account-signing-key-file`).
 *
 * Test controls: `reviews` (count of TokenReviews served), `jwksFetches` (GETs of the key set),
 * `issue()` (a token without HTTP), `sign()` (any claims with this server's key), `forgeKey()`
 * (a key the server does not know), `rotateKey()` (sign with a new key from now on, the old one
 * still published unless retired), `setJwksDown()` (the key set answers 503).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, sign as rsaSign, verify as rsaVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { KubeApiServer, KubeObject, StatusObject } from './kube-api-server.js';
import { statusObject } from './kube-api-server.js';

export const DEFAULT_ISSUER = 'https://kubernetes.default.svc.cluster.local';

export interface BoundTokenClaims {
  aud: string[];
  exp: number;
  iat: number;
  nbf: number;
  iss: string;
  jti: string;
  sub: string;
  'kubernetes.io': {
    namespace: string;
    node?: { name: string; uid: string };
    pod?: { name: string; uid: string };
    serviceaccount: { name: string; uid: string };
  };
}

export interface TokenIssue {
  namespace: string;
  serviceAccount: string;
  pod?: string;
  audiences?: string[];
  expirationSeconds?: number;
  /** Override the pod uid written in the token (to test uid mismatch). */
  podUid?: string;
  /** Issue-time shift in seconds (negative: issued in the past, e.g. to make an expired token). */
  issuedAtOffsetSeconds?: number;
}

export interface TokenApiAnswer {
  code: number;
  body: unknown;
  /** Default application/json. */
  contentType?: string;
}

interface SigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  kid: string;
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

class ApiError extends Error {
  constructor(readonly status: StatusObject) {
    super(status.message);
  }
}

export class KubeTokenApi {
  /** TokenReviews answered so far (authenticated or not). */
  reviews = 0;
  /** GETs of /openid/v1/jwks answered so far (failed ones included). */
  jwksFetches = 0;
  private jwksDown = false;
  readonly issuer = DEFAULT_ISSUER;
  /** The API server's own audience (used when a TokenRequest or TokenReview names none). */
  readonly apiAudiences = [DEFAULT_ISSUER];

  /** Published keys, the signing one first; generated on first use (RSA key generation costs tens of ms). */
  private keys: SigningKey[] = [];

  constructor(private readonly server: KubeApiServer) {}

  /** Answers a token path, or undefined when the path is not one of them. */
  handle(method: string, parts: readonly string[], body: string): TokenApiAnswer | undefined {
    try {
      const path = parts.join('/');
      if (method === 'GET' && path === '.well-known/openid-configuration') {
        return { code: 200, body: { issuer: this.issuer, jwks_uri: `${this.server.url}/openid/v1/jwks`, response_types_supported: ['id_token'], subject_types_supported: ['public'], id_token_signing_alg_values_supported: ['RS256'] } };
      }
      if (method === 'GET' && path === 'openid/v1/jwks') {
        this.jwksFetches += 1;
        if (this.jwksDown) return { code: 503, body: statusObject(503, 'the server is currently unable to handle the request', 'ServiceUnavailable') };
        this.keyPair();
        return { code: 200, body: { keys: this.keys.map((k) => jwk(k)) }, contentType: 'application/jwk-set+json' };
      }
      if (method === 'POST' && parts.length === 7 && parts[0] === 'api' && parts[1] === 'v1' && parts[2] === 'namespaces' && parts[4] === 'serviceaccounts' && parts[6] === 'token') {
        return { code: 201, body: this.tokenRequest(parts[3]!, parts[5]!, parse(body)) };
      }
      if (method === 'POST' && path === 'apis/authentication.k8s.io/v1/tokenreviews') {
        return { code: 201, body: this.tokenReview(parse(body)) };
      }
      return undefined;
    } catch (err) {
      if (err instanceof ApiError) return { code: err.status.code, body: err.status };
      throw err;
    }
  }

  /** A bound token, as TokenRequest issues it (throws the API's refusal as an Error). */
  issue(req: TokenIssue): string {
    const sa = this.server.getServiceAccount(req.namespace, req.serviceAccount);
    if (sa === undefined) throw new ApiError(statusObject(404, `serviceaccounts "${req.serviceAccount}" not found`, 'NotFound', { name: req.serviceAccount, kind: 'serviceaccounts' }));
    const expirationSeconds = req.expirationSeconds ?? 3600;
    if (expirationSeconds < 600) throw new ApiError(statusObject(400, 'TokenRequest.authentication.k8s.io "' + req.serviceAccount + '" is invalid: spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes', 'BadRequest'));
    const now = Math.floor(Date.now() / 1000) + (req.issuedAtOffsetSeconds ?? 0);
    const claims: BoundTokenClaims = {
      aud: req.audiences !== undefined && req.audiences.length > 0 ? req.audiences : this.apiAudiences,
      exp: now + expirationSeconds,
      iat: now,
      nbf: now,
      iss: this.issuer,
      jti: randomUUID(),
      sub: `system:serviceaccount:${req.namespace}:${req.serviceAccount}`,
      'kubernetes.io': { namespace: req.namespace, serviceaccount: { name: req.serviceAccount, uid: sa.metadata.uid! } },
    };
    if (req.pod !== undefined) {
      const pod = this.server.getPod(req.namespace, req.pod);
      if (pod === undefined) throw new ApiError(statusObject(404, `pods "${req.pod}" not found`, 'NotFound', { name: req.pod, kind: 'pods' }));
      if (req.podUid !== undefined && req.podUid !== pod.metadata.uid) {
        throw new ApiError(statusObject(409, `Operation cannot be fulfilled on Pod "${req.pod}": the UID in the bound object reference (${req.podUid}) does not match the UID in record. The object might have been deleted and then recreated`, 'Conflict'));
      }
      const podSa = (pod.spec?.['serviceAccountName'] as string | undefined) ?? 'default';
      if (podSa !== req.serviceAccount) throw new ApiError(statusObject(400, `cannot bind token for serviceaccount "${req.serviceAccount}" to pod running with different serviceaccount name.`, 'BadRequest'));
      claims['kubernetes.io'].pod = { name: req.pod, uid: pod.metadata.uid! };
      const nodeName = pod.spec?.['nodeName'];
      if (typeof nodeName === 'string' && nodeName !== '') claims['kubernetes.io'].node = { name: nodeName, uid: createHash('sha256').update(nodeName).digest('hex').slice(0, 36) };
    }
    return this.sign(claims);
  }

  /** Any claims, signed with this server's key (to test what validation does with them). */
  sign(claims: object, key?: KeyObject): string {
    const keys = this.keyPair();
    const header = { alg: 'RS256', kid: keys.kid };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    return `${input}.${b64url(rsaSign('sha256', Buffer.from(input), key ?? keys.privateKey))}`;
  }

  /** A private key this server does not trust (a forged signature). */
  forgeKey(): KeyObject {
    return generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  }

  /**
   * Key rotation: tokens are signed with a new key (new `kid`) from now on. The old key stays
   * published and valid (kube-apiserver given both key files) unless `retireOld`, when tokens it
   * signed stop validating. Returns the new kid.
   */
  rotateKey(opts: { retireOld?: boolean } = {}): string {
    this.keyPair();
    const fresh = newKey();
    this.keys = opts.retireOld ? [fresh] : [fresh, ...this.keys];
    return fresh.kid;
  }

  /** The kid tokens are signed with now. */
  signingKid(): string {
    return this.keyPair().kid;
  }

  /** While down, GET /openid/v1/jwks answers 503 (TokenRequest and TokenReview still work). */
  setJwksDown(down: boolean): void {
    this.jwksDown = down;
  }

  private tokenRequest(namespace: string, serviceAccount: string, body: Record<string, unknown>): unknown {
    const spec = (body['spec'] ?? {}) as { audiences?: string[]; expirationSeconds?: number; boundObjectRef?: { kind?: string; apiVersion?: string; name?: string; uid?: string } };
    const ref = spec.boundObjectRef;
    if (ref !== undefined && ref.kind !== 'Pod') throw new ApiError(statusObject(400, `cannot bind token to object of type ${String(ref.kind)}`, 'BadRequest'));
    const expirationSeconds = spec.expirationSeconds ?? 3600;
    const token = this.issue({ namespace, serviceAccount, pod: ref?.name, podUid: ref?.uid, audiences: spec.audiences, expirationSeconds });
    const claims = decode(token)!;
    return {
      kind: 'TokenRequest',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { name: serviceAccount, namespace, creationTimestamp: null },
      spec: { audiences: claims.aud, expirationSeconds, boundObjectRef: ref ?? null },
      status: { token, expirationTimestamp: new Date(claims.exp * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z') },
    };
  }

  private tokenReview(body: Record<string, unknown>): unknown {
    this.reviews += 1;
    const spec = (body['spec'] ?? {}) as { token?: string; audiences?: string[] };
    const wanted = spec.audiences !== undefined && spec.audiences.length > 0 ? spec.audiences : this.apiAudiences;
    const review = (status: Record<string, unknown>) => ({ kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1', metadata: { creationTimestamp: null }, spec, status });
    const refuse = (error: string) => review({ user: {}, error });
    if (typeof spec.token !== 'string' || spec.token === '') throw new ApiError(statusObject(422, 'TokenReview.authentication.k8s.io "" is invalid: spec.token: Required value', 'Invalid'));
    const claims = this.verify(spec.token);
    if (claims === undefined) return refuse('[invalid bearer token, square/go-jose: error in cryptographic primitive]');
    const now = Date.now() / 1000;
    if (claims.iss !== this.issuer) return refuse('[invalid bearer token, token issuer not recognized]');
    if (typeof claims.nbf === 'number' && now < claims.nbf) return refuse('[invalid bearer token, square/go-jose/jwt: validation failed, token not valid yet (nbf)]');
    if (!(typeof claims.exp === 'number' && now < claims.exp)) return refuse('[invalid bearer token, service account token has expired]');
    const audiences = wanted.filter((a) => Array.isArray(claims.aud) && claims.aud.includes(a));
    if (audiences.length === 0) return refuse('[invalid bearer token, token audiences ["' + (claims.aud ?? []).join('","') + '"] is invalid for the target audiences ["' + wanted.join('","') + '"]]');
    const k = claims['kubernetes.io'];
    if (k === undefined) return refuse('[invalid bearer token, service account token is not a bound token]');
    const sa = this.server.getServiceAccount(k.namespace, k.serviceaccount.name);
    if (sa === undefined) return refuse(`[invalid bearer token, serviceaccounts "${k.serviceaccount.name}" not found]`);
    if (sa.metadata.uid !== k.serviceaccount.uid) return refuse(`[invalid bearer token, service account UID (${k.serviceaccount.uid}) does not match claim (${sa.metadata.uid})]`);
    if (k.pod !== undefined) {
      const pod: KubeObject | undefined = this.server.getPod(k.namespace, k.pod.name);
      if (pod === undefined) return refuse(`[invalid bearer token, pods "${k.pod.name}" not found]`);
      if (pod.metadata.uid !== k.pod.uid) return refuse(`[invalid bearer token, pod UID (${k.pod.uid}) does not match claim (${pod.metadata.uid})]`);
      const deleted = pod.metadata.deletionTimestamp === undefined ? undefined : Date.parse(pod.metadata.deletionTimestamp);
      if (deleted !== undefined && deleted < Date.now() - 60_000) return refuse('[invalid bearer token, token has been invalidated]');
    }
    const extra: Record<string, string[]> = { 'authentication.kubernetes.io/credential-id': [`JTI=${claims.jti}`] };
    if (k.pod !== undefined) {
      extra['authentication.kubernetes.io/pod-name'] = [k.pod.name];
      extra['authentication.kubernetes.io/pod-uid'] = [k.pod.uid];
    }
    if (k.node !== undefined) {
      extra['authentication.kubernetes.io/node-name'] = [k.node.name];
      extra['authentication.kubernetes.io/node-uid'] = [k.node.uid];
    }
    return review({
      authenticated: true,
      user: { username: claims.sub, uid: k.serviceaccount.uid, groups: ['system:serviceaccounts', `system:serviceaccounts:${k.namespace}`, 'system:authenticated'], extra },
      audiences,
    });
  }

  /** The claims of a token signed with this server's key, else undefined. */
  private verify(token: string): Partial<BoundTokenClaims> | undefined {
    const parts = token.split('.');
    if (parts.length !== 3) return undefined;
    try {
      const header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString()) as { alg?: string; kid?: string };
      if (header.alg !== 'RS256') return undefined;
      this.keyPair();
      const key = this.keys.find((k) => k.kid === header.kid);
      if (key === undefined) return undefined;
      const ok = rsaVerify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), key.publicKey, Buffer.from(parts[2]!, 'base64url'));
      return ok ? (JSON.parse(Buffer.from(parts[1]!, 'base64url').toString()) as Partial<BoundTokenClaims>) : undefined;
    } catch {
      return undefined;
    }
  }

  /** The signing key (the first published), generated on first use. */
  private keyPair(): SigningKey {
    if (this.keys.length === 0) this.keys = [newKey()];
    return this.keys[0]!;
  }
}

/** An RSA key with kube-apiserver's kid: base64url SHA-256 of the public key's DER. */
function newKey(): SigningKey {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pk = createPrivateKey(privateKey.export({ format: 'pem', type: 'pkcs8' }));
  const publicKey = createPublicKey(pk);
  const kid = createHash('sha256').update(publicKey.export({ format: 'der', type: 'spki' })).digest('base64url');
  return { privateKey: pk, publicKey, kid };
}

/** As kube-apiserver publishes a key: {use, kty, kid, alg, n, e}. */
function jwk(key: SigningKey): Record<string, unknown> {
  const { kty, n, e } = key.publicKey.export({ format: 'jwk' });
  return { use: 'sig', kty, kid: key.kid, alg: 'RS256', n, e };
}

/** The claims of a JWT, unverified (for tests reading what was issued). */
export function decode(token: string): BoundTokenClaims | undefined {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as BoundTokenClaims;
  } catch {
    return undefined;
  }
}

function parse(body: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(body);
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new ApiError(statusObject(400, 'request body must be a JSON object', 'BadRequest'));
}
