/**
 * Security-relevant: the ServiceAccount token's signature, checked here before the API server is
 * asked anything, so only tokens the API server really signed cost a TokenReview. A token with a
 * pod's real claims and a made-up signature (the review's flood) is refused from memory.
 *
 * As the EKS Pod Identity agent does it (internal/validation/token_validator.go): the API server's
 * key set (`/openid/v1/jwks`, src/kube/token-keys.ts) cached by `kid`; an unknown `kid` refetches
 * it, one fetch in flight and at most one per `minRefetchMs`; the token's `alg` must be the key's;
 * a failed fetch keeps the last good set (an API server outage does not forget the keys).
 * A valid signature is not the whole verdict: revocation (pod or ServiceAccount deleted) is the
 * TokenReview's, which follows.
 */
import crypto from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { TokenReviewUnavailable } from '../errors.js';
import type { PublishedKey, SigningKeysFetcher } from '../kube/token-keys.js';

export type SignatureCheck =
  | { readonly valid: true }
  /** `lasting`: the same token will always fail (cache the refusal); otherwise it may pass after a refetch. */
  | { readonly valid: false; readonly reason: string; readonly lasting: boolean };

interface VerifyKey {
  readonly key: KeyObject;
  readonly alg: string;
}

export interface SigningKeysOptions {
  readonly fetch: SigningKeysFetcher;
  readonly now?: () => number;
  /** Fetches caused by unknown `kid`s are at least this far apart (a flood of made-up kids costs one a period). */
  readonly minRefetchMs?: number;
  readonly onFetch?: (outcome: { keys: number } | { error: string }) => void;
}

/** The algorithms Kubernetes signs with (RS256 by default, ES* for EC keys), and their PS cousins. */
const ALGORITHMS: Readonly<Record<string, { hash: string; kty: 'RSA' | 'EC'; crv?: string; pss?: boolean }>> = {
  RS256: { hash: 'sha256', kty: 'RSA' },
  RS384: { hash: 'sha384', kty: 'RSA' },
  RS512: { hash: 'sha512', kty: 'RSA' },
  PS256: { hash: 'sha256', kty: 'RSA', pss: true },
  PS384: { hash: 'sha384', kty: 'RSA', pss: true },
  PS512: { hash: 'sha512', kty: 'RSA', pss: true },
  ES256: { hash: 'sha256', kty: 'EC', crv: 'P-256' },
  ES384: { hash: 'sha384', kty: 'EC', crv: 'P-384' },
  ES512: { hash: 'sha512', kty: 'EC', crv: 'P-521' },
};

export class SigningKeys {
  private keys = new Map<string, VerifyKey>();
  private fetched = false;
  private inflight: Promise<void> | undefined;
  private lastFetchMs = Number.NEGATIVE_INFINITY;
  private lastError: string | undefined;
  private readonly now: () => number;

  constructor(private readonly options: SigningKeysOptions) {
    this.now = options.now ?? Date.now;
  }

  /**
   * The first fetch, in the background: the first token need not wait for it. Never throws.
   * Not caused by an unknown kid, so a good answer does not open the refetch period: a key
   * rotated just after start-up is fetched by its first token, not refused as made up.
   */
  prefetch(): void {
    this.refresh({ byKid: false }).catch(() => undefined);
  }

  size(): number {
    return this.keys.size;
  }

  /**
   * Whether the API server signed this token (a JWT already shaped by tokenFromHeader).
   * Throws TokenReviewUnavailable when that cannot be told: no key set yet, or the refetch an
   * unknown `kid` needs failed (a rotation during an outage is not a forgery).
   */
  async check(token: string): Promise<SignatureCheck> {
    const dot1 = token.indexOf('.');
    const dot2 = token.lastIndexOf('.');
    let header: { alg?: unknown; kid?: unknown };
    try {
      header = JSON.parse(Buffer.from(token.slice(0, dot1), 'base64url').toString('utf8')) as { alg?: unknown; kid?: unknown };
    } catch {
      return { valid: false, reason: 'its header is not JSON', lasting: true };
    }
    if (header === null || typeof header !== 'object') return { valid: false, reason: 'its header is not a JSON object', lasting: true };
    const { alg, kid } = header;
    if (typeof alg !== 'string' || ALGORITHMS[alg] === undefined) return { valid: false, reason: `its alg ${JSON.stringify(alg)} is not one the API server signs with`, lasting: true };
    if (typeof kid !== 'string' || kid === '' || kid.length > 256) return { valid: false, reason: 'its header has no kid', lasting: true };

    let key = this.keys.get(kid);
    if (key === undefined && this.inflight !== undefined) {
      // A fetch is on its way (another token's unknown kid, or the first): its answer is the one to judge by.
      await this.inflight.catch(() => undefined);
      key = this.keys.get(kid);
    }
    if (key === undefined) {
      if (this.fetched && this.now() - this.lastFetchMs < (this.options.minRefetchMs ?? 10_000)) {
        // The last fetch failed: a new key may be out there (a rotation during an outage is not a forgery).
        if (this.lastError !== undefined) throw new TokenReviewUnavailable(`could not read the API server's signing keys: ${this.lastError}`);
        // Just fetched, and the kid is not there: not the API server's (or a rotation this second; the next refetch sees it).
        return { valid: false, reason: 'it is signed with a key the API server does not publish', lasting: false };
      }
      try {
        await this.refresh();
      } catch (err) {
        throw new TokenReviewUnavailable(`could not read the API server's signing keys: ${(err as Error).message}`);
      }
      key = this.keys.get(kid);
      if (key === undefined) return { valid: false, reason: 'it is signed with a key the API server does not publish', lasting: false };
    }
    if (alg !== key.alg) return { valid: false, reason: `its alg ${alg} is not its key's (${key.alg})`, lasting: true };
    const spec = ALGORITHMS[alg]!;
    const signature = Buffer.from(token.slice(dot2 + 1), 'base64url');
    const signed = Buffer.from(token.slice(0, dot2), 'latin1');
    let ok: boolean;
    try {
      ok = crypto.verify(
        spec.hash,
        signed,
        spec.kty === 'EC' ? { key: key.key, dsaEncoding: 'ieee-p1363' } : spec.pss ? { key: key.key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: crypto.constants.RSA_PSS_SALTLEN_DIGEST } : key.key,
        signature,
      );
    } catch {
      ok = false;
    }
    return ok ? { valid: true } : { valid: false, reason: 'its signature is not the API server\'s', lasting: true };
  }

  /** One fetch at a time; a failure keeps the keys there are and rejects (with none at all, the caller cannot check). */
  private refresh({ byKid = true }: { byKid?: boolean } = {}): Promise<void> {
    if (this.inflight !== undefined) return this.inflight;
    if (!this.fetched && this.lastError !== undefined && this.now() - this.lastFetchMs < (this.options.minRefetchMs ?? 10_000)) {
      return Promise.reject(new Error(this.lastError));
    }
    this.lastFetchMs = this.now();
    const flight = this.options.fetch().then(
      (published) => {
        this.keys = usableKeys(published);
        this.fetched = true;
        this.lastError = undefined;
        // Only fetches an unknown kid asked for are rate-limited (a failed one is, whoever asked).
        if (!byKid) this.lastFetchMs = Number.NEGATIVE_INFINITY;
        this.options.onFetch?.({ keys: this.keys.size });
      },
      (err: unknown) => {
        this.lastError = (err as Error).message;
        this.options.onFetch?.({ error: this.lastError });
        // Keep the last good set; without one, every check says why it cannot be made.
        throw err;
      },
    );
    this.inflight = flight;
    const clear = (): void => {
      this.inflight = undefined;
    };
    flight.then(clear, clear);
    return flight;
  }
}

/** The published keys podiam can verify with, by kid: signing keys of a known type, first of a kid wins. */
export function usableKeys(published: readonly PublishedKey[]): Map<string, VerifyKey> {
  const keys = new Map<string, VerifyKey>();
  for (const jwk of published) {
    const kid = jwk['kid'];
    if (typeof kid !== 'string' || kid === '' || keys.has(kid)) continue;
    if (jwk['use'] !== undefined && jwk['use'] !== 'sig') continue;
    const alg = typeof jwk['alg'] === 'string' ? jwk['alg'] : impliedAlg(jwk);
    const spec = alg === undefined ? undefined : ALGORITHMS[alg];
    if (spec === undefined || jwk['kty'] !== spec.kty || (spec.crv !== undefined && jwk['crv'] !== spec.crv)) continue;
    try {
      // Only the public members: a private JWK ("d") must not become a key podiam holds.
      const pub: crypto.JsonWebKey = spec.kty === 'RSA' ? { kty: 'RSA', n: jwk['n'] as string, e: jwk['e'] as string } : { kty: 'EC', crv: jwk['crv'] as string, x: jwk['x'] as string, y: jwk['y'] as string };
      const key = crypto.createPublicKey({ key: pub, format: 'jwk' });
      // RSA under 2048 bits is not a key to trust a credential to (kube-apiserver's are 2048 or more).
      if (spec.kty === 'RSA' && (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) continue;
      keys.set(kid, { key, alg: alg! });
    } catch {
      // Malformed key: skipped; a token signed with it is refused as signed by an unknown key.
    }
  }
  return keys;
}

/** A key without `alg` (the JWK member is optional): the algorithm its type implies. */
function impliedAlg(jwk: PublishedKey): string | undefined {
  if (jwk['kty'] === 'RSA') return 'RS256';
  if (jwk['kty'] === 'EC') return ({ 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' } as Record<string, string>)[jwk['crv'] as string];
  return undefined;
}
