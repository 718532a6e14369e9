/**
 * A real Prometheus server (the `prometheus` binary, Debian's package) for integration tests:
 * on 127.0.0.1 with a free port, its own config and a temporary storage directory, stopped and
 * removed by stop(). Queries go through its HTTP API.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, httpRequest } from './net.js';
import { sleep } from './wait.js';

export interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface ApiAnswer<T> {
  status: 'success' | 'error';
  data: T;
  errorType?: string;
  error?: string;
  warnings?: string[];
}

export class PrometheusServer {
  private logs = '';
  private exited = false;

  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
    private readonly dir: string,
  ) {
    child.stdout!.on('data', (d: Buffer) => (this.logs += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.logs += d.toString()));
    child.on('exit', () => (this.exited = true));
  }

  /** Starts Prometheus with `config` (prometheus.yml) and `files` beside it, and waits for /-/ready. */
  static async start(config: string, files: Record<string, string> = {}, timeoutMs = 30_000): Promise<PrometheusServer> {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'podiam-prometheus-'));
    for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
    writeFileSync(path.join(dir, 'prometheus.yml'), config);
    const port = await freePort();
    const child = spawn(
      'prometheus',
      [
        `--config.file=${path.join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
    const server = new PrometheusServer(child, `http://127.0.0.1:${port}`, dir);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const failed = await Promise.race([spawnError, sleep(100).then(() => undefined)]);
      if (failed !== undefined) {
        rmSync(dir, { recursive: true, force: true });
        throw new Error(`prometheus could not start (${failed.message}): install the prometheus package (apt-get install prometheus)`);
      }
      if (server.exited || Date.now() > deadline) {
        await server.stop();
        throw new Error(`prometheus did not become ready:\n${server.logs}`);
      }
      const r = await httpRequest(`${server.url}/-/ready`, { timeoutMs: 2000 }).catch(() => undefined);
      if (r?.status === 200) return server;
    }
  }

  output(): string {
    return this.logs;
  }

  /** GET /api/v1/<endpoint> with query parameters; the parsed answer, whatever its status. */
  async api<T>(endpoint: string, params: Record<string, string | string[]> = {}): Promise<ApiAnswer<T>> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) for (const one of Array.isArray(v) ? v : [v]) q.append(k, one);
    const r = await httpRequest(`${this.url}/api/v1/${endpoint}?${q.toString()}`, { timeoutMs: 10_000 });
    return JSON.parse(r.body) as ApiAnswer<T>;
  }

  /** An instant query: its samples, or an Error with Prometheus's own message. */
  async query(expr: string): Promise<Sample[]> {
    const r = await this.api<{ resultType: string; result: Sample[] }>('query', { query: expr });
    if (r.status !== 'success') throw new Error(`${expr}: ${r.errorType}: ${r.error}`);
    if (r.data.resultType !== 'vector') throw new Error(`${expr}: a ${r.data.resultType}, not an instant vector`);
    return r.data.result;
  }

  async stop(): Promise<void> {
    if (!this.exited) {
      const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
