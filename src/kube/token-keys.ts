/**
 * The keys the API server signs ServiceAccount tokens with: `GET /openid/v1/jwks`, the key set of
 * its service-account issuer (KEP-1393, issuer discovery). Read from the API server itself, with
 * podiam's own credentials: the discovery document (`/.well-known/openid-configuration`) names the
 * same set by `jwks_uri`, but that is the issuer's public URL, which a node need not be able to
 * reach, and it says nothing the set does not. Readable by every ServiceAccount through the
 * default `system:service-account-issuer-discovery` binding; podiam's ClusterRole grants it too.
 */
import type { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import { createKubeApi } from './api.js';

export const JWKS_PATH = '/openid/v1/jwks';

/** One JSON Web Key as published, unchecked: src/token/signing-keys.ts decides what it is worth. */
export type PublishedKey = Readonly<Record<string, unknown>>;

export type SigningKeysFetcher = () => Promise<readonly PublishedKey[]>;

/** Throws when the API server cannot answer (network, 5xx, 403) or answers something that is not a key set. */
export function createSigningKeysFetcher(kc: KubeConfig, timeoutMs = 5000): SigningKeysFetcher {
  const api = createKubeApi(kc, { timeoutMs });
  return async () => {
    const set = await api.get<{ keys?: unknown }>(JWKS_PATH);
    if (set === null || typeof set !== 'object' || !Array.isArray(set.keys)) throw new Error(`GET ${JWKS_PATH}: the answer is not a JSON Web Key Set`);
    return set.keys.filter((k): k is PublishedKey => k !== null && typeof k === 'object' && !Array.isArray(k));
  };
}
