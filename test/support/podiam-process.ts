/**
 * Runs the real podiam CLI (dist/podiam.js, the bundle that ships) as a child process, captures its logs, and sends
 * requests to it from simulated pod addresses (127.x.y.z bound as the source address).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, readSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { metricSum } from './metrics-text.js';

const HERE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The repository root, whether this file runs from test/support or from dist/test/support. */
export const ROOT = path.basename(HERE) === 'dist' ? path.dirname(HERE) : HERE;
/** The artifact: `npm run build` bundles src/ into this one file (scripts/build.mjs). */
export const CLI = path.join(ROOT, 'dist/podiam.js');

/** The artifact's shebang: `#!/usr/bin/env -S [NAME=VALUE ...] node [flags ...]`. */
function shebang(): { env: Record<string, string>; flags: string[] } {
  const fd = openSync(CLI, 'r');
  const head = Buffer.alloc(512);
  const n = readSync(fd, head, 0, head.length, 0);
  closeSync(fd);
  const m = /^#!\/usr\/bin\/env -S ((?:\w+=\S* )*)node([^\n]*)\n/.exec(head.subarray(0, n).toString('utf8'));
  if (!m) throw new Error(`${CLI} has no "#!/usr/bin/env -S [NAME=VALUE ...] node ..." line: run npm run build`);
  const env = Object.fromEntries(m[1]!.trim().split(/\s+/).filter(Boolean).map((a) => [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]));
  return { env, flags: m[2]!.trim().split(/\s+/).filter(Boolean) };
}

/** The Node flags the artifact's shebang starts it with (the image's ENTRYPOINT has the same). */
export function nodeFlags(): string[] {
  return shebang().flags;
}

/** The environment the shebang (and the image's ENV) adds: merged into every podiam the tests start. */
export function shebangEnv(): Record<string, string> {
  return shebang().env;
}

/** What follows the node binary to start podiam as its bin and its image do: flags, bundle, args. */
export function podiamArgv(args: readonly string[]): string[] {
  return [...nodeFlags(), CLI, ...args];
}

/** Environment that keeps the AWS SDK on loopback: static node credentials, no IMDS lookups. */
export function awsTestEnv(stsUrl: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
    AWS_REGION: 'us-east-1',
    AWS_ENDPOINT_URL_STS: stsUrl,
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    AWS_CONFIG_FILE: '/dev/null',
    AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
  };
}

export interface ExitResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion (for flag tests). */
export function runCli(args: readonly string[], env: NodeJS.ProcessEnv = { PATH: process.env.PATH }, timeoutMs = 15_000): Promise<ExitResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, podiamArgv(args), { env: { ...env, ...shebangEnv() }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`podiam ${args.join(' ')} did not exit within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export class PodiamProcess {
  private logs = '';
  private exitPromise: Promise<ExitResult>;

  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
    readonly host: string,
  ) {
    child.stdout!.on('data', (d: Buffer) => (this.logs += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.logs += d.toString()));
    this.exitPromise = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stdout: this.logs, stderr: '' })));
  }

  /** Starts podiam and waits until it listens (and, unless told otherwise, until /readyz is 200). */
  static async start(args: readonly string[], env: NodeJS.ProcessEnv, opts: { waitReady?: boolean; host?: string; port: number; timeoutMs?: number }): Promise<PodiamProcess> {
    const child = spawn(process.execPath, podiamArgv(args), { env: { ...env, ...shebangEnv() }, stdio: ['ignore', 'pipe', 'pipe'] });
    const p = new PodiamProcess(child, opts.port, opts.host ?? '127.0.0.1');
    const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
    let exited: ExitResult | undefined;
    void p.exitPromise.then((r) => (exited = r));
    for (;;) {
      if (exited) throw new Error(`podiam exited early (${exited.code ?? exited.signal}):\n${p.logs}`);
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`podiam did not become ${opts.waitReady === false ? 'listening' : 'ready'}:\n${p.logs}`);
      }
      const r = await p.get(opts.waitReady === false ? '/healthz' : '/readyz').catch(() => undefined);
      if (r?.status === 200) return p;
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  output(): string {
    return this.logs;
  }

  /** JSON log lines (podiam runs with --log-format=json in tests). */
  logLines(): Array<Record<string, unknown>> {
    return this.logs
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return {};
        }
      });
  }

  /** A request as a pod at `fromIp` would make it. */
  request(
    path: string,
    opts: { fromIp?: string; method?: string; headers?: http.OutgoingHttpHeaders; body?: string; timeoutMs?: number } = {},
  ): Promise<Response> {
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: this.host,
          port: this.port,
          path,
          method: opts.method ?? 'GET',
          headers: opts.headers,
          localAddress: opts.fromIp,
          agent: false,
          timeout: opts.timeoutMs ?? 10_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`timeout on ${path}`)));
      req.on('error', reject);
      req.end(opts.body);
    });
  }

  get(path: string, fromIp?: string): Promise<Response> {
    return this.request(path, { fromIp });
  }

  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    return metricSum((await this.get('/metrics')).body, name, labels);
  }

  /** SIGTERM and wait for the exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<ExitResult> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exitPromise;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const r = await this.exitPromise;
    clearTimeout(timer);
    return r;
  }

  exited(): Promise<ExitResult> {
    return this.exitPromise;
  }
}
