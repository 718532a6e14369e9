/**
 * Flags and environment, parsed once into a frozen, typed Config.
 * This is the only module that reads process.env. Flag names are kube2iam's, so a kube2iam
 * DaemonSet can switch image and keep its args (https://github.com/jtblin/kube2iam#usage).
 */
import { isIP } from 'node:net';
import { ConfigError } from './errors.js';
import type { ImdsTokensMode } from './imds/token-policy.js';
import type { FlagSpec } from './flags.js';
import { KUBE_CONNECTION_FLAGS, flagReaders, kubeConnection, nonEmpty } from './flags.js';
import type { RolePolicyConfig } from './role-policy-flags.js';
import { ROLE_POLICY_FLAGS, rolePolicyConfig } from './role-policy-flags.js';
import type { BrokerClientConfig } from './credentials/broker-flags.js';
import { BROKER_CLIENT_FLAGS, brokerClientConfig } from './credentials/broker-flags.js';

/**
 * Rounds of --iptables-reconcile-interval between full checks (src/iptables.ts). Without the ruleset watch, a round checks one rule per family (one
 * process); every tenth, or when that rule is gone, every rule is counted and restored (three
 * processes per family). A process per rule per round was most of podiam's idle CPU
 * (scripts/bench/idle-cpu.mjs); the jump is what a flush of the nat table removes first, and while
 * anything is missing the guard keeps pods off the real metadata service. While the watch runs,
 * the nine cheap rounds are skipped: the kernel reports each deletion, and the tenth round's full
 * check is the safety net, and the --host-interface check's period (pod changes bring one sooner).
 */
export const FULL_CHECK_EVERY = 10;

export { parseDuration } from './flags.js';

export type LogFormat = 'text' | 'json';
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export type { RestrictionFormat, RoleSourceKind, SessionScope } from './role-policy-flags.js';
export { ROLE_SOURCES, isRoleArn } from './role-policy-flags.js';

export interface Config extends RolePolicyConfig {
  readonly appPort: number;
  readonly metricsPort: number;
  /** The address podiam listens on first: the IPv4 one of --host-ip when it has one. */
  readonly hostIp: string | undefined;
  /** --host-ip's address of each family (one per family, comma-separated, e.g. from status.hostIPs). */
  readonly hostIp4: string | undefined;
  readonly hostIp6: string | undefined;
  readonly hostInterface: string;
  readonly iptables: boolean;
  readonly iptablesReconcileMs: number;
  /** --iptables-watch: an `nft monitor` reports deletions in podiam's chains as they happen (iptables-nft nodes). */
  readonly iptablesWatch: boolean;
  /** --iptables-guard: a mangle FORWARD DROP keeps pods off the real metadata service while a DNAT is missing. */
  readonly iptablesGuard: boolean;
  readonly metadataHost: string;
  readonly metadataPort: number;
  /** The metadata service's IPv6 address (--metadata-addr-ipv6), or undefined when off. */
  readonly metadataHost6: string | undefined;
  readonly metadataPort6: number;
  readonly metadataTimeoutMs: number;
  readonly autoDiscoverBaseArn: boolean;
  readonly podWaitMs: number;
  /** Open connections one source IP may hold on the metadata (and token) listeners. */
  readonly maxConnectionsPerIp: number;
  /** Open connections in all on the metadata listeners (and, separately, on the token listeners). */
  readonly maxConnections: number;
  readonly node: string | undefined;
  readonly kubeconfig: string | undefined;
  readonly apiServer: string | undefined;
  readonly apiToken: string | undefined;
  readonly insecure: boolean;
  readonly events: boolean;
  /** A watch silent this long is dead: aborted, then relisted and re-watched; an informer out of sync this long fails closed (kube/pods.ts). */
  readonly watchDeadlineMs: number;
  readonly logFormat: LogFormat;
  readonly logLevel: LogLevel;
  readonly debug: boolean;
  /** Serve the node's signed instance identity (pkcs7, signature, rsa2048) to pods. */
  readonly allowSignedIdentity: boolean;
  /** Serve user-data to pods (the node itself always gets it). */
  readonly allowUserData: boolean;
  /** IMDSv2 tokens from pods: required, optional, or as the node's metadata service (auto). */
  readonly imdsTokens: ImdsTokensMode;
  /** kube2iam flags given that podiam accepts and ignores: logged once at start, by name. */
  readonly ignoredFlags: readonly string[];
  /** Token identity (/v1/credentials): see src/token/. */
  readonly tokenIdentity: boolean;
  readonly tokenAddrs: ReadonlyArray<{ readonly host: string; readonly port: number }>;
  readonly tokenAudience: string;
  /** Interface the token addresses are added to (undefined: podiam adds none). */
  readonly tokenInterface: string | undefined;
  /** --broker: credentials come from `podiam broker` (this node decides and assumes nothing); undefined: standalone. */
  readonly broker: BrokerClientConfig | undefined;
  /** On SIGTERM, serve until another podiam listens on the app port (a rolling update's next pod), at most this long; 0: stop at once. */
  readonly shutdownHandoverMs: number;
  /** The NoSchedule taint podiam removes from its node (--node) once ready; undefined: the node is not touched. */
  readonly removeStartupTaint: string | undefined;
}

export type CliRequest =
  | { readonly kind: 'run'; readonly config: Config }
  | { readonly kind: 'help' }
  | { readonly kind: 'version' }
  /**
   * podiam --cleanup: remove every interception rule and exit (kube-proxy --cleanup); with
   * --token-interface, also the token addresses podiam added to that link.
   */
  | { readonly kind: 'cleanup'; readonly tokenLink?: { readonly link: string; readonly addresses: readonly string[] } };


export const FLAGS: readonly FlagSpec[] = [
  { name: 'app-port', type: 'port', default: '8181', example: '--app-port=8181', help: 'port podiam listens on for metadata requests' },
  { name: 'metrics-port', type: 'port', example: '--metrics-port=9181', help: 'port for /metrics (default: the app port, served by the main server)' },
  { name: 'host-ip', type: 'string', example: '--host-ip=10.0.1.23,fd00:10::23', help: 'IP(s) to listen on and DNAT to, at most one per family, comma-separated (env HOST_IP; default: listen on all)' },
  { name: 'host-interface', type: 'string', default: 'docker0', example: '--host-interface=cali+', help: 'pod-side interface(s) whose metadata traffic is intercepted; + wildcard, leading ! inverts' },
  { name: 'iptables', type: 'bool', default: 'false', example: '--iptables', help: 'install and keep the DNAT and guard rules, both families (needs NET_ADMIN and --host-ip); they outlive podiam: remove them with --cleanup' },
  { name: 'iptables-reconcile-interval', type: 'duration', default: '5s', example: '--iptables-reconcile-interval=5s', help: 'how often the rules are checked (one rule per family; all of them every tenth round) and restored; while the ruleset watch runs, only every tenth round checks (all of them)' },
  { name: 'iptables-watch', type: 'bool', default: 'true', example: '--iptables-watch=false', help: 'with --iptables on an iptables-nft node, run `nft -j monitor destroy` to learn of every deletion in podiam\'s chains at once (restored within ~0.1-0.2 s, no process per round); false, or no nft binary, or iptables-legacy: checked every round' },
  { name: 'iptables-guard', type: 'bool', default: 'true', example: '--iptables-guard=false', help: 'with --iptables, also DROP pods\' TCP to the metadata service in mangle FORWARD, so a missing DNAT never lets them reach it' },
  { name: 'cleanup', type: 'bool', default: 'false', example: '--cleanup', help: 'remove every rule podiam installed (iptables and ip6tables), print what was removed, and exit' },
  { name: 'metadata-addr', type: 'string', default: '169.254.169.254', example: '--metadata-addr=169.254.169.254:80', help: 'the real metadata service, host or host:port' },
  { name: 'metadata-addr-ipv6', type: 'string', default: '[fd00:ec2::254]', example: '--metadata-addr-ipv6=[fd00:ec2::254]:80', help: 'the metadata service\'s IPv6 endpoint, intercepted with ip6tables and used for IPv6 pods\' passthrough; off to disable' },
  { name: 'metadata-timeout', type: 'duration', default: '950ms', example: '--metadata-timeout=950ms', help: 'timeout for requests forwarded to the metadata service' },
  ...ROLE_POLICY_FLAGS,
  { name: 'auto-discover-base-arn', type: 'bool', default: 'false', example: '--auto-discover-base-arn', help: 'derive the base role ARN from the metadata service iam/info' },
  { name: 'pod-wait', type: 'duration', default: '900ms', example: '--pod-wait=900ms', help: 'how long a request from an unknown IP waits for its pod to appear' },
  { name: 'max-connections-per-ip', type: 'string', default: '256', example: '--max-connections-per-ip=256', help: 'open connections one source IP (a pod, or the node) may hold on the metadata listeners, and on the token listeners; more are closed at once (podiam_connections_refused_total)' },
  { name: 'max-connections', type: 'string', default: '8192', example: '--max-connections=8192', help: 'open connections all sources together may hold on the metadata listeners, and on the token listeners; more are closed at once' },
  { name: 'node', type: 'string', example: '--node=ip-10-0-1-23.ec2.internal', help: 'watch only pods of this node (env NODE_NAME)' },
  ...KUBE_CONNECTION_FLAGS,
  ...BROKER_CLIENT_FLAGS,
  { name: 'events', type: 'bool', default: 'true', example: '--events=false', help: 'record Kubernetes Events on pods that are denied credentials' },
  { name: 'log-format', type: 'enum', default: 'text', values: ['text', 'json'], example: '--log-format=json', help: 'log format (any case)' },
  { name: 'log-level', type: 'enum', default: 'info', values: ['panic', 'fatal', 'error', 'warn', 'warning', 'info', 'debug', 'trace'], example: '--log-level=info', help: 'log level; logrus names too (any case): trace is debug, panic and fatal are error' },
  { name: 'allow-signed-identity', type: 'bool', default: 'false', example: '--allow-signed-identity', help: "serve the node's signed instance identity (dynamic/instance-identity/pkcs7, signature, rsa2048) to pods: any pod can then authenticate as the node (Vault, SPIRE)" },
  { name: 'allow-user-data', type: 'bool', default: 'false', example: '--allow-user-data', help: "serve user-data to pods (the node always gets it): kubeadm and kOps put the cluster join token there, so any pod could join the cluster as a node" },
  { name: 'imds-tokens', type: 'enum', default: 'auto', values: ['auto', 'required', 'optional'], example: '--imds-tokens=required', help: "IMDSv2 tokens from pods: required (a token-less GET is 401, as EC2 with HttpTokens=required), optional, or auto: as the node's metadata service answers a token-less GET at start (required until it answers)" },
  { name: 'watch-deadline', type: 'duration', default: '55s', example: '--watch-deadline=55s', help: 'a Kubernetes watch silent this long is replaced (relist + watch); an informer out of sync this long answers 503; at most 60s' },
  { name: 'verbose', type: 'bool', default: 'false', example: '--verbose', help: 'same as --log-level=debug' },
  { name: 'debug', type: 'bool', default: 'false', example: '--debug', help: 'serve /debug/store and log at debug level' },
  { name: 'token-identity', type: 'bool', default: 'false', example: '--token-identity', help: 'also serve GET /v1/credentials (EKS Pod Identity protocol): identity from the pod\'s ServiceAccount token' },
  { name: 'token-addr', type: 'string', default: '169.254.170.23:80,[fd00:ec2::23]:80', example: '--token-addr=169.254.170.23:80,[fd00:ec2::23]:80', help: 'comma-separated addresses the /v1/credentials listener binds' },
  { name: 'token-audience', type: 'string', default: 'pods.eks.amazonaws.com', example: '--token-audience=pods.eks.amazonaws.com', help: 'audience the pod\'s projected ServiceAccount token must carry' },
  { name: 'token-interface', type: 'string', example: '--token-interface=pod-id-link0', help: 'add the --token-addr addresses to this link (a dummy link is created if missing; needs NET_ADMIN)' },
  { name: 'shutdown-handover', type: 'duration', default: '0s', example: '--shutdown-handover=20s', help: 'on SIGTERM, keep serving until another podiam listens on the app port (a rolling update\'s new pod, which joins once ready), at most this long; needs Node >= 22.12 (reusePort)' },
  { name: 'remove-startup-taint', type: 'string', example: '--remove-startup-taint=podiam.io/agent-not-ready', help: 'remove this NoSchedule taint from the node (--node) once podiam is ready (rules in, informers synced), so pods are scheduled only where podiam intercepts' },
  { name: 'version', type: 'bool', default: 'false', example: '--version', help: 'print the version and exit' },
  { name: 'help', type: 'bool', default: 'false', example: '--help', help: 'print this help and exit' },
  // kube2iam flags podiam accepts so existing DaemonSet args keep working.
  { name: 'backoff-max-interval', type: 'duration', default: '1s', example: '--backoff-max-interval=1s', help: 'kube2iam compatibility', compat: 'ignored: a request from an unknown IP waits for its pod up to --pod-wait' },
  { name: 'backoff-max-elapsed-time', type: 'duration', default: '2s', example: '--backoff-max-elapsed-time=2s', help: 'kube2iam compatibility', compat: 'ignored: a request from an unknown IP waits for its pod up to --pod-wait' },
  { name: 'cache-resync-period', type: 'duration', default: '30m', example: '--cache-resync-period=30m', help: 'kube2iam compatibility', compat: 'ignored: the watch keeps the cache current' },
  { name: 'resolve-duplicate-cache-ips', type: 'bool', default: 'false', example: '--resolve-duplicate-cache-ips', help: 'kube2iam compatibility', compat: 'ignored: always on, the newest live pod wins a shared IP' },
  { name: 'use-regional-sts-endpoint', type: 'bool', default: 'false', example: '--use-regional-sts-endpoint', help: 'kube2iam compatibility', compat: "ignored: always regional, the endpoint of --sts-region (else AWS_REGION, else the node's region)" },
];



type Raw = Map<string, string>;

function splitArgs(argv: readonly string[]): Raw {
  const byName = new Map(FLAGS.map((f) => [f.name, f]));
  const raw: Raw = new Map();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    // Go's flag package accepts one or two dashes; kube2iam args use both.
    const m = /^--?([a-z][a-z0-9-]*)(?:=(.*))?$/s.exec(arg);
    if (!m) {
      throw new ConfigError(arg, `unexpected argument; flags look like ${FLAGS[0]!.example}`);
    }
    const name = m[1]!;
    const spec = byName.get(name);
    if (!spec) {
      const near = closestFlag(name);
      throw new ConfigError(`--${name}`, `unknown flag${near ? `; did you mean --${near.name}? e.g. ${near.example}` : ', e.g. --app-port=8181'}; see podiam --help`);
    }
    let value = m[2];
    if (value === undefined) {
      if (spec.type === 'bool') value = 'true';
      else if (i + 1 < argv.length) value = argv[++i]!;
      else throw new ConfigError(`--${name}`, `needs a value, e.g. ${spec.example}`);
    }
    raw.set(name, value);
  }
  return raw;
}

export function parseConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): CliRequest {
  const raw = splitArgs(argv);
  const readers = flagReaders(raw, FLAGS);
  const { get, fail, bool, str, port, duration, oneOf } = readers;

  const tokenAddrs = () =>
    (str('token-addr') ?? '').split(',').map((part) => {
      const hp = parseHostPort(part.trim());
      if (hp === undefined || isIP(hp[0]) === 0) return fail('token-addr', `${JSON.stringify(part)} is not an IP:port or [IPv6]:port`);
      return Object.freeze({ host: hp[0], port: hp[1] });
    });
  const tokenInterface = (): string | undefined => {
    const link = str('token-interface');
    if (link !== undefined && !/^[A-Za-z0-9_.-]{1,15}$/.test(link)) fail('token-interface', `${JSON.stringify(link)} is not an interface name`);
    return link;
  };

  // The region names STS's endpoint (sts.<region>.amazonaws.com): a region's spelling, nothing else.

  // Validate every flag given, even the compatibility ones, so a typo never passes silently.
  for (const spec of FLAGS) {
    if (!raw.has(spec.name)) continue;
    if (spec.type === 'bool') bool(spec.name);
    if (spec.type === 'duration' && spec.compat) duration(spec.name, 0, 365 * 86_400_000);
  }
  if (bool('help')) return { kind: 'help' };
  if (bool('version')) return { kind: 'version' };
  // kube-proxy style: the DaemonSet's own args plus --cleanup; rules are found by their comment,
  // so nothing else is needed (no Kubernetes, no STS, no --host-ip).
  if (bool('cleanup')) {
    const link = tokenInterface();
    return link === undefined ? { kind: 'cleanup' } : { kind: 'cleanup', tokenLink: { link, addresses: tokenAddrs().map((a) => a.host) } };
  }

  const appPort = port('app-port')!;
  const hostIps = parseHostIps(str('host-ip') ?? nonEmpty(env.HOST_IP), fail);
  const hostIp = hostIps.v4 ?? hostIps.v6;

  const hostInterface = str('host-interface')!;
  if (!/^!?[A-Za-z0-9_.@:-]{1,15}\+?$/.test(hostInterface)) {
    fail('host-interface', `${JSON.stringify(hostInterface)} is not an interface name (letters, digits, ._-@:, optional trailing + and leading !)`);
  }

  const [metadataHost, metadataPort] = parseHostPort(str('metadata-addr')!) ?? fail('metadata-addr', `${JSON.stringify(get('metadata-addr'))} is not host or host:port`);
  const v6Text = str('metadata-addr-ipv6')!;
  const metadata6 = v6Text === 'off' ? undefined : parseHostPort(v6Text);
  if (v6Text !== 'off' && (metadata6 === undefined || isIP(metadata6[0]) !== 6)) fail('metadata-addr-ipv6', `${JSON.stringify(v6Text)} is not an IPv6 address in brackets, [addr] or [addr]:port (or off)`);

  // With --broker the broker alone decides and assumes roles: a role policy flag given to the
  // agent would do nothing, so it is refused by name rather than silently ignored.
  const broker = brokerClientConfig(readers);
  if (broker !== undefined) {
    const given = [...ROLE_POLICY_FLAGS.map((f) => f.name), 'auto-discover-base-arn'].filter((name) => raw.has(name));
    if (given.length > 0) {
      throw new ConfigError(`--${given[0]}`, `belongs to the broker with --broker: give ${given.map((n) => `--${n}`).join(', ')} to \`podiam broker\` (it decides every pod's role), not to the agent`);
    }
  }
  const policy = rolePolicyConfig(readers, env);
  const autoDiscoverBaseArn = bool('auto-discover-base-arn');
  if (autoDiscoverBaseArn && policy.baseRoleArn !== undefined) {
    fail('auto-discover-base-arn', 'cannot be combined with --base-role-arn; choose one');
  }

  const kube = kubeConnection(readers, env);

  // logrus levels: https://github.com/sirupsen/logrus/blob/master/logrus.go (ParseLevel).
  const logrusLevel = oneOf<LogLevel | 'warning' | 'trace' | 'fatal' | 'panic'>('log-level');
  let logLevel: LogLevel = logrusLevel === 'warning' ? 'warn' : logrusLevel === 'trace' ? 'debug' : logrusLevel === 'fatal' || logrusLevel === 'panic' ? 'error' : logrusLevel;
  const debug = bool('debug');
  if (bool('verbose') || debug) logLevel = 'debug';

  const iptables = bool('iptables');
  if (iptables && hostIp === undefined) fail('host-ip', '--iptables needs --host-ip (or HOST_IP) to DNAT to');
  if (iptables && isIP(metadataHost) !== 4) fail('metadata-addr', '--iptables needs an IPv4 metadata address to intercept');
  if (iptables && hostIps.v4 === undefined) fail('host-ip', `--iptables needs an IPv4 --host-ip to DNAT to (got ${hostIp})`);

  const tokenAudience = str('token-audience')!;
  if (!/^[\x21-\x7e]{1,256}$/.test(tokenAudience)) fail('token-audience', `${JSON.stringify(tokenAudience)} must be 1-256 printable characters without spaces`);
  const count = (name: string, min: number, max: number): number => {
    const text = str(name)!;
    const n = /^\d{1,7}$/.test(text) ? Number(text) : NaN;
    if (!(n >= min && n <= max)) fail(name, `${JSON.stringify(text)} is not a whole number from ${min} to ${max}`);
    return n;
  };
  const node = str('node') ?? nonEmpty(env.NODE_NAME);
  // The broker serves an agent only its own node's pods: an agent watching the whole cluster would
  // ask for every other node's pods and be refused.
  if (broker !== undefined && node === undefined) fail('node', '--broker needs the node this agent runs on (--node or NODE_NAME, from spec.nodeName)');
  const startupTaint = (): string | undefined => {
    const key = str('remove-startup-taint');
    if (key === undefined) return undefined;
    // A taint key: an optional DNS-subdomain prefix and '/', then a name of up to 63 characters.
    if (!/^(?:[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/.test(key)) fail('remove-startup-taint', `${JSON.stringify(key)} is not a taint key`);
    if (str('node') === undefined && nonEmpty(env.NODE_NAME) === undefined) fail('remove-startup-taint', 'needs --node (or NODE_NAME): the node whose taint podiam removes');
    return key;
  };


  const config: Config = {
    appPort,
    metricsPort: port('metrics-port') ?? appPort,
    hostIp,
    hostIp4: hostIps.v4,
    hostIp6: hostIps.v6,
    hostInterface,
    iptables,
    iptablesReconcileMs: duration('iptables-reconcile-interval', 500, 300_000),
    iptablesWatch: bool('iptables-watch'),
    iptablesGuard: bool('iptables-guard'),
    metadataHost,
    metadataPort,
    metadataHost6: metadata6?.[0],
    metadataPort6: metadata6?.[1] ?? 80,
    metadataTimeoutMs: duration('metadata-timeout', 50, 60_000),
    ...policy,
    autoDiscoverBaseArn,
    podWaitMs: duration('pod-wait', 0, 30_000),
    maxConnectionsPerIp: count('max-connections-per-ip', 1, 1_000_000),
    maxConnections: count('max-connections', 1, 1_000_000),
    node,
    ...kube,
    events: bool('events'),
    watchDeadlineMs: duration('watch-deadline', 1000, 60_000),
    logFormat: oneOf<LogFormat>('log-format'),
    logLevel,
    debug,
    allowSignedIdentity: bool('allow-signed-identity'),
    allowUserData: bool('allow-user-data'),
    imdsTokens: oneOf<ImdsTokensMode>('imds-tokens'),
    ignoredFlags: FLAGS.filter((f) => f.compat?.startsWith('ignored') === true && raw.has(f.name)).map((f) => `--${f.name}`),
    tokenIdentity: bool('token-identity'),
    tokenAddrs: Object.freeze(tokenAddrs()),
    tokenAudience,
    tokenInterface: tokenInterface(),
    broker,
    shutdownHandoverMs: duration('shutdown-handover', 0, 300_000),
    removeStartupTaint: startupTaint(),
  };
  return { kind: 'run', config: Object.freeze(config) };
}

/** --host-ip: one address, or one per family comma-separated (the downward API's status.hostIPs). */
function parseHostIps(text: string | undefined, fail: (name: string, why: string) => never): { v4?: string; v6?: string } {
  if (text === undefined) return {};
  const out: { v4?: string; v6?: string } = {};
  for (const part of text.split(',').map((p) => p.trim())) {
    const v = isIP(part);
    if (v === 0) fail('host-ip', `${JSON.stringify(part)} is not an IP address`);
    const key = v === 4 ? 'v4' : 'v6';
    if (out[key] !== undefined) fail('host-ip', `${JSON.stringify(text)} has two IPv${v} addresses; give at most one per family`);
    out[key] = part;
  }
  return out;
}

/** --role-sources: `all` (undefined), or a comma-separated subset of ROLE_SOURCES. */

/** host, host:port, or [v6]:port. */
export function parseHostPort(text: string): [string, number] | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+))(?::(\d{1,5}))?$/.exec(text);
  if (!m) return undefined;
  const port = m[3] === undefined ? 80 : Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return [(m[1] ?? m[2])!, port];
}

/** The known flag nearest to a misspelt one (edit distance ≤ 3), for the error message. */
function closestFlag(name: string): FlagSpec | undefined {
  let best: FlagSpec | undefined;
  let bestDistance = 4;
  for (const f of FLAGS) {
    const d = editDistance(name, f.name);
    if (d < bestDistance) [best, bestDistance] = [f, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}



export function helpText(): string {
  const lines = ['Usage: podiam [flags]', '       podiam webhook [flags]   (the token identity admission webhook; podiam webhook --help)', '       podiam broker [flags]    (the cluster\'s credential broker for agents started with --broker; podiam broker --help)', '', 'Gives each pod the AWS IAM role in its iam.amazonaws.com/role annotation.', '', 'Flags:'];
  for (const f of FLAGS) {
    const def = f.default !== undefined && f.type !== 'bool' ? ` (default ${f.default})` : '';
    const compat = f.compat ? ` [kube2iam compatibility: ${f.compat}]` : '';
    lines.push(`  --${f.name.padEnd(30)} ${f.help}${def}${compat}`);
  }
  return lines.join('\n') + '\n';
}

/** A loggable view of the config: never the API token. */
export function describeConfig(config: Config): Record<string, unknown> {
  return { ...config, apiToken: config.apiToken === undefined ? undefined : '<redacted>' };
}
