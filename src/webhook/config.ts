/**
 * `podiam webhook` flags, parsed once into a frozen, typed WebhookConfig. The webhook is a
 * separate process (a Deployment, not the node agent), so it has its own, short flag set; the
 * names it shares with the node agent mean the same thing there.
 */
import { ConfigError } from '../errors.js';
import type { LogFormat, LogLevel } from '../config.js';
import type { FlagSpec } from '../flags.js';
import { KUBE_CONNECTION_FLAGS, flagReaders, kubeConnection } from '../flags.js';

export interface WebhookConfig {
  /** HTTPS port for AdmissionReview requests (POST /mutate). */
  readonly port: number;
  /** Plain HTTP port for /healthz, /readyz and /metrics. */
  readonly metricsPort: number;
  readonly tlsCertFile: string;
  readonly tlsKeyFile: string;
  readonly tlsReloadMs: number;
  /** Only callers with a client certificate signed by this CA (PEM) are answered: the API server, configured to present one. */
  readonly clientCaFile: string | undefined;
  /** Audience of the projected ServiceAccount token; the node agent's --token-audience. */
  readonly tokenAudience: string;
  readonly roleKey: string;
  /** Pod annotation or label, and namespace label: "true" opts in, "false" opts out. */
  readonly optInKey: string;
  /** Inject every pod that has a role, unless it or its namespace opts out. */
  readonly injectAllWithRole: boolean;
  readonly lookupTimeoutMs: number;
  readonly cacheTtlMs: number;
  /** After SIGTERM: not ready, still serving, for this long (endpoints drop the replica first). */
  readonly shutdownDelayMs: number;
  readonly kubeconfig: string | undefined;
  readonly apiServer: string | undefined;
  readonly apiToken: string | undefined;
  readonly insecure: boolean;
  readonly logFormat: LogFormat;
  readonly logLevel: LogLevel;
}

export type WebhookCliRequest = { readonly kind: 'run'; readonly config: WebhookConfig } | { readonly kind: 'help' };


export const WEBHOOK_FLAGS: readonly FlagSpec[] = [
  { name: 'port', type: 'port', default: '8443', example: '--port=8443', help: 'HTTPS port for AdmissionReview requests (POST /mutate)' },
  { name: 'metrics-port', type: 'port', default: '8080', example: '--metrics-port=8080', help: 'plain HTTP port for /healthz, /readyz and /metrics' },
  { name: 'tls-cert-file', type: 'string', default: '/etc/podiam/webhook/tls/tls.crt', example: '--tls-cert-file=/etc/podiam/webhook/tls/tls.crt', help: 'serving certificate (PEM, chain allowed); reloaded when it changes' },
  { name: 'tls-key-file', type: 'string', default: '/etc/podiam/webhook/tls/tls.key', example: '--tls-key-file=/etc/podiam/webhook/tls/tls.key', help: 'private key of the serving certificate (PEM)' },
  { name: 'tls-reload-interval', type: 'duration', default: '10s', example: '--tls-reload-interval=10s', help: 'how often the certificate files are checked for a new certificate' },
  { name: 'client-ca-file', type: 'string', example: '--client-ca-file=/etc/podiam/webhook/client-ca/ca.crt', help: 'require a client certificate signed by this CA (PEM) on /mutate: only an API server configured to present one (AdmissionConfiguration kubeConfigFile) is answered (default: any caller)' },
  { name: 'token-audience', type: 'string', default: 'pods.eks.amazonaws.com', example: '--token-audience=pods.eks.amazonaws.com', help: 'audience of the injected ServiceAccount token (the node agent’s --token-audience)' },
  { name: 'iam-role-key', type: 'string', default: 'iam.amazonaws.com/role', example: '--iam-role-key=iam.amazonaws.com/role', help: 'pod or ServiceAccount annotation holding the role' },
  { name: 'opt-in-key', type: 'string', default: 'podiam.io/token-identity', example: '--opt-in-key=podiam.io/token-identity', help: 'pod annotation/label or namespace label: "true" opts in, "false" opts out' },
  { name: 'inject-all-with-role', type: 'bool', default: 'false', example: '--inject-all-with-role', help: 'inject every pod with a role unless it or its namespace opts out' },
  { name: 'lookup-timeout', type: 'duration', default: '1s', example: '--lookup-timeout=1s', help: 'timeout of one Namespace or ServiceAccount GET' },
  { name: 'cache-ttl', type: 'duration', default: '10s', example: '--cache-ttl=10s', help: 'how long a Namespace or ServiceAccount read is reused (0s: never)' },
  { name: 'shutdown-delay', type: 'duration', default: '5s', example: '--shutdown-delay=5s', help: 'on SIGTERM, keep answering (while not ready) this long before closing' },
  ...KUBE_CONNECTION_FLAGS,
  { name: 'log-format', type: 'enum', default: 'text', values: ['text', 'json'], example: '--log-format=json', help: 'log format' },
  { name: 'log-level', type: 'enum', default: 'info', values: ['error', 'warn', 'info', 'debug'], example: '--log-level=info', help: 'log level' },
  { name: 'help', type: 'bool', default: 'false', example: '--help', help: 'print this help and exit' },
];

/** A Kubernetes qualified name with an optional DNS prefix, as annotation and label keys are. */
const QUALIFIED_KEY = /^(?:[a-z0-9]([-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

export function parseWebhookConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): WebhookCliRequest {
  const specs = new Map(WEBHOOK_FLAGS.map((f) => [f.name, f]));
  const raw = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const m = /^--?([a-z][a-z0-9-]*)(?:=(.*))?$/s.exec(arg);
    if (!m) throw new ConfigError(arg, 'unexpected argument; flags look like --port=8443 (see podiam webhook --help)');
    const spec = specs.get(m[1]!);
    if (!spec) throw new ConfigError(`--${m[1]}`, 'unknown flag for podiam webhook, e.g. --port=8443; see podiam webhook --help');
    let value = m[2];
    if (value === undefined) {
      if (spec.type === 'bool') value = 'true';
      else if (i + 1 < argv.length) value = argv[++i]!;
      else throw new ConfigError(`--${spec.name}`, `needs a value, e.g. ${spec.example}`);
    }
    raw.set(spec.name, value);
  }
  const readers = flagReaders(raw, WEBHOOK_FLAGS);
  const { fail, bool, str, port: optionalPort, duration, oneOf } = readers;
  const port = (name: string): number => optionalPort(name)!;
  const key = (name: string): string => {
    const v = str(name)!;
    if (!QUALIFIED_KEY.test(v) || v.length > 316) fail(name, `${JSON.stringify(v)} is not an annotation key`);
    return v;
  };

  for (const name of raw.keys()) if (specs.get(name)!.type === 'bool') bool(name);
  if (bool('help')) return { kind: 'help' };

  const config: WebhookConfig = {
    port: port('port'),
    metricsPort: port('metrics-port'),
    tlsCertFile: str('tls-cert-file')!,
    tlsKeyFile: str('tls-key-file')!,
    tlsReloadMs: duration('tls-reload-interval', 100, 3_600_000),
    clientCaFile: str('client-ca-file'),
    tokenAudience: str('token-audience')!,
    roleKey: key('iam-role-key'),
    optInKey: key('opt-in-key'),
    injectAllWithRole: bool('inject-all-with-role'),
    // The API server waits at most the MutatingWebhookConfiguration's timeoutSeconds (3 s in
    // manifests/components/webhook) for the whole answer, which may need two lookups.
    lookupTimeoutMs: duration('lookup-timeout', 50, 10_000),
    cacheTtlMs: duration('cache-ttl', 0, 300_000),
    shutdownDelayMs: duration('shutdown-delay', 0, 60_000),
    ...kubeConnection(readers, env),
    logFormat: oneOf<LogFormat>('log-format'),
    logLevel: oneOf<LogLevel>('log-level'),
  };
  if (config.port === config.metricsPort) fail('metrics-port', `must differ from --port (${config.port})`);
  if (/[\s,]/.test(config.tokenAudience)) fail('token-audience', `${JSON.stringify(config.tokenAudience)} must be one audience, without spaces or commas`);
  return { kind: 'run', config: Object.freeze(config) };
}


export function webhookHelpText(): string {
  const lines = [
    'Usage: podiam webhook [flags]',
    '',
    'Mutating admission webhook: gives opted-in pods with a role the token identity environment',
    '(AWS_CONTAINER_CREDENTIALS_FULL_URI, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE) and a projected',
    'ServiceAccount token volume.',
    '',
    'Flags:',
  ];
  for (const f of WEBHOOK_FLAGS) {
    const def = f.default !== undefined && f.type !== 'bool' ? ` (default ${f.default})` : '';
    lines.push(`  --${f.name.padEnd(24)} ${f.help}${def}`);
  }
  return lines.join('\n') + '\n';
}

/** A loggable view of the config: never the API token. */
export function describeWebhookConfig(config: WebhookConfig): Record<string, unknown> {
  return { ...config, apiToken: config.apiToken === undefined ? undefined : '<redacted>' };
}
