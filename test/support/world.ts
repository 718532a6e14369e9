/**
 * A node's surroundings on loopback, for integration tests: the Kubernetes test API server,
 * a fake EC2 metadata service, moto_server as STS behind a counting proxy, and helpers to
 * start podiam against them with pods simulated on 127.x source addresses.
 */
import { STSClient, GetCallerIdentityCommand } from '@aws-sdk/client-sts';
import { FakeImds } from './imds-server.js';
import type { FakeImdsOptions } from './imds-server.js';
import { KubeApiServer } from './kube-api-server.js';
import type { KubeObject } from './kube-api-server.js';
import { Moto } from './moto.js';
import { freePort } from './net.js';
import { PodiamProcess, awsTestEnv } from './podiam-process.js';
import { StsProxy } from './sts-proxy.js';

export const ACCOUNT = '123456789012';
export const BASE_ARN = `arn:aws:iam::${ACCOUNT}:role/`;
export const NODE = 'node-1';

export class World {
  private readonly podiams: PodiamProcess[] = [];
  private ipCounter = 0;

  private constructor(
    readonly kube: KubeApiServer,
    readonly imds: FakeImds,
    readonly moto: Moto,
    readonly sts: StsProxy,
  ) {}

  static async start(opts: { imds?: FakeImdsOptions } = {}): Promise<World> {
    const [kube, imds, moto] = await Promise.all([KubeApiServer.start(), FakeImds.start(opts.imds), Moto.start()]);
    const sts = await StsProxy.start(moto.url);
    kube.createNamespace({ metadata: { name: 'default' } });
    kube.createServiceAccount({ metadata: { name: 'default', namespace: 'default' } });
    return new World(kube, imds, moto, sts);
  }

  /** A fresh simulated pod address, unique within this test run. */
  nextIp(): string {
    this.ipCounter++;
    return `127.10.${Math.floor(this.ipCounter / 250)}.${(this.ipCounter % 250) + 2}`;
  }

  pod(name: string, opts: { ip: string; role?: string; namespace?: string; node?: string; phase?: string; annotations?: Record<string, string>; hostNetwork?: boolean; serviceAccount?: string }): KubeObject {
    const annotations: Record<string, string> = { ...(opts.annotations ?? {}) };
    if (opts.role !== undefined) annotations['iam.amazonaws.com/role'] = opts.role;
    return this.kube.createPod({
      metadata: { name, namespace: opts.namespace ?? 'default', annotations },
      spec: { nodeName: opts.node ?? NODE, hostNetwork: opts.hostNetwork ?? false, ...(opts.serviceAccount === undefined ? {} : { serviceAccountName: opts.serviceAccount }), containers: [{ name: 'app', image: 'app' }] },
      status: { phase: opts.phase ?? 'Running', podIP: opts.ip, podIPs: [{ ip: opts.ip }] },
    });
  }

  async podiam(extraArgs: readonly string[] = [], opts: { waitReady?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<PodiamProcess> {
    const port = await freePort();
    const args = [
      `--app-port=${port}`,
      '--host-ip=127.0.0.1',
      `--metadata-addr=127.0.0.1:${this.imds.port}`,
      `--api-server=${this.kube.url}`,
      '--insecure',
      `--node=${NODE}`,
      `--base-role-arn=${BASE_ARN}`,
      '--log-format=json',
      ...extraArgs,
    ];
    const p = await PodiamProcess.start(args, { ...awsTestEnv(this.sts.url), ...opts.env }, { port, waitReady: opts.waitReady });
    this.podiams.push(p);
    return p;
  }

  /** GetCallerIdentity at moto with the credentials a pod got: proves they are real STS credentials. */
  async callerArn(creds: { AccessKeyId: string; SecretAccessKey: string; Token: string }): Promise<string> {
    const client = new STSClient({
      region: 'us-east-1',
      endpoint: this.moto.url,
      credentials: { accessKeyId: creds.AccessKeyId, secretAccessKey: creds.SecretAccessKey, sessionToken: creds.Token },
    });
    try {
      return (await client.send(new GetCallerIdentityCommand({}))).Arn ?? '';
    } finally {
      client.destroy();
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.podiams.map((p) => p.stop().catch(() => undefined)));
    await Promise.all([this.sts.stop(), this.imds.stop(), this.kube.stop()]);
    await this.moto.stop();
  }
}
