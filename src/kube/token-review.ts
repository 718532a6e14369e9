/**
 * TokenReview (authentication.k8s.io/v1): the API server says whether a ServiceAccount token is
 * valid for an audience and, for a pod-bound token, which pod it is bound to. The bound pod must
 * still exist with that uid, so a deleted pod's token stops validating.
 */
import type { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import { createKubeApi } from './api.js';

export type ReviewOutcome =
  | { readonly authenticated: true; readonly username: string; readonly podName: string | undefined; readonly podUid: string | undefined; readonly audiences: readonly string[] }
  | { readonly authenticated: false; readonly error: string };

export type TokenReviewer = (token: string, audiences: readonly string[]) => Promise<ReviewOutcome>;

interface TokenReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; extra?: Record<string, string[]> };
}

/** Throws when the API server cannot answer (network, 5xx, 403 on tokenreviews create). */
export function createTokenReviewer(kc: KubeConfig, timeoutMs = 5000): TokenReviewer {
  const api = createKubeApi(kc, { timeoutMs });
  return async (token, audiences) => {
    // A non-2xx (403 on tokenreviews create, 5xx) throws KubeApiError with the API server's message.
    const review = await api.post<{ status?: TokenReviewStatus }>('/apis/authentication.k8s.io/v1/tokenreviews', { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences } });
    const status = review.status ?? {};
    if (status.authenticated !== true) return { authenticated: false, error: (status.error ?? 'not authenticated').slice(0, 300) };
    const extra = status.user?.extra ?? {};
    return {
      authenticated: true,
      username: status.user?.username ?? '',
      podName: extra['authentication.kubernetes.io/pod-name']?.[0],
      podUid: extra['authentication.kubernetes.io/pod-uid']?.[0],
      audiences: status.audiences ?? [],
    };
  };
}
