/**
 * Reading flag values, shared by the node agent's flags (config.ts) and the webhook's
 * (webhook/config.ts): the same spellings mean the same thing in both, and a bad value fails the
 * same way, naming the flag and showing a valid example.
 */
import { ConfigError } from './errors.js';
import type { KubeConnection } from './kube/api.js';

export type FlagType = 'string' | 'port' | 'bool' | 'duration' | 'enum';

export interface FlagSpec {
  readonly name: string;
  readonly type: FlagType;
  readonly help: string;
  readonly example: string;
  readonly default?: string;
  readonly values?: readonly string[];
  /** Accepted for kube2iam compatibility; parsed and validated, but podiam does not need it. */
  readonly compat?: string;
}

/** Go-style durations as kube2iam takes them: 900ms, 15m, 1h30m, 3600s. */
export function parseDuration(text: string): number | undefined {
  const m = /^(?:(\d+(?:\.\d+)?)(ms|s|m|h))+$/.exec(text);
  if (!m) return undefined;
  const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  for (const part of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    total += Number(part[1]) * unit[part[2]!]!;
  }
  return Math.round(total);
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

export function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v.trim() === '' ? undefined : v;
}

/** Typed readers over the flags given (`raw`, by name) and their specs' defaults. */
export function flagReaders(raw: ReadonlyMap<string, string>, flags: readonly FlagSpec[]) {
  const specs = new Map(flags.map((f) => [f.name, f]));
  const get = (name: string): string | undefined => raw.get(name) ?? specs.get(name)!.default;
  const fail = (name: string, why: string): never => {
    throw new ConfigError(`--${name}`, `${why}, e.g. ${specs.get(name)!.example}`);
  };
  const bool = (name: string): boolean => {
    const v = get(name) ?? 'false';
    if (/^(true|1|t|yes)$/i.test(v)) return true;
    if (/^(false|0|f|no)$/i.test(v)) return false;
    return fail(name, `${JSON.stringify(v)} is not a boolean`);
  };
  const str = (name: string): string | undefined => {
    const v = get(name);
    if (v === undefined) return undefined;
    if (v.trim() === '') return fail(name, 'must not be empty');
    return v;
  };
  const port = (name: string): number | undefined => {
    const v = get(name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < 1 || n > 65535) fail(name, `${JSON.stringify(v)} is not a port (1-65535)`);
    return n;
  };
  const duration = (name: string, minMs: number, maxMs: number): number => {
    const v = get(name)!;
    const ms = parseDuration(v);
    if (ms === undefined) return fail(name, `${JSON.stringify(v)} is not a duration like 900ms, 15m or 1h`);
    if (ms < minMs || ms > maxMs) fail(name, `${v} is out of range (${formatDuration(minMs)}..${formatDuration(maxMs)})`);
    return ms;
  };
  const oneOf = <T extends string>(name: string): T => {
    // Any case, as kube2iam (strings.ToLower, logrus.ParseLevel).
    const v = get(name)!.toLowerCase();
    if (!specs.get(name)!.values!.includes(v)) fail(name, `${JSON.stringify(v)} is not one of ${specs.get(name)!.values!.join('|')}`);
    return v as T;
  };
  return { get, fail, bool, str, port, duration, oneOf };
}

export type FlagReaders = ReturnType<typeof flagReaders>;

/** How to reach the API server (src/kube/api.ts, createKubeConfig): the agent's and the webhook's flags alike. */
export const KUBE_CONNECTION_FLAGS: readonly FlagSpec[] = [
  { name: 'kubeconfig', type: 'string', example: '--kubeconfig=/root/.kube/config', help: 'kubeconfig file (else KUBECONFIG, else --api-server, else in-cluster)' },
  { name: 'api-server', type: 'string', example: '--api-server=https://10.0.0.1:443', help: 'Kubernetes API server URL' },
  { name: 'api-token', type: 'string', example: '--api-token=$(cat /path/token)', help: 'bearer token for --api-server' },
  { name: 'insecure', type: 'bool', default: 'false', example: '--insecure', help: 'skip TLS verification of the API server (required for http:// servers)' },
];

/** The KUBE_CONNECTION_FLAGS read and checked: --api-server must be an http(s) URL, plain http only with --insecure. */
export function kubeConnection({ fail, bool, str }: FlagReaders, env: NodeJS.ProcessEnv): KubeConnection {
  const apiServer = str('api-server');
  const insecure = bool('insecure');
  if (apiServer !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(apiServer);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) fail('api-server', `${JSON.stringify(apiServer)} is not an http(s) URL`);
    if (url!.protocol === 'http:' && !insecure) fail('api-server', `${apiServer} is plain http: add --insecure to allow it, or use https`);
  }
  return { kubeconfig: str('kubeconfig') ?? nonEmpty(env.KUBECONFIG), apiServer, apiToken: str('api-token'), insecure };
}

/**
 * `--name=value`, `--name value` or `-name` (Go's flag package takes one or two dashes), by name;
 * a bool flag without a value is true. For a subcommand's flags (`podiam broker`): an unknown
 * flag names the command's --help.
 */
export function splitFlags(argv: readonly string[], flags: readonly FlagSpec[], command: string): Map<string, string> {
  const specs = new Map(flags.map((f) => [f.name, f]));
  const raw = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const m = /^--?([a-z][a-z0-9-]*)(?:=(.*))?$/s.exec(arg);
    if (!m) throw new ConfigError(arg, `unexpected argument; flags look like ${flags[0]!.example} (see ${command} --help)`);
    const spec = specs.get(m[1]!);
    if (!spec) throw new ConfigError(`--${m[1]}`, `unknown flag for ${command}, e.g. ${flags[0]!.example}; see ${command} --help`);
    let value = m[2];
    if (value === undefined) {
      if (spec.type === 'bool') value = 'true';
      else if (i + 1 < argv.length) value = argv[++i]!;
      else throw new ConfigError(`--${spec.name}`, `needs a value, e.g. ${spec.example}`);
    }
    raw.set(spec.name, value);
  }
  return raw;
}
