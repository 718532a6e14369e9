/**
 * A Kubernetes API server holding Namespaces and ServiceAccounts (GET only, as `podiam webhook`
 * reads them), on loopback, for the webhook's integration tests. Every request is recorded.
 */
import http from 'node:http';
import { freePort } from './net.js';

type Obj = Record<string, any>;

export class FakeApi {
  readonly namespaces = new Map<string, Obj>();
  readonly serviceAccounts = new Map<string, Obj>();
  readonly requests: string[] = [];
  delayMs = 0;
  private server = http.createServer((req, res) => {
    this.requests.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''}`);
    const reply = () => {
      const ns = /^\/api\/v1\/namespaces\/([^/]+)$/.exec(req.url ?? '');
      const sa = /^\/api\/v1\/namespaces\/([^/]+)\/serviceaccounts\/([^/]+)$/.exec(req.url ?? '');
      const obj = ns ? this.namespaces.get(ns[1]!) : sa ? this.serviceAccounts.get(`${sa[1]}/${sa[2]}`) : undefined;
      if (req.headers.authorization !== 'Bearer test-token') return send(res, 401, { kind: 'Status', code: 401 });
      if (obj === undefined) return send(res, 404, { kind: 'Status', code: 404, reason: 'NotFound' });
      send(res, 200, obj);
    };
    if (this.delayMs > 0) setTimeout(reply, this.delayMs);
    else reply();
  });
  port = 0;
  async start(): Promise<void> {
    this.port = await freePort();
    await new Promise<void>((r) => this.server.listen(this.port, '127.0.0.1', r));
  }
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
  namespace(name: string, labels: Record<string, string> = {}): void {
    this.namespaces.set(name, { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels } } });
  }
  serviceAccount(ns: string, name: string, annotations: Record<string, string> = {}): void {
    this.serviceAccounts.set(`${ns}/${name}`, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace: ns, annotations } });
  }
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

