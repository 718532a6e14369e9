/** podiam webhook flags: defaults, validation, errors naming the flag with an example. */
import { ConfigError } from '../../src/errors.js';
import { parseWebhookConfig, webhookHelpText, WEBHOOK_FLAGS } from '../../src/webhook/config.js';

function config(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const r = parseWebhookConfig(argv, env);
  if (r.kind !== 'run') throw new Error('not a run');
  return r.config;
}

test('defaults', () => {
  expect(config([])).toEqual({
    port: 8443,
    metricsPort: 8080,
    tlsCertFile: '/etc/podiam/webhook/tls/tls.crt',
    tlsKeyFile: '/etc/podiam/webhook/tls/tls.key',
    tlsReloadMs: 10_000,
    tokenAudience: 'pods.eks.amazonaws.com',
    roleKey: 'iam.amazonaws.com/role',
    optInKey: 'podiam.io/token-identity',
    injectAllWithRole: false,
    lookupTimeoutMs: 1000,
    cacheTtlMs: 10_000,
    shutdownDelayMs: 5000,
    kubeconfig: undefined,
    apiServer: undefined,
    apiToken: undefined,
    insecure: false,
    logFormat: 'text',
    logLevel: 'info',
  });
  expect(Object.isFrozen(config([]))).toBe(true);
});

test('flags are read, in both spellings', () => {
  const c = config(['--port', '9443', '-metrics-port=9090', '--token-audience=podiam.example.com', '--inject-all-with-role', '--lookup-timeout=500ms', '--cache-ttl=0s', '--api-server=http://127.0.0.1:1', '--insecure', '--log-format=json']);
  expect(c).toMatchObject({ port: 9443, metricsPort: 9090, tokenAudience: 'podiam.example.com', injectAllWithRole: true, lookupTimeoutMs: 500, cacheTtlMs: 0, apiServer: 'http://127.0.0.1:1', insecure: true, logFormat: 'json' });
  expect(config([], { KUBECONFIG: '/k' }).kubeconfig).toBe('/k');
});

test.each([
  [['--port=0'], '--port', '--port=8443'],
  [['--metrics-port=8443'], '--metrics-port', '--metrics-port=8080'],
  [['--lookup-timeout=1h'], '--lookup-timeout', '--lookup-timeout=1s'],
  [['--lookup-timeout=soon'], '--lookup-timeout', '--lookup-timeout=1s'],
  [['--token-audience=a,b'], '--token-audience', '--token-audience=pods.eks.amazonaws.com'],
  [['--token-audience='], '--token-audience', '--token-audience=pods.eks.amazonaws.com'],
  [['--opt-in-key=not a key'], '--opt-in-key', '--opt-in-key=podiam.io/token-identity'],
  [['--inject-all-with-role=maybe'], '--inject-all-with-role', '--inject-all-with-role'],
  [['--log-format=xml'], '--log-format', '--log-format=json'],
  [['--api-server=http://10.0.0.1'], '--api-server', '--api-server=https://10.0.0.1:443'],
  [['--iptables'], '--iptables', '--port=8443'],
  [['--port'], '--port', '--port=8443'],
  [['stray'], 'stray', '--port=8443'],
])('%j is refused, naming %s and showing %s', (argv, flag, example) => {
  let err: unknown;
  try {
    parseWebhookConfig(argv, {});
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).flag).toBe(flag);
  expect((err as ConfigError).message).toContain(example);
});

test('--help lists every flag', () => {
  expect(parseWebhookConfig(['--help'], {})).toEqual({ kind: 'help' });
  for (const f of WEBHOOK_FLAGS) expect(webhookHelpText()).toContain(`--${f.name}`);
});
