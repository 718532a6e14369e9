/**
 * Moto: runs `moto_server -H 127.0.0.1 -p <free port>` (moto 5.x) for tests that need a
 * real-ish STS. Loopback only.
 *
 *   const moto = await Moto.start();
 *   new STSClient({ endpoint: moto.url, region: 'us-east-1', credentials: Moto.credentials });
 *   await moto.stop();
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import http from 'node:http';
import { freePort, hostUrl } from './net.js';

export interface MotoOptions {
  /** Executable. Default `moto_server` (from PATH), or env MOTO_SERVER. */
  command?: string;
  /** How long to wait for the server to answer. Default 20000 ms. */
  startTimeoutMs?: number;
}

const HOST = '127.0.0.1';
const OUTPUT_LIMIT = 16_384;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One GET; resolves with the status code, or undefined if the connection failed. */
function probe(url: string, timeoutMs = 1000): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

export class Moto {
  /** Static credentials moto accepts (it does not check signatures by default). */
  static readonly credentials = { accessKeyId: 'testing', secretAccessKey: 'testing' } as const;
  static readonly region = 'us-east-1';
  static readonly accountId = '123456789012';

  readonly url: string;
  readonly port: number;
  private exited: Promise<void>;
  private exitedFlag = false;
  private spawnError: Error | undefined;
  private output = '';
  private readonly onProcessExit = (): void => this.killGroup('SIGKILL');

  private constructor(
    private readonly child: ChildProcess,
    port: number,
  ) {
    this.port = port;
    this.url = hostUrl(HOST, port);
    this.exited = new Promise<void>((resolve) => {
      const done = (): void => {
        this.exitedFlag = true;
        process.off('exit', this.onProcessExit);
        resolve();
      };
      child.once('exit', done);
      // A failed spawn (e.g. ENOENT) emits 'error' and never 'exit'.
      child.once('error', (err) => {
        this.spawnError = err;
        if (child.pid === undefined) done();
      });
    });
    const capture = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString('utf8')).slice(-OUTPUT_LIMIT);
    };
    child.stdout?.on('data', capture);
    child.stderr?.on('data', capture);
    // Never leave moto behind, even if a test forgets stop() or the runner exits.
    process.on('exit', this.onProcessExit);
  }

  /** Environment for a child process (e.g. the agent) that should use this moto for STS. */
  get env(): Record<string, string> {
    return {
      AWS_ACCESS_KEY_ID: Moto.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: Moto.credentials.secretAccessKey,
      AWS_REGION: Moto.region,
      AWS_DEFAULT_REGION: Moto.region,
      AWS_ENDPOINT_URL_STS: this.url,
    };
  }

  /** Last lines of moto's stdout/stderr, for diagnostics. */
  get logs(): string {
    return this.output;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  static async start(opts: MotoOptions = {}): Promise<Moto> {
    const command = opts.command ?? process.env['MOTO_SERVER'] ?? 'moto_server';
    const deadline = Date.now() + (opts.startTimeoutMs ?? 20_000);
    let lastError: Error | undefined;
    // A free port can be taken between freePort() and moto's bind; retry a few times.
    for (let attempt = 0; attempt < 3 && Date.now() < deadline; attempt++) {
      const port = await freePort(HOST);
      const child = spawn(command, ['-H', HOST, '-p', String(port)], {
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true, // own process group, so stop() also reaches any wrapper's children
        env: {
          ...process.env,
          AWS_ACCESS_KEY_ID: 'testing',
          AWS_SECRET_ACCESS_KEY: 'testing',
          AWS_SECURITY_TOKEN: 'testing',
          AWS_SESSION_TOKEN: 'testing',
          AWS_DEFAULT_REGION: Moto.region,
          PYTHONUNBUFFERED: '1',
        },
      });
      const moto = new Moto(child, port);
      while (Date.now() < deadline && !moto.exitedFlag && moto.spawnError === undefined) {
        const status = await probe(`${moto.url}/moto-api/`);
        if (status !== undefined && status < 500) return moto;
        await sleep(100);
      }
      const spawnError = moto.spawnError;
      lastError =
        spawnError ??
        new Error(
          moto.exitedFlag
            ? `moto_server exited during startup:\n${moto.output}`
            : `moto_server did not answer within the start timeout:\n${moto.output}`,
        );
      await moto.stop();
      if (spawnError !== undefined) break;
    }
    throw lastError ?? new Error('moto_server failed to start');
  }

  /** POST /moto-api/reset: forget all state. */
  async reset(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const req = http.request(`${this.url}/moto-api/reset`, { method: 'POST', agent: false }, (res) => {
        res.resume();
        res.on('end', () =>
          res.statusCode === 200 ? resolve() : reject(new Error(`moto reset: HTTP ${res.statusCode}`)),
        );
      });
      req.on('error', reject);
      req.end();
    });
  }

  /** SIGTERM, wait for exit, SIGKILL after 3 s. */
  async stop(): Promise<void> {
    if (this.exitedFlag) return;
    this.killGroup('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), 3000);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      this.killGroup('SIGKILL');
      await this.exited;
    }
    this.child.stdout?.destroy();
    this.child.stderr?.destroy();
  }

  private killGroup(signal: NodeJS.Signals): void {
    const pid = this.child.pid;
    if (pid === undefined || this.exitedFlag) return;
    try {
      process.kill(-pid, signal);
    } catch {
      try {
        this.child.kill(signal);
      } catch {
        // already gone
      }
    }
  }
}
