/**
 * The metadata-only views of kube-apiserver, for the test API server (kube-api-server.ts): what a
 * client gets when it asks, as client-go's metadata informers do, with
 *   Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1   (a list)
 *   Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1       (a watch or a get)
 * The server takes the first alternative of the Accept header it can serve, as the real one
 * does; `as=` it cannot serve for the request (a list asked as PartialObjectMetadata, say) is
 * skipped, and if nothing is left the answer is 406 NotAcceptable. Everything else (resource
 * versions, selectors, continue tokens, watch history, 410s) is the same as for full objects:
 * only the body of each object changes, to `{kind, apiVersion: meta.k8s.io/v1, metadata}`.
 */
export type View = 'full' | 'metadata';

const GROUP_VERSIONS = new Set(['v1', 'v1beta1']);

/** The view to answer with, or undefined when no alternative of `accept` can be served (406). */
export function viewFor(accept: string | undefined, request: 'list' | 'watch' | 'get'): View | undefined {
  if (accept === undefined || accept.trim() === '') return 'full';
  for (const alternative of accept.split(',')) {
    const [type, ...params] = alternative.split(';').map((p) => p.trim());
    if (type !== 'application/json' && type !== '*/*' && type !== 'application/*') continue;
    const p: Record<string, string> = {};
    for (const kv of params) {
      const at = kv.indexOf('=');
      if (at > 0) p[kv.slice(0, at).trim()] = kv.slice(at + 1).trim();
    }
    if (p['as'] === undefined) return 'full';
    if (p['g'] !== 'meta.k8s.io' || !GROUP_VERSIONS.has(p['v'] ?? '')) continue;
    if (request === 'list' && p['as'] === 'PartialObjectMetadataList') return 'metadata';
    if (request !== 'list' && p['as'] === 'PartialObjectMetadata') return 'metadata';
  }
  return undefined;
}

export function notAcceptable(): { kind: 'Status'; apiVersion: 'v1'; metadata: Record<string, never>; status: 'Failure'; message: string; reason: string; code: number } {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: 'only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch',
    reason: 'NotAcceptable',
    code: 406,
  };
}

/** One object as PartialObjectMetadata (a Status, as in a watch's ERROR event, is left as it is). */
export function partialObjectMetadata<T extends { kind?: string; metadata?: unknown }>(obj: T): T | { kind: 'PartialObjectMetadata'; apiVersion: 'meta.k8s.io/v1'; metadata: unknown } {
  if (obj.kind === 'Status') return obj;
  return { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: obj.metadata };
}

export function partialObjectMetadataList(meta: Record<string, unknown>, items: ReadonlyArray<{ kind?: string; metadata?: unknown }>): unknown {
  return { kind: 'PartialObjectMetadataList', apiVersion: 'meta.k8s.io/v1', metadata: meta, items: items.map(partialObjectMetadata) };
}
