/**
 * Single reads of Namespaces and ServiceAccounts, for `podiam webhook`. One GET per read with a
 * hard deadline (an admission answer must not wait on a slow API server), through
 * @kubernetes/client-node's KubeConfig for auth and TLS only: no generated API client, no
 * informer. Only the labels and annotations leave this module.
 */
import http from 'node:http';
import https from 'node:https';
import { createKubeConfig } from './api.js';

export interface ObjectMetaFacts {
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
}

export interface ObjectReader {
  /** undefined when the object does not exist (404). */
  namespace(name: string, signal: AbortSignal): Promise<ObjectMetaFacts | undefined>;
  serviceAccount(namespace: string, name: string, signal: AbortSignal): Promise<ObjectMetaFacts | undefined>;
}

export interface ReaderConnection {
  readonly kubeconfig: string | undefined;
  readonly apiServer: string | undefined;
  readonly apiToken: string | undefined;
  readonly insecure: boolean;
}

/** The API server refused or failed a read (other than 404). */
export class ReadFailed extends Error {
  constructor(
    readonly path: string,
    readonly statusCode: number | undefined,
    message: string,
  ) {
    super(message);
  }
}


/** Names in a URL path: Kubernetes names are DNS labels/subdomains, but never trust the input. */
const seg = (s: string): string => encodeURIComponent(s);

export function createObjectReader(connection: ReaderConnection): ObjectReader {
  const kc = createKubeConfig(connection);
  const server = kc.getCurrentCluster()?.server;
  if (server === undefined) throw new Error('no Kubernetes cluster in the kubeconfig');
  const base = new URL(server);
  const client = base.protocol === 'http:' ? http : https;
  // Keep-alive: the webhook reads on every admission; a TLS handshake each time would cost more than the GET.
  const agent = new client.Agent({ keepAlive: true, maxSockets: 16 });

  const get = async (path: string, signal: AbortSignal): Promise<ObjectMetaFacts | undefined> => {
    const options: https.RequestOptions = { method: 'GET', headers: { Accept: 'application/json' } };
    // Auth headers, client certificates and CA, re-applied per request (tokens rotate).
    await kc.applyToHTTPSOptions(options);
    const url = new URL(base.pathname.replace(/\/$/, '') + path, base);
    return new Promise((resolve, reject) => {
      const req = client.request(url, { ...options, agent, signal }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > 1 << 20) req.destroy(new ReadFailed(path, res.statusCode, 'response larger than 1 MiB'));
          else chunks.push(c);
        });
        res.on('error', reject);
        res.on('end', () => {
          if (res.statusCode === 404) return resolve(undefined);
          if (res.statusCode !== 200) return reject(new ReadFailed(path, res.statusCode, `GET ${path}: HTTP ${res.statusCode}`));
          try {
            const obj = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { metadata?: { labels?: unknown; annotations?: unknown } };
            resolve({ labels: stringMap(obj.metadata?.labels), annotations: stringMap(obj.metadata?.annotations) });
          } catch {
            reject(new ReadFailed(path, res.statusCode, `GET ${path}: response is not JSON`));
          }
        });
      });
      req.on('error', reject);
      req.end();
    });
  };

  return {
    namespace: (name, signal) => get(`/api/v1/namespaces/${seg(name)}`, signal),
    serviceAccount: (namespace, name, signal) => get(`/api/v1/namespaces/${seg(namespace)}/serviceaccounts/${seg(name)}`, signal),
  };
}

function stringMap(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (value === null || typeof value !== 'object') return out;
  for (const [k, v] of Object.entries(value)) if (typeof v === 'string') out[k] = v;
  return out;
}
