/**
 * KubeApiServer: a minimal in-memory Kubernetes API server for pods and namespaces,
 * faithful enough to drive the real `@kubernetes/client-node` (CoreV1Api, Watch, ListWatch).
 *
 * Behaviour copied from kube-apiserver (+ etcd):
 *  - One global, monotonically increasing resourceVersion (decimal string) shared by every
 *    write, including Events. Each stored object gets `metadata.resourceVersion`,
 *    `metadata.uid` and `metadata.creationTimestamp` (second precision) when absent.
 *    An update that changes nothing is a no-op: no new resourceVersion, no watch event.
 *  - Lists: `{kind: PodList|NamespaceList, apiVersion: v1, metadata: {resourceVersion}, items}`
 *    with `fieldSelector` (`=`, `==`, `!=`; only the field labels the real server supports,
 *    anything else is a 400) and `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`,
 *    `k in (a,b)`, `k notin (a,b)`).
 *  - Watches (`?watch=true|1`, or the legacy `/api/v1/watch/...` paths): newline-delimited JSON
 *    events over a chunked 200 response. `resourceVersion=N` replays retained history after N
 *    then streams live events; missing or "0" sends synthetic ADDED events for the current
 *    state first. An object that stops matching the selectors is sent as DELETED (previous
 *    content, new resourceVersion); one that starts matching is sent as ADDED. If N is older
 *    than the retained history (bounded by `historyLimit` and by `compact()`), the stream is a
 *    single `ERROR` event carrying a 410 Expired Status, then ends. `timeoutSeconds` ends the
 *    stream cleanly; `allowWatchBookmarks=true` watches get BOOKMARKs from `sendBookmarks()`.
 *  - Nodes: list, watch, `GET /api/v1/nodes/{name}`, and `PATCH` (JSON Patch, merge, strategic as
 *    merge) applied to the stored node at the moment of the write, with a resourceVersion in the
 *    patch as a precondition (409); every applied patch is recorded with its time (`nodePatches()`,
 *    and `GET /_test/node-patches` for a server in another process).
 *  - Events: `GET /api/v1/namespaces/{ns}/events` (the list), `POST /api/v1/namespaces/{ns}/events` and
 *    `POST /apis/events.k8s.io/v1/namespaces/{ns}/events` (201, 409 on a duplicate name),
 *    `PATCH .../events/{name}` with JSON Patch (client-node's default content type), JSON merge
 *    patch or strategic merge patch (treated as a merge patch).
 *  - Errors are `Status` objects. Unknown paths are 404. With `token`, requests without
 *    `Authorization: Bearer <token>` are 401.
 *  - Pods: `POST /api/v1/namespaces/{ns}/pods` (201; `generateName`; 409 on a taken name) and
 *    `PATCH .../pods/{name}/status` (merge patch of `status` only, as the kubelet reports a pod).
 *  - Deleting a namespace cascades like the real namespace controller: the namespace is first
 *    marked Terminating (MODIFIED), its pods are deleted, then the namespace is DELETED.
 *
 * Deliberate simplifications: no pagination (`limit`/`continue` are ignored), list
 * `resourceVersion` is ignored (always a consistent read), pods may be created in a namespace
 * that does not exist, and only pods, namespaces, serviceaccounts and podidentityassociations can
 * be watched.
 *
 * PodIdentityAssociations (podiam.io/v1alpha1, cluster-scoped, with a status subresource and the
 * shipped CRD's schema) are in kube-association-api.ts (`associationApi`), over this store.
 *
 * ServiceAccounts: list/watch/get like pods (`/api/v1/serviceaccounts`,
 * `/api/v1/namespaces/{ns}/serviceaccounts[/{name}]`). TokenRequest, TokenReview and the OIDC
 * keys are in kube-token-api.ts (`tokenApi`).
 *
 * Metadata-only views (`Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`
 * for lists, `as=PartialObjectMetadata` for watches and gets): kube-partial-metadata.ts.
 *
 * Test controls: `compact()`, `dropWatches()`, `silenceWatches()`, `sendBookmarks()`, `setFailNext()`,
 * `setLatency()`, `requests`, `watchCount()`, `restart()`.
 */
import http from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { KubeAssociationApi } from './kube-association-api.js';
import { KubeTokenApi } from './kube-token-api.js';
import type { View } from './kube-partial-metadata.js';
import { notAcceptable, partialObjectMetadata, partialObjectMetadataList, viewFor } from './kube-partial-metadata.js';

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  [key: string]: unknown;
}

/** A stored Kubernetes object, as JSON. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  [key: string]: unknown;
}

/**
 * What the mutators accept: an object literal or a client-node model (`V1Pod`, `V1Namespace`).
 * It is serialised to JSON (so `Date`s become ISO strings) before being stored.
 */
export interface KubeObjectInput {
  apiVersion?: string;
  kind?: string;
  metadata?: object;
  spec?: object;
  status?: object;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface WatchEvent {
  type: WatchEventType;
  object: KubeObject | StatusObject;
}

export interface StatusObject {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure' | 'Success';
  message: string;
  reason: string;
  details?: { name?: string; group?: string; kind?: string };
  code: number;
}

export interface RequestRecord {
  method: string;
  /** URL path without the query string, e.g. `/api/v1/pods`. */
  path: string;
  query: Record<string, string>;
  /** `Date.now()` when the request arrived. */
  time: number;
  /** The Accept header, when one was sent. */
  accept?: string;
}

export interface NodePatchRecord {
  /** Date.now() when the patch was written. */
  time: number;
  name: string;
  /** The node's resourceVersion after the patch. */
  resourceVersion: string;
  contentType: string;
  patch: unknown;
}

export interface KubeApiServerOptions {
  /** Default 0 (ephemeral). `restart()` always reuses the port first bound. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Watch events retained for replay (default 1000). Older resourceVersions get 410. */
  historyLimit?: number;
  /** Require `Authorization: Bearer <token>`; otherwise any request is accepted. */
  token?: string;
  /**
   * The real apiserver omits kind/apiVersion on list items. By default this server sets them
   * (handier in tests); pass true to mimic the real server exactly.
   */
  omitListItemTypeMeta?: boolean;
}

export type Resource = 'pods' | 'namespaces' | 'serviceaccounts' | 'podidentityassociations' | 'nodes';

interface HistoryEntry {
  rv: number;
  resource: Resource;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: KubeObject;
  /** The previous state, for MODIFIED (selector transitions). */
  prev?: KubeObject;
}

interface FieldRequirement {
  field: string;
  op: '=' | '!=';
  value: string;
}

interface LabelRequirement {
  key: string;
  op: '=' | '!=' | 'in' | 'notin' | 'exists' | '!exists';
  values: string[];
}

interface Filter {
  namespace?: string;
  fields: FieldRequirement[];
  labels: LabelRequirement[];
}

interface Watcher {
  resource: Resource;
  filter: Filter;
  bookmarks: boolean;
  res: ServerResponse;
  view: View;
  timer?: NodeJS.Timeout;
}

class HttpError extends Error {
  constructor(readonly status: StatusObject) {
    super(status.message);
  }
}

const KINDS: Record<Resource, { kind: string; listKind: string; apiVersion: string }> = {
  pods: { kind: 'Pod', listKind: 'PodList', apiVersion: 'v1' },
  namespaces: { kind: 'Namespace', listKind: 'NamespaceList', apiVersion: 'v1' },
  serviceaccounts: { kind: 'ServiceAccount', listKind: 'ServiceAccountList', apiVersion: 'v1' },
  // The custom resource's routes, schema and status subresource: kube-association-api.ts.
  podidentityassociations: { kind: 'PodIdentityAssociation', listKind: 'PodIdentityAssociationList', apiVersion: 'podiam.io/v1alpha1' },
  nodes: { kind: 'Node', listKind: 'NodeList', apiVersion: 'v1' },
};

/** Field labels the real apiserver accepts in field selectors (anything else is a 400). */
const SUPPORTED_FIELDS: Record<Resource, ReadonlySet<string>> = {
  pods: new Set([
    'metadata.name',
    'metadata.namespace',
    'spec.nodeName',
    'spec.restartPolicy',
    'spec.schedulerName',
    'spec.serviceAccountName',
    'spec.hostNetwork',
    'status.phase',
    'status.podIP',
    'status.podIPs',
    'status.nominatedNodeName',
  ]),
  namespaces: new Set(['metadata.name', 'status.phase']),
  nodes: new Set(['metadata.name', 'spec.unschedulable']),
  serviceaccounts: new Set(['metadata.name', 'metadata.namespace']),
  podidentityassociations: new Set(['metadata.name']),
};

const REASONS: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  409: 'AlreadyExists',
  410: 'Expired',
  415: 'UnsupportedMediaType',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

export function statusObject(code: number, message: string, reason?: string, details?: StatusObject['details']): StatusObject {
  const status: StatusObject = {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason: reason ?? REASONS[code] ?? '',
    code,
  };
  if (details !== undefined) status.details = details;
  return status;
}

function clone<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function nowTimestamp(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function randomSuffix(): string {
  // Same alphabet as apimachinery's utilrand.String (no vowels, no confusable characters).
  const alphabet = 'bcdfghjklmnpqrstvwxz2456789';
  const bytes = randomBytes(5);
  let out = '';
  for (const b of bytes) out += alphabet[b % alphabet.length];
  return out;
}

function parseBool(value: string | undefined): boolean {
  return value !== undefined && ['1', 't', 'T', 'true', 'TRUE', 'True'].includes(value);
}

function fieldValue(obj: KubeObject, field: string): string {
  if (field === 'status.podIPs') {
    const ips = obj.status?.['podIPs'];
    if (!Array.isArray(ips)) return '';
    return ips.map((ip: unknown) => (isRecord(ip) ? String(ip['ip'] ?? '') : '')).join(',');
  }
  let cur: unknown = obj;
  for (const part of field.split('.')) {
    if (!isRecord(cur)) {
      cur = undefined;
      break;
    }
    cur = cur[part];
  }
  if (cur === undefined || cur === null) return field === 'spec.hostNetwork' ? 'false' : '';
  return typeof cur === 'object' ? JSON.stringify(cur) : String(cur);
}

function parseFieldSelector(resource: Resource, selector: string | undefined): FieldRequirement[] {
  const reqs: FieldRequirement[] = [];
  if (selector === undefined || selector.trim() === '') return reqs;
  for (const raw of selector.split(',')) {
    const term = raw.trim();
    if (term === '') continue;
    let m: RegExpMatchArray | null;
    let req: FieldRequirement;
    if ((m = term.match(/^([^=!]+)!=(.*)$/)) !== null) req = { field: m[1]!.trim(), op: '!=', value: m[2]!.trim() };
    else if ((m = term.match(/^([^=!]+)==(.*)$/)) !== null) req = { field: m[1]!.trim(), op: '=', value: m[2]!.trim() };
    else if ((m = term.match(/^([^=!]+)=(.*)$/)) !== null) req = { field: m[1]!.trim(), op: '=', value: m[2]!.trim() };
    else throw new HttpError(statusObject(400, `invalid selector: '${selector}'; can't understand '${term}'`));
    if (!SUPPORTED_FIELDS[resource].has(req.field)) {
      throw new HttpError(statusObject(400, `field label not supported: ${req.field}`));
    }
    reqs.push(req);
  }
  return reqs;
}

function splitLabelTerms(selector: string): string[] {
  const terms: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of selector) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      terms.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  terms.push(cur);
  return terms.map((t) => t.trim()).filter((t) => t !== '');
}

function parseLabelSelector(selector: string | undefined): LabelRequirement[] {
  const reqs: LabelRequirement[] = [];
  if (selector === undefined || selector.trim() === '') return reqs;
  const key = String.raw`[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?`;
  const bad = (term: string): HttpError =>
    new HttpError(statusObject(400, `unable to parse requested label selector: '${selector}'; can't understand '${term}'`));
  for (const term of splitLabelTerms(selector)) {
    let m: RegExpMatchArray | null;
    if ((m = term.match(new RegExp(`^(${key})\\s+(in|notin)\\s+\\((.*)\\)$`))) !== null) {
      const values = m[4]!.split(',').map((v) => v.trim());
      reqs.push({ key: m[1]!, op: m[3] as 'in' | 'notin', values });
    } else if ((m = term.match(new RegExp(`^(${key})\\s*(!=|==|=)\\s*(.*)$`))) !== null) {
      reqs.push({ key: m[1]!, op: m[3] === '!=' ? '!=' : '=', values: [m[4]!.trim()] });
    } else if ((m = term.match(new RegExp(`^!\\s*(${key})$`))) !== null) {
      reqs.push({ key: m[1]!, op: '!exists', values: [] });
    } else if ((m = term.match(new RegExp(`^(${key})$`))) !== null) {
      reqs.push({ key: m[1]!, op: 'exists', values: [] });
    } else {
      throw bad(term);
    }
  }
  return reqs;
}

function matchesFilter(obj: KubeObject, filter: Filter): boolean {
  if (filter.namespace !== undefined && obj.metadata.namespace !== filter.namespace) return false;
  for (const req of filter.fields) {
    const equal = fieldValue(obj, req.field) === req.value;
    if (req.op === '=' ? !equal : equal) return false;
  }
  const labels = obj.metadata.labels ?? {};
  for (const req of filter.labels) {
    const has = Object.prototype.hasOwnProperty.call(labels, req.key);
    const value = labels[req.key];
    switch (req.op) {
      case '=':
        if (!has || value !== req.values[0]) return false;
        break;
      case '!=':
        if (has && value === req.values[0]) return false;
        break;
      case 'in':
        if (!has || !req.values.includes(value ?? '')) return false;
        break;
      case 'notin':
        if (has && req.values.includes(value ?? '')) return false;
        break;
      case 'exists':
        if (!has) return false;
        break;
      case '!exists':
        if (has) return false;
        break;
    }
  }
  return true;
}

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isRecord(patch)) return clone(patch);
  const out: Record<string, unknown> = isRecord(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function unescapePointer(token: string): string {
  return token.replace(/~1/g, '/').replace(/~0/g, '~');
}

/** RFC 6902 JSON patch (add, remove, replace, test, move, copy). Mutates and returns `doc`. */
function jsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw new HttpError(statusObject(400, 'json patch must be an array of operations'));
  const fail = (msg: string): HttpError => new HttpError(statusObject(422, msg));
  const resolve = (root: unknown, path: string): { parent: unknown; key: string } => {
    if (path === '' || !path.startsWith('/')) throw fail(`invalid json patch path: "${path}"`);
    const tokens = path.slice(1).split('/').map(unescapePointer);
    let parent: unknown = root;
    for (const t of tokens.slice(0, -1)) {
      if (Array.isArray(parent)) parent = parent[Number(t)];
      else if (isRecord(parent)) parent = parent[t];
      else throw fail(`json patch path not found: "${path}"`);
    }
    if (!Array.isArray(parent) && !isRecord(parent)) throw fail(`json patch path not found: "${path}"`);
    return { parent, key: tokens[tokens.length - 1]! };
  };
  const get = (root: unknown, path: string): unknown => {
    const { parent, key } = resolve(root, path);
    const v = Array.isArray(parent) ? parent[Number(key)] : (parent as Record<string, unknown>)[key];
    if (v === undefined) throw fail(`json patch path not found: "${path}"`);
    return v;
  };
  const remove = (root: unknown, path: string): unknown => {
    const v = get(root, path);
    const { parent, key } = resolve(root, path);
    if (Array.isArray(parent)) parent.splice(Number(key), 1);
    else delete (parent as Record<string, unknown>)[key];
    return v;
  };
  const add = (root: unknown, path: string, value: unknown): void => {
    const { parent, key } = resolve(root, path);
    if (Array.isArray(parent)) {
      if (key === '-') parent.push(value);
      else parent.splice(Number(key), 0, value);
    } else {
      (parent as Record<string, unknown>)[key] = value;
    }
  };
  for (const op of ops) {
    if (!isRecord(op) || typeof op['op'] !== 'string' || typeof op['path'] !== 'string') {
      throw new HttpError(statusObject(400, 'invalid json patch operation'));
    }
    const path = op['path'];
    switch (op['op']) {
      case 'add':
        add(doc, path, clone(op['value']));
        break;
      case 'remove':
        remove(doc, path);
        break;
      case 'replace':
        get(doc, path);
        remove(doc, path);
        add(doc, path, clone(op['value']));
        break;
      case 'test':
        if (JSON.stringify(get(doc, path)) !== JSON.stringify(op['value'])) {
          throw fail(`json patch test operation failed at "${path}"`);
        }
        break;
      case 'move': {
        const v = remove(doc, String(op['from']));
        add(doc, path, v);
        break;
      }
      case 'copy':
        add(doc, path, clone(get(doc, String(op['from']))));
        break;
      default:
        throw new HttpError(statusObject(400, `unsupported json patch operation: ${op['op']}`));
    }
  }
  return doc;
}

export class KubeApiServer {
  /** Every request received, in arrival order. Tests may clear it (`requests.length = 0`). */
  readonly requests: RequestRecord[] = [];

  private readonly host: string;
  private readonly wantedPort: number;
  private readonly historyLimit: number;
  private readonly token: string | undefined;
  private readonly omitListItemTypeMeta: boolean;

  private server: Server | undefined;
  private boundPort = 0;
  private readonly sockets = new Set<Socket>();
  private readonly watchers = new Set<Watcher>();
  private readonly pendingTimers = new Set<NodeJS.Timeout>();
  /** Snapshots behind continue tokens of chunked lists. */
  private readonly listSnapshots = new Map<string, { rv: number; items: KubeObject[] }>();

  private rv = 0;
  /** Events with rv <= compactedRv are gone; watching from an RV below it is 410 Expired. */
  private compactedRv = 0;
  private history: HistoryEntry[] = [];
  private readonly pods = new Map<string, KubeObject>();
  private readonly namespaces = new Map<string, KubeObject>();
  private readonly eventStore = new Map<string, KubeObject>();
  private readonly serviceAccounts = new Map<string, KubeObject>();
  private readonly associations = new Map<string, KubeObject>();
  private readonly nodes = new Map<string, KubeObject>();
  /** Every PATCH of a node that was applied, in order (see nodePatches()). */
  private readonly nodePatchLog: NodePatchRecord[] = [];
  private beforeNodePatch: (() => void) | undefined;
  /** TokenRequest, TokenReview and the OIDC keys (test/support/kube-token-api.ts). */
  readonly tokenApi: KubeTokenApi = new KubeTokenApi(this);
  /** The PodIdentityAssociation custom resource (test/support/kube-association-api.ts). */
  readonly associationApi: KubeAssociationApi = new KubeAssociationApi(this);

  /** Bytes written to clients over connections already closed (see bytesSent()). */
  private closedBytes = 0;
  private failNext = 0;
  private failStatus = 500;
  private failOnly: Resource | undefined;
  private latencyMs = 0;

  constructor(opts: KubeApiServerOptions = {}) {
    this.host = opts.host ?? '127.0.0.1';
    this.wantedPort = opts.port ?? 0;
    this.historyLimit = opts.historyLimit ?? 1000;
    this.token = opts.token;
    this.omitListItemTypeMeta = opts.omitListItemTypeMeta ?? false;
  }

  static async start(opts: KubeApiServerOptions = {}): Promise<KubeApiServer> {
    const server = new KubeApiServer(opts);
    await server.listen();
    return server;
  }

  /** Start listening (used by `start()`; only needed after `new KubeApiServer()`). */
  async listen(): Promise<this> {
    if (this.server !== undefined) return this;
    const server = http.createServer((req, res) => this.onRequest(req, res));
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => {
        this.sockets.delete(socket);
        this.closedBytes += socket.bytesWritten;
      });
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen(this.boundPort || this.wantedPort, this.host, () => {
        server.off('error', onError);
        resolve();
      });
    });
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new Error('KubeApiServer: unexpected listen address');
    this.boundPort = addr.port;
    this.server = server;
    return this;
  }

  get port(): number {
    return this.boundPort;
  }

  get url(): string {
    const host = this.host === '0.0.0.0' ? '127.0.0.1' : this.host === '::' ? '::1' : this.host;
    return `http://${host.includes(':') ? `[${host}]` : host}:${this.boundPort}`;
  }

  /** Stop listening and destroy every connection (watches included). The store is kept. */
  async stop(): Promise<void> {
    for (const t of this.pendingTimers) clearTimeout(t);
    this.pendingTimers.clear();
    for (const w of this.watchers) {
      if (w.timer !== undefined) clearTimeout(w.timer);
    }
    this.watchers.clear();
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    server.closeAllConnections();
    await closed;
  }

  /** Simulate an apiserver restart: drop every connection, then listen again on the same port. */
  async restart(): Promise<void> {
    await this.stop();
    await this.listen();
  }

  // ---------------------------------------------------------------- test controls

  /** Current (latest) resourceVersion. */
  resourceVersion(): string {
    return String(this.rv);
  }

  /** Drop all watch history: watching from any resourceVersion older than now gets 410. */
  compact(): void {
    this.history = [];
    this.compactedRv = this.rv;
    this.listSnapshots.clear();
  }

  /** Abruptly destroy every open watch connection (no final event, no terminating chunk). */
  dropWatches(): void {
    for (const w of [...this.watchers]) {
      this.removeWatcher(w);
      w.res.socket?.destroy();
      w.res.destroy();
    }
  }

  /** Send a BOOKMARK (current resourceVersion) to every watch opened with allowWatchBookmarks=true. */
  sendBookmarks(): void {
    for (const w of this.watchers) {
      if (!w.bookmarks) continue;
      const { kind, apiVersion } = KINDS[w.resource];
      this.write(w, { type: 'BOOKMARK', object: { kind, apiVersion, metadata: { resourceVersion: String(this.rv) } } });
    }
  }

  /** End every open watch cleanly (like a server-side timeout). */
  endWatches(): void {
    for (const w of [...this.watchers]) {
      this.removeWatcher(w);
      w.res.end();
    }
  }

  /**
   * Every open watch goes silent, as over a dead connection: it gets no more events and no
   * server-side timeout, but the connection stays open (until the client gives up or stop()).
   * Watches opened afterwards behave normally. Returns how many were silenced.
   */
  silenceWatches(): number {
    const silenced = [...this.watchers];
    for (const w of silenced) this.removeWatcher(w);
    return silenced.length;
  }

  /** Bytes written to clients so far (headers and bodies, every connection): what they downloaded. */
  bytesSent(): number {
    let n = this.closedBytes;
    for (const s of this.sockets) n += s.bytesWritten;
    return n;
  }

  watchCount(): number {
    return this.watchers.size;
  }

  /** The next `n` list/watch requests (pods, namespaces or serviceaccounts collections, or only `resource`'s) fail with `status`. */
  setFailNext(n: number, status = 500, resource?: Resource): void {
    this.failNext = n;
    this.failStatus = status;
    this.failOnly = resource;
  }

  /** Delay every response by `ms`. */
  setLatency(ms: number): void {
    this.latencyMs = ms;
  }

  /** Events POSTed so far (core and events.k8s.io), in creation order. */
  events(): KubeObject[] {
    return [...this.eventStore.values()].map((e) => clone(e));
  }

  // ---------------------------------------------------------------- store mutators

  getPod(namespace: string, name: string): KubeObject | undefined {
    const pod = this.pods.get(`${namespace}/${name}`);
    return pod === undefined ? undefined : clone(pod);
  }

  listPods(): KubeObject[] {
    return [...this.pods.values()].map((p) => clone(p));
  }

  getNode(name: string): KubeObject | undefined {
    const node = this.nodes.get(name);
    return node === undefined ? undefined : clone(node);
  }

  createNode(node: KubeObjectInput): KubeObject {
    const obj = this.normalize(node, 'nodes');
    const name = obj.metadata.name!;
    if (this.nodes.has(name)) throw new Error(`nodes "${name}" already exists`);
    obj.spec ??= {};
    return this.commit('nodes', name, 'ADDED', obj);
  }

  /** A write by another client (the kubelet, another agent): a new resourceVersion, a watch event. */
  updateNode(name: string, mutate: (node: KubeObject) => void): KubeObject {
    return this.update('nodes', name, mutate);
  }

  /** The node PATCHes applied so far: when (Date.now() at the write), which node, the patch, the new resourceVersion. */
  nodePatches(): NodePatchRecord[] {
    return this.nodePatchLog.map((r) => clone(r));
  }

  /** Runs `fn` (e.g. another client's write) right before the next node PATCH is applied: a race, made certain. */
  interleaveBeforeNextNodePatch(fn: () => void): void {
    this.beforeNodePatch = fn;
  }

  getNamespace(name: string): KubeObject | undefined {
    const ns = this.namespaces.get(name);
    return ns === undefined ? undefined : clone(ns);
  }

  createPod(pod: KubeObjectInput): KubeObject {
    const obj = this.normalize(pod, 'pods');
    const key = `${obj.metadata.namespace}/${obj.metadata.name}`;
    if (this.pods.has(key)) throw new Error(`pods "${obj.metadata.name}" already exists`);
    obj.status = { phase: 'Pending', ...(obj.status ?? {}) };
    return this.commit('pods', key, 'ADDED', obj);
  }

  updatePod(namespace: string, name: string, mutate: (pod: KubeObject) => void): KubeObject {
    return this.update('pods', `${namespace}/${name}`, mutate);
  }

  /**
   * Delete a pod. Default: removed at once (like `--grace-period=0 --force`): one DELETED event.
   * With `graceful: true`: only marks it (deletionTimestamp, deletionGracePeriodSeconds) as the
   * real apiserver does before the kubelet confirms; a later plain `deletePod` removes it.
   */
  deletePod(namespace: string, name: string, opts: { graceful?: boolean; gracePeriodSeconds?: number } = {}): KubeObject {
    const key = `${namespace}/${name}`;
    if (opts.graceful === true) {
      return this.update('pods', key, (p) => {
        if (p.metadata.deletionTimestamp === undefined) {
          p.metadata.deletionTimestamp = nowTimestamp();
          p.metadata.deletionGracePeriodSeconds = opts.gracePeriodSeconds ?? 30;
        }
      });
    }
    return this.remove('pods', key);
  }

  createNamespace(ns: KubeObjectInput): KubeObject {
    const obj = this.normalize(ns, 'namespaces');
    const name = obj.metadata.name!;
    if (this.namespaces.has(name)) throw new Error(`namespaces "${name}" already exists`);
    obj.metadata.labels = { ...(obj.metadata.labels ?? {}), 'kubernetes.io/metadata.name': name };
    obj.spec = { finalizers: ['kubernetes'], ...(obj.spec ?? {}) };
    obj.status = { phase: 'Active', ...(obj.status ?? {}) };
    return this.commit('namespaces', name, 'ADDED', obj);
  }

  updateNamespace(name: string, mutate: (ns: KubeObject) => void): KubeObject {
    return this.update('namespaces', name, mutate);
  }

  /** Terminating (MODIFIED), then each pod in it DELETED, then the namespace DELETED. */
  deleteNamespace(name: string): KubeObject {
    this.update('namespaces', name, (ns) => {
      ns.metadata.deletionTimestamp ??= nowTimestamp();
      ns.status = { ...(ns.status ?? {}), phase: 'Terminating' };
    });
    for (const [key, pod] of [...this.pods]) {
      if (pod.metadata.namespace === name) this.remove('pods', key);
    }
    for (const [key, sa] of [...this.serviceAccounts]) {
      if (sa.metadata.namespace === name) this.remove('serviceaccounts', key);
    }
    return this.remove('namespaces', name);
  }

  getServiceAccount(namespace: string, name: string): KubeObject | undefined {
    const sa = this.serviceAccounts.get(`${namespace}/${name}`);
    return sa === undefined ? undefined : clone(sa);
  }

  createServiceAccount(sa: KubeObjectInput): KubeObject {
    const obj = this.normalize(sa, 'serviceaccounts');
    const key = `${obj.metadata.namespace}/${obj.metadata.name}`;
    if (this.serviceAccounts.has(key)) throw new Error(`serviceaccounts "${obj.metadata.name}" already exists`);
    return this.commit('serviceaccounts', key, 'ADDED', obj);
  }

  updateServiceAccount(namespace: string, name: string, mutate: (sa: KubeObject) => void): KubeObject {
    return this.update('serviceaccounts', `${namespace}/${name}`, mutate);
  }

  deleteServiceAccount(namespace: string, name: string): KubeObject {
    return this.remove('serviceaccounts', `${namespace}/${name}`);
  }

  // ---------------------------------------------------------------- store internals

  private storeFor(resource: Resource): Map<string, KubeObject> {
    return resource === 'pods' ? this.pods : resource === 'serviceaccounts' ? this.serviceAccounts : resource === 'podidentityassociations' ? this.associations : resource === 'nodes' ? this.nodes : this.namespaces;
  }

  /**
   * For the resource modules (kube-association-api.ts): the store's own operations, so a custom
   * resource gets the same resourceVersions, history, watches and no-op detection as the built-in ones.
   */
  readonly store = {
    get: (resource: Resource, key: string): KubeObject | undefined => {
      const obj = this.storeFor(resource).get(key);
      return obj === undefined ? undefined : clone(obj);
    },
    create: (resource: Resource, key: string, input: KubeObjectInput): KubeObject => {
      const obj = this.normalize(input, resource);
      if (this.storeFor(resource).has(key)) throw new HttpError(statusObject(409, `${resource} "${obj.metadata.name}" already exists`, 'AlreadyExists', { name: obj.metadata.name, kind: resource }));
      return this.commit(resource, key, 'ADDED', obj);
    },
    update: (resource: Resource, key: string, mutate: (obj: KubeObject) => void): KubeObject => this.update(resource, key, mutate),
    remove: (resource: Resource, key: string): KubeObject => this.remove(resource, key),
    collection: (res: ServerResponse, resource: Resource, query: Record<string, string>, watch: boolean): void => this.collection(res, resource, undefined, query, watch),
    send: (res: ServerResponse, code: number, body: unknown): void => this.sendJson(res, code, body),
    error: (code: number, message: string, reason?: string, details?: StatusObject['details']): Error => new HttpError(statusObject(code, message, reason, details)),
  };

  private normalize(input: KubeObjectInput, resource: Resource): KubeObject {
    const raw: unknown = clone(input);
    if (!isRecord(raw) || !isRecord(raw['metadata'])) throw new Error(`${resource}: metadata is required`);
    // kind/apiVersion first, as the real apiserver serialises them.
    const obj = { kind: KINDS[resource].kind, apiVersion: KINDS[resource].apiVersion, ...raw } as unknown as KubeObject;
    const meta = obj.metadata;
    if (typeof meta.name !== 'string' || meta.name === '') throw new Error(`${resource}: metadata.name is required`);
    if (resource === 'pods' || resource === 'serviceaccounts') {
      if (typeof meta.namespace !== 'string' || meta.namespace === '') {
        throw new Error(`${resource}: metadata.namespace is required`);
      }
    } else {
      delete meta.namespace;
    }
    obj.kind = KINDS[resource].kind;
    obj.apiVersion = KINDS[resource].apiVersion;
    meta.uid ??= randomUUID();
    meta.creationTimestamp ??= nowTimestamp();
    return obj;
  }

  private update(resource: Resource, key: string, mutate: (obj: KubeObject) => void): KubeObject {
    const store = this.storeFor(resource);
    const prev = store.get(key);
    if (prev === undefined) throw new Error(`${resource} "${key}" not found`);
    const next = clone(prev);
    mutate(next);
    const fixed = clone(next);
    // Identity fields cannot change.
    fixed.kind = prev.kind;
    fixed.apiVersion = prev.apiVersion;
    fixed.metadata = {
      ...fixed.metadata,
      name: prev.metadata.name,
      uid: prev.metadata.uid,
      creationTimestamp: prev.metadata.creationTimestamp,
      resourceVersion: prev.metadata.resourceVersion,
    };
    if (prev.metadata.namespace !== undefined) fixed.metadata.namespace = prev.metadata.namespace;
    else delete fixed.metadata.namespace;
    if (JSON.stringify(fixed) === JSON.stringify(prev)) return clone(prev); // no-op write: no new RV, no event
    return this.commit(resource, key, 'MODIFIED', fixed, prev);
  }

  private remove(resource: Resource, key: string): KubeObject {
    const store = this.storeFor(resource);
    const prev = store.get(key);
    if (prev === undefined) throw new Error(`${resource} "${key}" not found`);
    store.delete(key);
    const obj = clone(prev);
    return this.commit(resource, key, 'DELETED', obj);
  }

  private commit(resource: Resource, key: string, type: HistoryEntry['type'], obj: KubeObject, prev?: KubeObject): KubeObject {
    this.rv += 1;
    obj.metadata.resourceVersion = String(this.rv);
    if (type !== 'DELETED') this.storeFor(resource).set(key, obj);
    const entry: HistoryEntry = { rv: this.rv, resource, type, object: obj };
    if (prev !== undefined) entry.prev = prev;
    this.history.push(entry);
    while (this.history.length > this.historyLimit) {
      const dropped = this.history.shift()!;
      this.compactedRv = dropped.rv;
    }
    for (const w of this.watchers) {
      const ev = this.eventFor(w, entry);
      if (ev !== undefined) this.write(w, ev);
    }
    return clone(obj);
  }

  /** The watch event (if any) a watcher sees for a history entry, applying selector transitions. */
  private eventFor(w: Watcher, e: HistoryEntry): WatchEvent | undefined {
    if (e.resource !== w.resource) return undefined;
    const curOk = matchesFilter(e.object, w.filter);
    if (e.type !== 'MODIFIED') return curOk ? { type: e.type, object: e.object } : undefined;
    const prevOk = e.prev !== undefined && matchesFilter(e.prev, w.filter);
    if (curOk) return { type: prevOk ? 'MODIFIED' : 'ADDED', object: e.object };
    if (prevOk) {
      // Like the watch cache: the previous content, stamped with this event's resourceVersion.
      const old = clone(e.prev!);
      old.metadata.resourceVersion = String(e.rv);
      return { type: 'DELETED', object: old };
    }
    return undefined;
  }

  // ---------------------------------------------------------------- HTTP

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname, query, time: Date.now(), ...(req.headers.accept === undefined ? {} : { accept: req.headers.accept }) });

    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => res.destroy());
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const run = (): void => {
        try {
          this.dispatch(req, res, url, query, body);
        } catch (err) {
          const status =
            err instanceof HttpError
              ? err.status
              : statusObject(500, err instanceof Error ? err.message : String(err));
          this.sendJson(res, status.code, status);
        }
      };
      if (this.latencyMs > 0) {
        const t = setTimeout(() => {
          this.pendingTimers.delete(t);
          run();
        }, this.latencyMs);
        this.pendingTimers.add(t);
      } else {
        run();
      }
    });
  }

  private sendJson(res: ServerResponse, code: number, body: unknown, contentType = 'application/json'): void {
    if (res.headersSent || res.destroyed) return;
    const text = JSON.stringify(body) + '\n';
    res.writeHead(code, { 'content-type': contentType, 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private dispatch(req: IncomingMessage, res: ServerResponse, url: URL, query: Record<string, string>, body: string): void {
    if (this.token !== undefined && req.headers.authorization !== `Bearer ${this.token}`) {
      this.sendJson(res, 401, statusObject(401, 'Unauthorized'));
      return;
    }
    const method = req.method ?? 'GET';
    const accept = req.headers.accept;
    let parts = url.pathname
      .split('/')
      .filter((p) => p !== '')
      .map((p) => decodeURIComponent(p));
    const path = parts.join('/');

    if (method === 'GET' && ['healthz', 'livez', 'readyz'].includes(path)) {
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('ok');
      return;
    }
    if (method === 'GET' && path === 'version') {
      this.sendJson(res, 200, { major: '1', minor: '30', gitVersion: 'v1.30.0-podiam-fake', platform: 'linux/amd64' });
      return;
    }

    let watch = parseBool(query['watch']);
    if (parts[0] === 'api' && parts[1] === 'v1' && parts[2] === 'watch') {
      watch = true;
      parts = ['api', 'v1', ...parts.slice(3)];
    }

    if (method === 'GET' && path === '_test/node-patches') {
      this.sendJson(res, 200, this.nodePatches());
      return;
    }
    if (parts[0] === 'api' && parts[1] === 'v1') {
      const rest = parts.slice(2);
      if (rest[0] === 'nodes') {
        if (rest.length === 1 && method === 'GET') {
          this.collection(res, 'nodes', undefined, query, watch);
          return;
        }
        if (rest.length === 2 && method === 'GET' && !watch) {
          this.getOne(res, 'nodes', rest[1]!, rest[1]!);
          return;
        }
        if (rest.length === 2 && method === 'PATCH') {
          this.sendJson(res, 200, this.patchNode(rest[1]!, req.headers['content-type'], this.parseBody(body)));
          return;
        }
      }
      // /api/v1/pods
      if (rest.length === 1 && rest[0] === 'pods' && method === 'GET') {
        this.collection(res, 'pods', undefined, query, watch, accept);
        return;
      }
      if (rest.length === 1 && rest[0] === 'serviceaccounts' && method === 'GET') {
        this.collection(res, 'serviceaccounts', undefined, query, watch, accept);
        return;
      }
      if (rest[0] === 'namespaces') {
        if (rest.length === 1 && method === 'GET') {
          this.collection(res, 'namespaces', undefined, query, watch, accept);
          return;
        }
        const ns = rest[1]!;
        if (rest.length === 2 && method === 'GET' && !watch) {
          this.getOne(res, 'namespaces', ns, ns, accept);
          return;
        }
        if (rest.length === 3 && rest[2] === 'pods' && method === 'GET') {
          this.collection(res, 'pods', ns, query, watch, accept);
          return;
        }
        if (rest.length === 4 && rest[2] === 'pods' && method === 'GET' && !watch) {
          this.getOne(res, 'pods', `${ns}/${rest[3]!}`, rest[3]!, accept);
          return;
        }
        if (rest.length === 3 && rest[2] === 'pods' && method === 'POST') {
          this.sendJson(res, 201, this.createPodRequest(ns, this.parseBody(body)));
          return;
        }
        if (rest.length === 5 && rest[2] === 'pods' && rest[4] === 'status' && method === 'PATCH') {
          this.sendJson(res, 200, this.patchPodStatus(ns, rest[3]!, req.headers['content-type'], this.parseBody(body)));
          return;
        }
        if (rest.length === 4 && rest[2] === 'pods' && method === 'DELETE') {
          // Removed at once (as with gracePeriodSeconds=0); the answer is the deleted pod.
          if (!this.pods.has(`${ns}/${rest[3]!}`)) this.getOne(res, 'pods', `${ns}/${rest[3]!}`, rest[3]!);
          else this.sendJson(res, 200, this.remove('pods', `${ns}/${rest[3]!}`));
          return;
        }
        if (rest.length === 3 && rest[2] === 'serviceaccounts' && method === 'GET') {
          this.collection(res, 'serviceaccounts', ns, query, watch, accept);
          return;
        }
        if (rest.length === 4 && rest[2] === 'serviceaccounts' && method === 'GET' && !watch) {
          this.getOne(res, 'serviceaccounts', `${ns}/${rest[3]!}`, rest[3]!, accept);
          return;
        }
        if (rest[2] === 'events' && !watch) {
          if (this.eventsEndpoint(res, method, ns, rest.slice(3), 'v1', req.headers['content-type'], body)) return;
        }
      }
    }
    if (parts[0] === 'apis' && parts[1] === 'events.k8s.io' && parts[2] === 'v1' && parts[3] === 'namespaces' && parts[5] === 'events' && !watch) {
      const ns = parts[4]!;
      if (this.eventsEndpoint(res, method, ns, parts.slice(6), 'events.k8s.io/v1', req.headers['content-type'], body)) return;
    }
    if (this.associationApi.handle(res, method, parts, query, watch, req.headers['content-type'], body)) return;
    const answer = this.tokenApi.handle(method, parts, body);
    if (answer !== undefined) {
      this.sendJson(res, answer.code, answer.body, answer.contentType);
      return;
    }
    this.sendJson(res, 404, statusObject(404, 'the server could not find the requested resource', 'NotFound', {}));
  }

  private getOne(res: ServerResponse, resource: Resource, key: string, name: string, accept?: string): void {
    const view = viewFor(accept, 'get');
    if (view === undefined) {
      this.sendJson(res, 406, notAcceptable());
      return;
    }
    const obj = this.storeFor(resource).get(key);
    if (obj === undefined) {
      this.sendJson(res, 404, statusObject(404, `${resource} "${name}" not found`, 'NotFound', { name, kind: resource }));
      return;
    }
    this.sendJson(res, 200, view === 'metadata' ? partialObjectMetadata(obj) : obj);
  }

  private collection(res: ServerResponse, resource: Resource, namespace: string | undefined, query: Record<string, string>, watch: boolean, accept?: string): void {
    const view = viewFor(accept, watch ? 'watch' : 'list');
    if (view === undefined) {
      this.sendJson(res, 406, notAcceptable());
      return;
    }
    if (this.failNext > 0 && (this.failOnly === undefined || this.failOnly === resource)) {
      this.failNext -= 1;
      const code = this.failStatus;
      this.sendJson(res, code, statusObject(code, `injected failure (${code})`));
      return;
    }
    const filter: Filter = {
      fields: parseFieldSelector(resource, query['fieldSelector']),
      labels: parseLabelSelector(query['labelSelector']),
    };
    if (namespace !== undefined) filter.namespace = namespace;

    // Filtered and sorted only when used: a continued list reads its snapshot (100,000 pods in
    // 500-item pages must not be sorted 200 times).
    const current = (): KubeObject[] => [...this.storeFor(resource).values()]
      .filter((o) => matchesFilter(o, filter))
      .sort((a, b) => {
        const ka = `${a.metadata.namespace ?? ''}/${a.metadata.name ?? ''}`;
        const kb = `${b.metadata.namespace ?? ''}/${b.metadata.name ?? ''}`;
        return ka < kb ? -1 : ka > kb ? 1 : 0;
      });

    if (!watch) {
      // Chunked lists (limit/continue), as the real server: every page comes from the snapshot
      // taken for the first one, at that page's resourceVersion.
      let snapshot: { rv: number; items: KubeObject[] };
      const token = query['continue'];
      if (token !== undefined && token !== '') {
        const held = this.listSnapshots.get(token);
        if (held === undefined) throw new HttpError(statusObject(410, 'The provided continue parameter is too old to display a consistent list result.', 'Expired'));
        this.listSnapshots.delete(token);
        snapshot = held;
      } else {
        snapshot = { rv: this.rv, items: current() };
      }
      const limit = Number(query['limit'] ?? 0);
      let page = snapshot.items;
      const meta: Record<string, unknown> = { resourceVersion: String(snapshot.rv) };
      if (limit > 0 && page.length > limit) {
        const next = randomUUID();
        this.listSnapshots.set(next, { rv: snapshot.rv, items: page.slice(limit) });
        page = page.slice(0, limit);
        meta['continue'] = next;
        meta['remainingItemCount'] = snapshot.items.length - limit;
      }
      const items = this.omitListItemTypeMeta
        ? page.map((o) => {
            const item = clone(o);
            delete item.kind;
            delete item.apiVersion;
            return item;
          })
        : page;
      if (view === 'metadata') {
        this.sendJson(res, 200, partialObjectMetadataList(meta, page));
        return;
      }
      this.sendJson(res, 200, {
        kind: KINDS[resource].listKind,
        apiVersion: KINDS[resource].apiVersion,
        metadata: meta,
        items,
      });
      return;
    }

    const rvParam = query['resourceVersion'];
    let fromRv: number | undefined;
    if (rvParam !== undefined && rvParam !== '' && rvParam !== '0') {
      if (!/^\d+$/.test(rvParam)) {
        throw new HttpError(statusObject(400, `resourceVersion: Invalid value: "${rvParam}": invalid resource version`, 'BadRequest'));
      }
      fromRv = Number(rvParam);
    }

    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked', 'cache-control': 'no-cache, private' });
    res.flushHeaders();

    if (fromRv !== undefined && fromRv < this.compactedRv) {
      const status = statusObject(410, `too old resource version: ${fromRv} (${this.compactedRv})`, 'Expired');
      res.end(JSON.stringify({ type: 'ERROR', object: status }) + '\n');
      return;
    }

    const w: Watcher = { resource, filter, bookmarks: parseBool(query['allowWatchBookmarks']), res, view };
    if (fromRv === undefined) {
      for (const obj of current()) this.write(w, { type: 'ADDED', object: obj });
    } else {
      for (const e of this.history) {
        if (e.rv <= fromRv) continue;
        const ev = this.eventFor(w, e);
        if (ev !== undefined) this.write(w, ev);
      }
    }
    this.watchers.add(w);
    res.on('close', () => this.removeWatcher(w));
    const timeout = query['timeoutSeconds'];
    if (timeout !== undefined && /^\d+$/.test(timeout) && Number(timeout) > 0) {
      w.timer = setTimeout(() => {
        this.removeWatcher(w);
        res.end();
      }, Number(timeout) * 1000);
    }
  }

  private removeWatcher(w: Watcher): void {
    if (w.timer !== undefined) clearTimeout(w.timer);
    w.timer = undefined;
    this.watchers.delete(w);
  }

  private write(w: Watcher, ev: WatchEvent): void {
    if (w.res.writableEnded || w.res.destroyed) return;
    w.res.write(JSON.stringify(w.view === 'metadata' ? { type: ev.type, object: partialObjectMetadata(ev.object as KubeObject) } : ev) + '\n');
  }

  /** Returns false when the path/method is not an events endpoint (caller answers 404). */
  private eventsEndpoint(
    res: ServerResponse,
    method: string,
    namespace: string,
    rest: string[],
    apiVersion: string,
    contentType: string | undefined,
    body: string,
  ): boolean {
    if (rest.length === 0 && method === 'GET') {
      // `kubectl get events -n <ns>`: the namespace's Events (no selectors, no watch).
      const items = [...this.eventStore.values()].filter((e) => e.metadata.namespace === namespace && (e.apiVersion ?? 'v1') === apiVersion);
      this.sendJson(res, 200, { kind: 'EventList', apiVersion, metadata: { resourceVersion: String(this.rv) }, items });
      return true;
    }
    if (rest.length === 0 && method === 'POST') {
      const parsed = this.parseBody(body);
      if (!isRecord(parsed)) throw new HttpError(statusObject(400, 'request body must be a JSON object'));
      const event = parsed as KubeObject;
      if (!isRecord(event.metadata)) event.metadata = {};
      const meta = event.metadata;
      if (meta.namespace !== undefined && meta.namespace !== '' && meta.namespace !== namespace) {
        throw new HttpError(
          statusObject(400, 'the namespace of the provided object does not match the namespace sent on the request'),
        );
      }
      meta.namespace = namespace;
      if ((meta.name === undefined || meta.name === '') && typeof meta.generateName === 'string' && meta.generateName !== '') {
        meta.name = meta.generateName + randomSuffix();
      }
      if (typeof meta.name !== 'string' || meta.name === '') {
        throw new HttpError(statusObject(422, 'Event "" is invalid: metadata.name: Required value: name or generateName is required'));
      }
      const key = `${namespace}/${meta.name}`;
      if (this.eventStore.has(key)) {
        throw new HttpError(
          statusObject(409, `events "${meta.name}" already exists`, 'AlreadyExists', { name: meta.name, kind: 'events' }),
        );
      }
      event.kind ??= 'Event';
      event.apiVersion ??= apiVersion;
      meta.uid = randomUUID();
      meta.creationTimestamp = nowTimestamp();
      this.rv += 1;
      meta.resourceVersion = String(this.rv);
      this.eventStore.set(key, event);
      this.sendJson(res, 201, event);
      return true;
    }
    if (rest.length === 1 && method === 'PATCH') {
      const name = rest[0]!;
      const key = `${namespace}/${name}`;
      const prev = this.eventStore.get(key);
      if (prev === undefined) {
        throw new HttpError(statusObject(404, `events "${name}" not found`, 'NotFound', { name, kind: 'events' }));
      }
      const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
      const patch = this.parseBody(body);
      let next: unknown;
      if (type === 'application/json-patch+json') next = jsonPatch(clone(prev), patch);
      else if (type === 'application/merge-patch+json' || type === 'application/strategic-merge-patch+json') {
        next = mergePatch(clone(prev), patch);
      } else {
        throw new HttpError(statusObject(415, `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`));
      }
      if (!isRecord(next)) throw new HttpError(statusObject(422, 'patch produced a non-object'));
      const event = next as KubeObject;
      if (!isRecord(event.metadata)) event.metadata = {};
      event.metadata.name = prev.metadata.name;
      event.metadata.namespace = prev.metadata.namespace;
      event.metadata.uid = prev.metadata.uid;
      event.metadata.creationTimestamp = prev.metadata.creationTimestamp;
      this.rv += 1;
      event.metadata.resourceVersion = String(this.rv);
      this.eventStore.set(key, event);
      this.sendJson(res, 200, event);
      return true;
    }
    return false;
  }

  /**
   * PATCH /api/v1/nodes/{name}, as the real server applies it: to the stored node at the moment
   * of the write (so a JSON Patch `test` sees any concurrent change and fails the whole patch
   * with 422, nothing applied), then a new resourceVersion and a MODIFIED event. JSON Patch,
   * merge patch, or strategic merge patch (treated as a merge patch: lists are replaced whole).
   */
  private patchNode(name: string, contentType: string | undefined, patch: unknown): KubeObject {
    this.beforeNodePatch?.();
    this.beforeNodePatch = undefined;
    const prev = this.nodes.get(name);
    if (prev === undefined) throw new HttpError(statusObject(404, `nodes "${name}" not found`, 'NotFound', { name, kind: 'nodes' }));
    const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
    let next: unknown;
    if (type === 'application/json-patch+json') next = jsonPatch(clone(prev), patch);
    else if (type === 'application/merge-patch+json' || type === 'application/strategic-merge-patch+json') next = mergePatch(clone(prev), patch);
    else throw new HttpError(statusObject(415, 'the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json'));
    if (!isRecord(next) || !isRecord(next['metadata'])) throw new HttpError(statusObject(422, 'patch produced a non-object'));
    const rv = (next['metadata'] as ObjectMeta).resourceVersion;
    // A resourceVersion in the patched object is a precondition (optimistic concurrency).
    if (rv !== undefined && rv !== prev.metadata.resourceVersion) {
      throw new HttpError(statusObject(409, `Operation cannot be fulfilled on nodes "${name}": the object has been modified; please apply your changes to the latest version and try again`, 'Conflict', { name, kind: 'nodes' }));
    }
    const stored = this.update('nodes', name, (node) => {
      for (const k of Object.keys(node)) delete node[k];
      Object.assign(node, next);
    });
    this.nodePatchLog.push({ time: Date.now(), name, resourceVersion: stored.metadata.resourceVersion!, contentType: type, patch: clone(patch) });
    return stored;
  }

  /** POST /api/v1/namespaces/{ns}/pods: 201 with the stored pod (generateName honoured), 409 when the name is taken. */
  private createPodRequest(namespace: string, parsed: unknown): KubeObject {
    if (!isRecord(parsed)) throw new HttpError(statusObject(400, 'request body must be a JSON object'));
    const pod = parsed as KubeObjectInput & { metadata?: ObjectMeta };
    const meta: ObjectMeta = isRecord(pod.metadata) ? { ...pod.metadata } : {};
    if (meta.namespace !== undefined && meta.namespace !== '' && meta.namespace !== namespace) {
      throw new HttpError(statusObject(400, 'the namespace of the provided object does not match the namespace sent on the request', 'BadRequest'));
    }
    meta.namespace = namespace;
    if ((meta.name === undefined || meta.name === '') && typeof meta.generateName === 'string' && meta.generateName !== '') meta.name = meta.generateName + randomSuffix();
    if (typeof meta.name !== 'string' || meta.name === '') throw new HttpError(statusObject(422, 'Pod "" is invalid: metadata.name: Required value: name or generateName is required', 'Invalid'));
    if (this.pods.has(`${namespace}/${meta.name}`)) throw new HttpError(statusObject(409, `pods "${meta.name}" already exists`, 'AlreadyExists', { name: meta.name, kind: 'pods' }));
    // The server owns these (a client's values are dropped), and a new pod has no status yet.
    delete meta.uid;
    delete meta.resourceVersion;
    delete meta.creationTimestamp;
    return this.createPod({ ...pod, metadata: meta, status: {} } as KubeObjectInput);
  }

  /**
   * PATCH /api/v1/namespaces/{ns}/pods/{name}/status, as the kubelet reports a pod (phase, podIP,
   * podIPs): only `status` changes. Merge patch (a strategic merge patch is treated as one).
   */
  private patchPodStatus(namespace: string, name: string, contentType: string | undefined, patch: unknown): KubeObject {
    if (!this.pods.has(`${namespace}/${name}`)) throw new HttpError(statusObject(404, `pods "${name}" not found`, 'NotFound', { name, kind: 'pods' }));
    const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/merge-patch+json' && type !== 'application/strategic-merge-patch+json') {
      throw new HttpError(statusObject(415, 'the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json'));
    }
    if (!isRecord(patch)) throw new HttpError(statusObject(400, 'request body must be a JSON object'));
    return this.updatePod(namespace, name, (pod) => {
      pod.status = mergePatch(pod.status ?? {}, patch['status'] ?? {}) as Record<string, unknown>;
    });
  }

  private parseBody(body: string): unknown {
    try {
      return JSON.parse(body);
    } catch {
      throw new HttpError(statusObject(400, 'request body is not valid JSON'));
    }
  }
}
