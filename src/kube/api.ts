/**
 * The few Kubernetes API requests podiam makes itself (list pods and namespaces, create Events,
 * patch its node's start-up taint),
 * authenticated by KubeConfig exactly as the generated clients would be: token or token file,
 * client certificate, exec/OIDC plugin, CA and TLS server name, proxy (applyToHTTPSOptions).
 *
 * Not CoreV1Api: the generated client brings the whole generated API and its models (thousands of
 * modules, tens of MB on every node) for three calls whose bodies podiam reads as plain JSON.
 * KubeConfig, Watch and ListWatch are imported from their own modules for the same reason: the
 * package's index loads everything (see scripts/build.mjs for what the bundle keeps).
 */
import http from 'node:http';
import https from 'node:https';
import { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import type { Config } from '../config.js';

/** A request that did not get a 2xx; `statusCode` as the informer (ListWatch) reads it. */
export class KubeApiError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    /** The Status reason the API server gave (e.g. "Expired", "Forbidden"), when it gave one. */
    readonly reason?: string,
  ) {
    super(message);
    this.name = 'KubeApiError';
  }
}

export type Query = Readonly<Record<string, string | number | boolean | undefined>>;

export interface KubeApi {
  get<T>(path: string, query?: Query): Promise<T>;
  post<T>(path: string, body: unknown): Promise<T>;
  /** A JSON merge patch (RFC 7386), e.g. of a custom resource's status subresource. */
  mergePatch<T>(path: string, body: unknown): Promise<T>;
  /** `contentType`: application/json-patch+json, merge-patch+json or strategic-merge-patch+json. */
  patch<T>(path: string, body: unknown, contentType: string): Promise<T>;
}

/** Largest response body read (a 500-pod list page of realistic pods is about 3 MB). */
const MAX_BODY_BYTES = 64 * 1024 * 1024;

export function createKubeApi(kc: KubeConfig, options: { timeoutMs?: number } = {}): KubeApi {
  const timeoutMs = options.timeoutMs ?? 30_000;

  const request = async <T>(method: 'GET' | 'POST' | 'PATCH', path: string, query: Query | undefined, body: unknown, contentType = 'application/json'): Promise<T> => {
    const cluster = kc.getCurrentCluster();
    if (cluster === null) throw new Error('no current cluster in the kubeconfig');
    const url = new URL(cluster.server.replace(/\/+$/, '') + path);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const opts: https.RequestOptions = { method, headers: { Accept: 'application/json', ...(payload ? { 'Content-Type': contentType, 'Content-Length': payload.length } : {}) } };
    // Adds the Authorization header (running an exec plugin if the user has one), client
    // certificate, CA, skip-verify and the agent (proxy aware); throws if the auth cannot be had.
    await kc.applyToHTTPSOptions(opts);
    const transport = url.protocol === 'http:' ? http : https;
    return new Promise<T>((resolve, reject) => {
      const req = transport.request(url, { ...opts, timeout: timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_BODY_BYTES) req.destroy(new Error(`response from ${path} larger than ${MAX_BODY_BYTES} bytes`));
          else chunks.push(c);
        });
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          let parsed: unknown;
          try {
            parsed = text === '' ? undefined : JSON.parse(text);
          } catch {
            parsed = undefined;
          }
          if (status >= 200 && status < 300) {
            if (parsed === undefined) reject(new KubeApiError(status, `${method} ${path}: the API server's answer is not JSON`));
            else resolve(parsed as T);
            return;
          }
          const s = (parsed ?? {}) as { message?: unknown; reason?: unknown };
          const message = typeof s.message === 'string' ? s.message : http.STATUS_CODES[status] ?? 'error';
          reject(new KubeApiError(status, `${method} ${path}: ${status} ${message}`, typeof s.reason === 'string' ? s.reason : undefined));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer from the API server within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  };

  return {
    get: <T>(path: string, query?: Query) => request<T>('GET', path, query, undefined),
    post: <T>(path: string, body: unknown) => request<T>('POST', path, undefined, body),
    mergePatch: <T>(path: string, body: unknown) => request<T>('PATCH', path, undefined, body, 'application/merge-patch+json'),
    patch: <T>(path: string, body: unknown, contentType: string) => request<T>('PATCH', path, undefined, body, contentType),
  };
}

/** How to reach the API server: the flags the agent and the webhook share. */
export type KubeConnection = Pick<Config, 'kubeconfig' | 'apiServer' | 'apiToken' | 'insecure'>;

/** --kubeconfig, else --api-server (with --api-token), else in-cluster; --insecure skips TLS verification. */
export function createKubeConfig(config: KubeConnection): KubeConfig {
  const kc = new KubeConfig();
  if (config.kubeconfig !== undefined) {
    kc.loadFromFile(config.kubeconfig);
  } else if (config.apiServer !== undefined) {
    kc.loadFromOptions({
      clusters: [{ name: 'podiam', server: config.apiServer, skipTLSVerify: config.insecure }],
      users: [config.apiToken !== undefined ? { name: 'podiam', token: config.apiToken } : { name: 'podiam' }],
      contexts: [{ name: 'podiam', cluster: 'podiam', user: 'podiam' }],
      currentContext: 'podiam',
    });
  } else {
    kc.loadFromCluster();
  }
  if (config.insecure) {
    const cluster = kc.getCurrentCluster();
    if (cluster !== null && !cluster.skipTLSVerify) {
      kc.clusters = kc.clusters.map((c) => (c.name === cluster.name ? { ...c, skipTLSVerify: true } : c));
    }
  }
  return kc;
}
