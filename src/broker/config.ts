/**
 * `podiam broker` flags, parsed once into a frozen, typed BrokerConfig. The role policy flags
 * and the Kubernetes connection flags are the node agent's own definitions (role-policy-flags.ts,
 * flags.ts): the same spelling means the same thing in both processes.
 */
import type { LogFormat, LogLevel } from '../config.js';
import type { FlagSpec } from '../flags.js';
import { KUBE_CONNECTION_FLAGS, flagReaders, kubeConnection, splitFlags } from '../flags.js';
import type { KubeConnection } from '../kube/api.js';
import type { RolePolicyConfig } from '../role-policy-flags.js';
import { ROLE_POLICY_FLAGS, rolePolicyConfig } from '../role-policy-flags.js';

export interface BrokerConfig extends RolePolicyConfig, KubeConnection {
  /** HTTPS port for agents (POST /v1/credentials, /v1/role). */
  readonly port: number;
  readonly host: string | undefined;
  /** Plain HTTP port for /healthz, /readyz and /metrics. */
  readonly metricsPort: number;
  readonly tlsCertFile: string;
  readonly tlsKeyFile: string;
  readonly tlsReloadMs: number;
  /** The node agents' ServiceAccount: only its tokens are agents' tokens. */
  readonly agentServiceAccount: { readonly namespace: string; readonly name: string };
  /** The audience of the agents' projected tokens. */
  readonly agentAudience: string;
  /** The audience of pods' tokens on the token path (the agents' --token-audience). */
  readonly tokenAudience: string;
  /** Background AssumeRole calls per second (start-up prefetch, refresh ahead); a pod's request is never held back. */
  readonly stsQps: number;
  /** --peers: the replicas share one cache (src/broker/peers.ts); undefined: each replica calls STS for every pod. */
  readonly peers: PeersConfig | undefined;
  readonly watchDeadlineMs: number;
  readonly shutdownDelayMs: number;
  readonly logFormat: LogFormat;
  readonly logLevel: LogLevel;
}

export interface PeersConfig {
  /** The brokers' namespace and ServiceAccount: their running pods are the replicas. */
  readonly namespace: string;
  readonly serviceAccount: string;
  /** This replica's pod name. */
  readonly podName: string;
  /** The DNS name the replicas' serving certificate is verified against. */
  readonly tlsName: string;
  readonly caFile: string;
  /** This replica's projected token (audience --agent-audience), re-read on every use. */
  readonly tokenFile: string;
}

export type BrokerCliRequest = { readonly kind: 'run'; readonly config: BrokerConfig } | { readonly kind: 'help' };

export const BROKER_FLAGS: readonly FlagSpec[] = [
  { name: 'port', type: 'port', default: '8443', example: '--port=8443', help: 'HTTPS port agents ask for credentials on (POST /v1/credentials)' },
  { name: 'host', type: 'string', example: '--host=0.0.0.0', help: 'address to listen on (default: all)' },
  { name: 'metrics-port', type: 'port', default: '9191', example: '--metrics-port=9191', help: 'plain HTTP port for /healthz, /readyz and /metrics' },
  { name: 'tls-cert-file', type: 'string', default: '/etc/podiam/broker/tls/tls.crt', example: '--tls-cert-file=/etc/podiam/broker/tls/tls.crt', help: 'serving certificate (PEM, chain allowed); reloaded when it changes' },
  { name: 'tls-key-file', type: 'string', default: '/etc/podiam/broker/tls/tls.key', example: '--tls-key-file=/etc/podiam/broker/tls/tls.key', help: 'private key of the serving certificate (PEM)' },
  { name: 'tls-reload-interval', type: 'duration', default: '10s', example: '--tls-reload-interval=10s', help: 'how often the certificate files are checked for a new certificate' },
  { name: 'agent-service-account', type: 'string', default: 'kube-system/podiam', example: '--agent-service-account=kube-system/podiam', help: "the node agents' ServiceAccount (<namespace>/<name>): any other ServiceAccount's token is refused" },
  { name: 'agent-audience', type: 'string', default: 'podiam-broker', example: '--agent-audience=podiam-broker', help: "audience of the agents' projected ServiceAccount tokens" },
  { name: 'token-audience', type: 'string', default: 'pods.eks.amazonaws.com', example: '--token-audience=pods.eks.amazonaws.com', help: "audience of pods' tokens on the token path (the agents' --token-audience)" },
  { name: 'sts-qps', type: 'string', default: '10', example: '--sts-qps=10', help: 'background AssumeRole calls per second (start-up prefetch, refresh ahead); a request a pod waits on goes first' },
  ...ROLE_POLICY_FLAGS,
  ...KUBE_CONNECTION_FLAGS,
  { name: 'peers', type: 'string', example: '--peers=kube-system/podiam-broker', help: "the replicas share one cache: <namespace>/<ServiceAccount> of the broker's own pods; each set of credentials is fetched from STS by one replica only, the others ask it" },
  { name: 'pod-name', type: 'string', example: '--pod-name=$(POD_NAME)', help: "with --peers: this replica's pod name (the downward API's metadata.name)" },
  { name: 'peer-tls-name', type: 'string', example: '--peer-tls-name=podiam-broker.kube-system.svc', help: "with --peers: the DNS name of the broker's serving certificate that replicas verify each other against" },
  { name: 'peer-ca-file', type: 'string', default: '/etc/podiam/broker/ca/ca.crt', example: '--peer-ca-file=/etc/podiam/broker/ca/ca.crt', help: "with --peers: CA certificate (PEM) the other replicas' serving certificate must chain to" },
  { name: 'peer-token-file', type: 'string', default: '/var/run/secrets/podiam/peer/token', example: '--peer-token-file=/var/run/secrets/podiam/peer/token', help: "with --peers: this replica's projected ServiceAccount token (audience --agent-audience), re-read on every use" },
  { name: 'watch-deadline', type: 'duration', default: '55s', example: '--watch-deadline=55s', help: 'a Kubernetes watch silent this long is replaced (relist + watch); at most 60s' },
  { name: 'shutdown-delay', type: 'duration', default: '5s', example: '--shutdown-delay=5s', help: 'on SIGTERM, keep answering (while not ready) this long before closing' },
  { name: 'log-format', type: 'enum', default: 'text', values: ['text', 'json'], example: '--log-format=json', help: 'log format' },
  { name: 'log-level', type: 'enum', default: 'info', values: ['error', 'warn', 'info', 'debug'], example: '--log-level=info', help: 'log level' },
  { name: 'help', type: 'bool', default: 'false', example: '--help', help: 'print this help and exit' },
];

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export function parseBrokerConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): BrokerCliRequest {
  const raw = splitFlags(argv, BROKER_FLAGS, 'podiam broker');
  const readers = flagReaders(raw, BROKER_FLAGS);
  const { fail, bool, str, port, duration, oneOf } = readers;
  for (const spec of BROKER_FLAGS) if (raw.has(spec.name) && spec.type === 'bool') bool(spec.name);
  if (bool('help')) return { kind: 'help' };

  const sa = str('agent-service-account')!;
  const [namespace, name, ...rest] = sa.split('/');
  if (rest.length > 0 || namespace === undefined || name === undefined || !DNS_LABEL.test(namespace) || !DNS_SUBDOMAIN.test(name)) {
    fail('agent-service-account', `${JSON.stringify(sa)} is not <namespace>/<name> of a ServiceAccount`);
  }
  const audience = (flag: string): string => {
    const v = str(flag)!;
    if (!/^[\x21-\x7e]{1,256}$/.test(v) || v.includes(',')) fail(flag, `${JSON.stringify(v)} must be one audience: 1-256 printable characters, no spaces or commas`);
    return v;
  };
  const qpsText = str('sts-qps')!;
  const stsQps = Number(qpsText);
  if (!/^\d+(\.\d+)?$/.test(qpsText) || !(stsQps >= 0.1 && stsQps <= 1000)) fail('sts-qps', `${JSON.stringify(qpsText)} is not a rate between 0.1 and 1000 calls per second`);

  const peers = peersConfig(readers);
  const config: BrokerConfig = {
    port: port('port')!,
    host: str('host'),
    metricsPort: port('metrics-port')!,
    tlsCertFile: str('tls-cert-file')!,
    tlsKeyFile: str('tls-key-file')!,
    tlsReloadMs: duration('tls-reload-interval', 100, 3_600_000),
    agentServiceAccount: Object.freeze({ namespace: namespace!, name: name! }),
    agentAudience: audience('agent-audience'),
    tokenAudience: audience('token-audience'),
    stsQps,
    ...rolePolicyConfig(readers, env),
    ...kubeConnection(readers, env),
    peers,
    watchDeadlineMs: duration('watch-deadline', 1000, 60_000),
    shutdownDelayMs: duration('shutdown-delay', 0, 60_000),
    logFormat: oneOf<LogFormat>('log-format'),
    logLevel: oneOf<LogLevel>('log-level'),
  };
  if (config.port === config.metricsPort) fail('metrics-port', `must differ from --port (${config.port})`);
  if (config.agentAudience === config.tokenAudience) fail('agent-audience', `must differ from --token-audience (${config.tokenAudience}): a pod's token must never pass for an agent's`);
  if (peers !== undefined && peers.namespace === config.agentServiceAccount.namespace && peers.serviceAccount === config.agentServiceAccount.name) {
    fail('peers', `must differ from --agent-service-account (${peers.namespace}/${peers.serviceAccount}): an agent's token must never pass for a replica's, which may ask for any role`);
  }
  return { kind: 'run', config: Object.freeze(config) };
}

/** --peers and its companions; the companions are checked only with it. */
function peersConfig({ fail, str }: ReturnType<typeof flagReaders>): PeersConfig | undefined {
  const text = str('peers');
  if (text === undefined) {
    for (const flag of ['pod-name', 'peer-tls-name']) if (str(flag) !== undefined) fail(flag, 'is used only with --peers');
    return undefined;
  }
  const [namespace, serviceAccount, ...rest] = text.split('/');
  if (rest.length > 0 || namespace === undefined || serviceAccount === undefined || !DNS_LABEL.test(namespace) || !DNS_SUBDOMAIN.test(serviceAccount)) {
    return fail('peers', `${JSON.stringify(text)} is not <namespace>/<name> of the brokers' ServiceAccount`);
  }
  const podName = str('pod-name') ?? fail('pod-name', "is required with --peers (this replica's pod name: env POD_NAME from the downward API's metadata.name)");
  if (!DNS_SUBDOMAIN.test(podName)) fail('pod-name', `${JSON.stringify(podName)} is not a pod name`);
  const tlsName = str('peer-tls-name') ?? fail('peer-tls-name', "is required with --peers (a DNS name of the broker's serving certificate, e.g. podiam-broker.kube-system.svc)");
  if (!DNS_SUBDOMAIN.test(tlsName)) fail('peer-tls-name', `${JSON.stringify(tlsName)} is not a DNS name`);
  return Object.freeze({ namespace, serviceAccount, podName, tlsName, caFile: str('peer-ca-file')!, tokenFile: str('peer-token-file')! });
}

export function brokerHelpText(): string {
  const lines = [
    'Usage: podiam broker [flags]',
    '',
    "The cluster's credential broker: the only process that calls STS. Node agents started with",
    "--broker ask it for their pods' credentials, authenticated by their own ServiceAccount token;",
    "each agent is served only the pods of its own node.",
    '',
    'Flags:',
  ];
  for (const f of BROKER_FLAGS) {
    const def = f.default !== undefined && f.type !== 'bool' ? ` (default ${f.default})` : '';
    const compat = f.compat ? ` [kube2iam compatibility: ${f.compat}]` : '';
    lines.push(`  --${f.name.padEnd(30)} ${f.help}${def}${compat}`);
  }
  return lines.join('\n') + '\n';
}

/** A loggable view of the config: never the API token. */
export function describeBrokerConfig(config: BrokerConfig): Record<string, unknown> {
  return { ...config, apiToken: config.apiToken === undefined ? undefined : '<redacted>' };
}
