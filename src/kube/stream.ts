/**
 * One streamed GET to the API server (a list page or a watch), authenticated as api.ts's
 * requests are (KubeConfig.applyToHTTPSOptions), with the Accept header the caller chooses: the
 * metadata-only views (`as=PartialObjectMetadataList` / `as=PartialObjectMetadata`) that
 * client-go's metadata informers ask for. The body is handed over unread: lists are parsed as a
 * stream (list-stream.ts), watches line by line, so no response is ever held whole.
 */
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import type { Query } from './api.js';
import { KubeApiError } from './api.js';

export const ACCEPT_JSON = 'application/json';
/** A list of PartialObjectMetadata: metadata only, whatever the object's spec holds. */
export const ACCEPT_METADATA_LIST = 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1';
/** A watch of PartialObjectMetadata (each event's object). */
export const ACCEPT_METADATA = 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1';

/** Largest error body read (a Status object is small). */
const MAX_ERROR_BYTES = 64 * 1024;

export async function openStream(
  kc: KubeConfig,
  path: string,
  query: Query,
  accept: string,
  opts: { signal: AbortSignal; connectTimeoutMs: number; agent?: http.Agent },
): Promise<http.IncomingMessage> {
  const cluster = kc.getCurrentCluster();
  if (cluster === null) throw new Error('no current cluster in the kubeconfig');
  const url = new URL(cluster.server.replace(/\/+$/, '') + path);
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
  const options: https.RequestOptions = { method: 'GET', headers: { Accept: accept } };
  await kc.applyToHTTPSOptions(options);
  if (opts.agent !== undefined && options.agent === undefined) options.agent = opts.agent;
  const transport = url.protocol === 'http:' ? http : https;
  return new Promise((resolve, reject) => {
    const req = transport.request(url, { ...options, signal: opts.signal }, (res) => {
      clearTimeout(timer);
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) return resolve(res);
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= MAX_ERROR_BYTES) chunks.push(c);
      });
      res.on('error', reject);
      res.on('end', () => {
        let s: { message?: unknown; reason?: unknown } = {};
        try {
          s = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof s;
        } catch {
          // not a Status: the code alone says it
        }
        const message = typeof s.message === 'string' ? s.message : http.STATUS_CODES[status] ?? 'error';
        reject(new KubeApiError(status, `GET ${path}: ${status} ${message}`, typeof s.reason === 'string' ? s.reason : undefined));
      });
    });
    // Until the response headers: a list or watch that never answers is abandoned.
    const timer = setTimeout(() => req.destroy(new Error(`GET ${path}: no answer from the API server within ${opts.connectTimeoutMs} ms`)), opts.connectTimeoutMs);
    timer.unref();
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end();
  });
}
