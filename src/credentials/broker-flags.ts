/**
 * The node agent's broker mode flags (--broker and its companions): where `podiam broker` is,
 * how the agent trusts it and proves itself to it. Parsed with the agent's other flags.
 */
import type { FlagReaders, FlagSpec } from '../flags.js';

export interface BrokerClientConfig {
  /** The broker's replicas, tried in order (a connection error on one is retried once on the next). */
  readonly urls: readonly string[];
  /** CA bundle (PEM) that signed the broker's serving certificate. */
  readonly caFile: string;
  /** The agent's projected ServiceAccount token (audience podiam-broker), read on every use. */
  readonly tokenFile: string;
  /** A miss waits this long for the broker before it is answered 503 BrokerUnavailable. */
  readonly timeoutMs: number;
}

export const BROKER_CLIENT_FLAGS: readonly FlagSpec[] = [
  { name: 'broker', type: 'string', example: '--broker=https://podiam-broker.kube-system.svc:8443', help: 'broker mode: credentials come from `podiam broker` at these https URLs (comma-separated replicas); this node never calls STS and needs no AWS credentials' },
  { name: 'broker-ca-file', type: 'string', example: '--broker-ca-file=/etc/podiam/broker/ca.crt', help: "with --broker: CA certificate (PEM) that the broker's serving certificate must chain to" },
  { name: 'broker-token-file', type: 'string', default: '/var/run/secrets/podiam/broker/token', example: '--broker-token-file=/var/run/secrets/podiam/broker/token', help: "with --broker: the agent's projected ServiceAccount token (audience podiam-broker), re-read on every use" },
  { name: 'broker-timeout', type: 'duration', default: '2s', example: '--broker-timeout=2s', help: 'with --broker: how long a request not answered from memory waits for the broker before 503 BrokerUnavailable' },
];

/** undefined without --broker; the companions are checked only with it. */
export function brokerClientConfig({ fail, str, duration }: FlagReaders): BrokerClientConfig | undefined {
  const list = str('broker');
  if (list === undefined) return undefined;
  const urls = list.split(',').map((part) => {
    const text = part.trim();
    let url: URL | undefined;
    try {
      url = new URL(text);
    } catch {
      url = undefined;
    }
    if (url === undefined || url.protocol !== 'https:' || url.hostname === '') return fail('broker', `${JSON.stringify(text)} is not an https URL (the broker is only spoken to over TLS)`);
    if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') return fail('broker', `${JSON.stringify(text)} must be scheme, host and port only`);
    return url.origin;
  });
  if (new Set(urls).size !== urls.length) fail('broker', `${JSON.stringify(list)} names a replica twice`);
  const caFile = str('broker-ca-file') ?? fail('broker-ca-file', 'is required with --broker (the broker is verified against it)');
  return Object.freeze({ urls: Object.freeze(urls), caFile, tokenFile: str('broker-token-file')!, timeoutMs: duration('broker-timeout', 100, 60_000) });
}
