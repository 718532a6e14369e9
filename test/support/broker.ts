/**
 * Broker mode on loopback, for integration tests: `podiam broker` replicas (real TLS, openssl-made
 * certificates), node agents started with --broker (no AWS credentials in their environment),
 * the agents' ServiceAccount and pods, and their tokens from the test API server's TokenRequest.
 * Every process is the real CLI (dist/podiam.js); a module-load hook records which bundle files
 * a process read, so a test can prove the agent never loaded the AWS SDK.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './net.js';
import { PodiamProcess, ROOT, awsTestEnv } from './podiam-process.js';
import { makeCa, makeServingCertificate } from './webhook.js';
import type { World } from './world.js';
import { BASE_ARN, NODE } from './world.js';

export const AGENT_NAMESPACE = 'kube-system';
export const AGENT_SA = 'podiam';
export const AGENT_AUDIENCE = 'podiam-broker';

const HOOKS = `import { appendFileSync } from 'node:fs';
export async function load(url, context, next) {
  if (process.env.PODIAM_TEST_LOADED) appendFileSync(process.env.PODIAM_TEST_LOADED, url + '\\n');
  return next(url, context);
}
`;

export class BrokerLab {
  readonly dir = mkdtempSync(path.join(os.tmpdir(), 'podiam-broker-'));
  readonly ca: Buffer;
  readonly cert: { certFile: string; keyFile: string };
  private readonly register: string;
  private files = 0;

  constructor(readonly world: World) {
    this.ca = makeCa(this.dir);
    this.cert = makeServingCertificate(this.dir, 'broker', 'podiam-broker');
    writeFileSync(path.join(this.dir, 'hooks.mjs'), HOOKS);
    this.register = path.join(this.dir, 'register.mjs');
    writeFileSync(this.register, `import { register } from 'node:module';\nregister(${JSON.stringify(new URL(`file://${path.join(this.dir, 'hooks.mjs')}`).href)});\n`);
    if (world.kube.getNamespace(AGENT_NAMESPACE) === undefined) world.kube.createNamespace({ metadata: { name: AGENT_NAMESPACE } });
    world.kube.createServiceAccount({ metadata: { name: AGENT_SA, namespace: AGENT_NAMESPACE } });
  }

  get caFile(): string {
    return path.join(this.dir, 'ca.crt');
  }

  /** A file for a process's loaded-modules list. */
  loadedFile(name: string): string {
    return path.join(this.dir, `${name}.loaded`);
  }

  /** The bundle files (relative to dist/) a process read, from its loaded-modules list. */
  loaded(name: string): string[] {
    let text = '';
    try {
      text = readFileSync(this.loadedFile(name), 'utf8');
    } catch {
      return [];
    }
    const dist = `file://${path.join(ROOT, 'dist')}/`;
    return text.split('\n').filter((u) => u.startsWith(dist)).map((u) => u.slice(dist.length));
  }

  /** The bundle's chunk files that hold the AWS SDK's STS client (from the build's metafile). */
  sdkChunks(): string[] {
    const meta = JSON.parse(readFileSync(path.join(ROOT, 'dist/podiam.meta.json'), 'utf8')) as { outputs: Record<string, { inputs: Record<string, unknown> }> };
    return Object.entries(meta.outputs)
      .filter(([file, out]) => file.endsWith('.js') && Object.keys(out.inputs).some((i) => i.includes('node_modules/@aws-sdk/client-sts/')))
      .map(([file]) => path.relative('dist', file));
  }

  /** The agent pod of a node (hostNetwork, the agents' ServiceAccount) and its broker token in a file. */
  agentToken(node: string, opts: { podName?: string } = {}): string {
    const podName = opts.podName ?? `podiam-${node}`;
    if (this.world.kube.getPod(AGENT_NAMESPACE, podName) === undefined) {
      this.world.kube.createPod({
        metadata: { name: podName, namespace: AGENT_NAMESPACE },
        spec: { nodeName: node, hostNetwork: true, serviceAccountName: AGENT_SA, containers: [{ name: 'podiam', image: 'podiam' }] },
        status: { phase: 'Running', podIP: '127.0.0.1', podIPs: [{ ip: '127.0.0.1' }] },
      });
    }
    return this.world.kube.tokenApi.issue({ namespace: AGENT_NAMESPACE, serviceAccount: AGENT_SA, pod: podName, audiences: [AGENT_AUDIENCE], expirationSeconds: 3600 });
  }

  tokenFile(token: string): string {
    const file = path.join(this.dir, `token-${++this.files}`);
    writeFileSync(file, token);
    return file;
  }

  /** A `podiam broker` replica; resolves when its /readyz is 200. */
  async broker(extraArgs: readonly string[] = [], opts: { port?: number; name?: string } = {}): Promise<{ process: PodiamProcess; port: number; url: string }> {
    const port = opts.port ?? (await freePort());
    const metricsPort = await freePort();
    const args = [
      'broker',
      `--port=${port}`,
      `--metrics-port=${metricsPort}`,
      '--host=127.0.0.1',
      `--tls-cert-file=${this.cert.certFile}`,
      `--tls-key-file=${this.cert.keyFile}`,
      `--api-server=${this.world.kube.url}`,
      '--insecure',
      `--base-role-arn=${BASE_ARN}`,
      '--shutdown-delay=0s',
      '--log-format=json',
      ...extraArgs,
    ];
    const env = { ...awsTestEnv(this.world.sts.url), NODE_OPTIONS: `--import=${this.register}`, PODIAM_TEST_LOADED: this.loadedFile(opts.name ?? `broker-${port}`) };
    const process = await PodiamProcess.start(args, env, { port: metricsPort });
    return { process, port, url: `https://127.0.0.1:${port}` };
  }

  /**
   * A node agent in broker mode: no --base-role-arn or other role policy flag, and no AWS
   * variable at all in its environment.
   */
  async agent(brokers: readonly string[], tokenFile: string, extraArgs: readonly string[] = [], opts: { node?: string; name?: string; port?: number } = {}): Promise<PodiamProcess> {
    const port = opts.port ?? (await freePort());
    const args = [
      `--app-port=${port}`,
      '--host-ip=127.0.0.1',
      `--metadata-addr=127.0.0.1:${this.world.imds.port}`,
      `--api-server=${this.world.kube.url}`,
      '--insecure',
      `--node=${opts.node ?? NODE}`,
      `--broker=${brokers.join(',')}`,
      `--broker-ca-file=${this.caFile}`,
      `--broker-token-file=${tokenFile}`,
      '--broker-timeout=2s',
      '--log-format=json',
      ...extraArgs,
    ];
    const env = { PATH: process.env.PATH, HOME: process.env.HOME, NODE_OPTIONS: `--import=${this.register}`, PODIAM_TEST_LOADED: this.loadedFile(opts.name ?? `agent-${port}`) };
    return PodiamProcess.start(args, env, { port });
  }

  /** A request to a broker as an agent (or an impostor) would make it: real TLS, verified against the test CA. */
  ask(brokerUrl: string, path: string, token: string | undefined, body: unknown): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const payload = Buffer.from(JSON.stringify(body));
      const req = https.request(new URL(path, brokerUrl), { method: 'POST', ca: this.ca, agent: false, headers: { 'Content-Type': 'application/json', 'Content-Length': payload.length, ...(token === undefined ? {} : { Authorization: `Bearer ${token}` }) } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      req.end(payload);
    });
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
