/**
 * Broker mode in the node lab (test/support/lab.ts): `podiam broker` replicas as their own
 * processes on the first node, with an AWS key of their own, and agents (one per node) that ask
 * them for their pods' credentials.
 *
 *   - STS is the lab's STS proxy (LabOptions.stsProxy) in front of moto, refusing every
 *     AssumeRole signed with a node key (NODE_KEYS: what an agent or a hostNetwork pod of a node
 *     can get, the lab's static node key and the fake IMDS's node-role credentials): only the
 *     broker's key (BROKER_ACCESS_KEY_ID) assumes pod roles, as the README's trust policies say.
 *   - The agents get the node key too (brokerAgentEnv()): if one ever called STS itself, the
 *     proxy would refuse it and count it.
 *   - TLS: a lab CA and a serving certificate for the first node's address; agents get the CA.
 *   - Each agent authenticates with the token of its pod kube-system/podiam-<node>
 *     (LabOptions.agentPods, Lab.agentTokenFile()).
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { HttpAnswer, Lab, LabProcess } from './lab.js';
import { AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, BASE_ROLE_ARN, BROKER_AUDIENCE, NODE_IP, SYSTEM_PATH, sleep } from './lab.js';
import { NODE_ACCESS_KEY_ID } from './imds-server.js';
import { metricSum } from './metrics-text.js';
import { podiamArgv, shebangEnv } from './podiam-process.js';
import { makeCa, makeServingCertificate } from './webhook.js';

/**
 * The brokers' own AWS keys, one a replica (as IRSA gives each replica a session of its own):
 * the broker's role is the one principal the pod roles trust.
 */
export const BROKER_KEYS: readonly string[] = ['AKIALABBROKER0000001', 'AKIALABBROKER0000002', 'AKIALABBROKER0000003'];
/** Replica 0's key. */
export const BROKER_ACCESS_KEY_ID = BROKER_KEYS[0]!;
/** The keys a node holds (the lab agents' static key, the fake IMDS's node-role key): refused for AssumeRole. */
export const NODE_KEYS: readonly string[] = ['testing', NODE_ACCESS_KEY_ID];
/** Replica i listens on BROKER_PORT + i (https) and BROKER_METRICS_PORT + i (http: /healthz, /readyz, /metrics). */
export const BROKER_PORT = 8443;
export const BROKER_METRICS_PORT = 9191;

export interface LabBrokerTls {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

const tlsOf = new WeakMap<Lab, LabBrokerTls>();

/** The lab's broker CA and serving certificate (for the first node's address), made once per lab. */
export function brokerTls(lab: Lab): LabBrokerTls {
  let tls = tlsOf.get(lab);
  if (tls === undefined) {
    const dir = path.join(lab.dir, 'broker-tls');
    mkdirSync(dir, { recursive: true });
    makeCa(dir);
    const { certFile, keyFile } = makeServingCertificate(dir, 'broker', 'podiam-broker', [`IP:${NODE_IP}`, 'DNS:podiam-broker.kube-system.svc']);
    tls = { caFile: path.join(dir, 'ca.crt'), certFile, keyFile };
    tlsOf.set(lab, tls);
  }
  return tls;
}

/** Replica `replica`'s environment: its own key, STS at the lab's STS proxy, no IMDS lookups of its own. */
export function brokerEnv(lab: Lab, replica = 0): NodeJS.ProcessEnv {
  const key = BROKER_KEYS[replica];
  if (key === undefined) throw new Error(`the lab has keys for ${BROKER_KEYS.length} broker replicas`);
  return {
    PATH: SYSTEM_PATH,
    AWS_ACCESS_KEY_ID: key,
    AWS_SECRET_ACCESS_KEY: 'broker-secret',
    AWS_REGION: 'us-east-1',
    AWS_ENDPOINT_URL_STS: lab.stsUrl,
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    AWS_CONFIG_FILE: '/dev/null',
    AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
  };
}

/**
 * An agent's environment in broker mode: what a node has, the node key, and STS at the proxy
 * (which refuses that key): an agent that called STS itself would be refused and counted.
 */
export function brokerAgentEnv(lab: Lab): NodeJS.ProcessEnv {
  return { ...lab.podiamEnv(), AWS_ACCESS_KEY_ID: NODE_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: 'node-secret', AWS_ENDPOINT_URL_STS: lab.stsUrl };
}

export class LabBroker {
  constructor(
    readonly process: LabProcess,
    readonly lab: Lab,
    readonly replica: number,
    readonly args: readonly string[],
  ) {}

  get url(): string {
    return `https://${NODE_IP}:${BROKER_PORT + this.replica}`;
  }

  get metricsUrl(): string {
    return `http://${NODE_IP}:${BROKER_METRICS_PORT + this.replica}`;
  }

  get running(): boolean {
    return this.process.running;
  }

  output(): string {
    return this.process.output();
  }

  /** GET a path of the broker's metrics/health listener (from the first node). */
  get(urlPath: string): Promise<HttpAnswer> {
    return this.lab.curl(this.lab.nodeNs, `${this.metricsUrl}${urlPath}`);
  }

  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    return metricSum((await this.get('/metrics')).body, name, labels);
  }

  async waitReady(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running) throw new Error(`broker ${this.replica} exited before it was ready:\n${this.output()}`);
      const r = await this.get('/readyz').catch(() => undefined);
      if (r?.status === 200) return;
      if (Date.now() > deadline) throw new Error(`broker ${this.replica} was not ready within ${timeoutMs} ms:\n${this.output()}`);
      await sleep(100);
    }
  }

  stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 5_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.process.stop(signal, timeoutMs);
  }
}

/** `podiam broker`'s arguments in the lab (replica `replica`), the Deployment's plus the lab's API server and role policy. */
export function brokerArgs(lab: Lab, replica = 0, extra: readonly string[] = []): string[] {
  const tls = brokerTls(lab);
  return [
    'broker',
    `--host=${NODE_IP}`,
    `--port=${BROKER_PORT + replica}`,
    `--metrics-port=${BROKER_METRICS_PORT + replica}`,
    `--tls-cert-file=${tls.certFile}`,
    `--tls-key-file=${tls.keyFile}`,
    `--agent-service-account=${AGENT_NAMESPACE}/${AGENT_SERVICE_ACCOUNT}`,
    `--agent-audience=${BROKER_AUDIENCE}`,
    '--sts-qps=10', // the Deployment's: background prefetch paced, a pod's request first
    `--api-server=${lab.kubeUrl}`,
    '--insecure',
    `--base-role-arn=${BASE_ROLE_ARN}`,
    ...extra,
  ];
}

/** Starts broker replica `replica` on the first node (its own process, its own key). */
export async function startBroker(lab: Lab, opts: { replica?: number; extraArgs?: readonly string[]; env?: NodeJS.ProcessEnv; wait?: 'ready' | 'none' } = {}): Promise<LabBroker> {
  const replica = opts.replica ?? 0;
  const args = brokerArgs(lab, replica, opts.extraArgs);
  const proc = lab.spawnIn(lab.nodeNs, `broker-${replica}`, [process.execPath, ...podiamArgv(args)], { ...(opts.env ?? brokerEnv(lab, replica)), ...shebangEnv() });
  const broker = new LabBroker(proc, lab, replica, args);
  if ((opts.wait ?? 'ready') === 'ready') await broker.waitReady();
  return broker;
}

/**
 * An agent's broker flags on `node`, as the DaemonSet's broker patch sets them: the brokers'
 * addresses (failover in that order), the CA, the agent pod's token, the timeout.
 */
export async function brokerAgentArgs(lab: Lab, node: string, brokers: readonly LabBroker[], opts: { timeout?: string } = {}): Promise<string[]> {
  return [
    `--broker=${brokers.map((b) => b.url).join(',')}`,
    `--broker-ca-file=${brokerTls(lab).caFile}`,
    `--broker-token-file=${await lab.agentTokenFile(node)}`,
    `--broker-timeout=${opts.timeout ?? '2s'}`,
  ];
}
