import type { Config } from '../../src/config.js';
import { describeConfig, parseConfig, parseDuration, parseHostPort } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

/** Parses and expects a run request; the environment is empty unless given. */
function run(argv: string[], env: NodeJS.ProcessEnv = {}): Config {
  const r = parseConfig(argv, env);
  if (r.kind !== 'run') throw new Error(`expected a run request, got ${r.kind}`);
  return r.config;
}

function configError(argv: string[], env: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    parseConfig(argv, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`expected ${JSON.stringify(argv)} to be rejected`);
}

describe('parseConfig defaults', () => {
  const c = run([]);

  it('uses kube2iam-compatible defaults', () => {
    expect(c.appPort).toBe(8181);
    expect(c.metricsPort).toBe(8181);
    expect(c.metadataHost).toBe('169.254.169.254');
    expect(c.metadataPort).toBe(80);
    expect(c.sessionTtlSeconds).toBe(3600);
    expect(c.podWaitMs).toBe(900);
    expect(c.stsTimeoutMs).toBe(3000);
    expect(c.metadataTimeoutMs).toBe(950);
    expect(c.iptablesReconcileMs).toBe(5000);
    expect(c.hostInterface).toBe('docker0');
    expect(c.iptables).toBe(false);
    expect(c.hostIp).toBeUndefined();
    expect(c.baseRoleArn).toBeUndefined();
    expect(c.defaultRole).toBeUndefined();
    expect(c.roleKey).toBe('iam.amazonaws.com/role');
    expect(c.externalIdKey).toBe('iam.amazonaws.com/external-id');
    expect(c.sessionNameKey).toBe('iam.amazonaws.com/session-name');
    expect(c.namespaceKey).toBe('iam.amazonaws.com/allowed-roles');
    expect(c.namespaceRestrictions).toBe(false);
    expect(c.namespaceRestrictionFormat).toBe('glob');
    expect(c.stsRegion).toBeUndefined();
    expect(c.node).toBeUndefined();
    expect(c.events).toBe(true);
    expect(c.insecure).toBe(false);
    expect(c.logFormat).toBe('text');
    expect(c.logLevel).toBe('info');
    expect(c.debug).toBe(false);
  });

  it('metrics port follows the app port unless set', () => {
    expect(run(['--app-port=9000']).metricsPort).toBe(9000);
    const both = run(['--app-port=9000', '--metrics-port=9100']);
    expect(both.appPort).toBe(9000);
    expect(both.metricsPort).toBe(9100);
  });

  it('returns a frozen config', () => {
    const cfg = run(['--app-port=1234']);
    expect(Object.isFrozen(cfg)).toBe(true);
    expect(() => {
      (cfg as { appPort: number }).appPort = 1;
    }).toThrow(TypeError);
    expect(cfg.appPort).toBe(1234);
  });
});

describe('parseConfig flag syntax', () => {
  it.each([
    [['--app-port=9001']],
    [['--app-port', '9001']],
    [['-app-port=9001']],
    [['-app-port', '9001']],
  ])('%j sets the app port', (argv) => {
    expect(run(argv).appPort).toBe(9001);
  });

  it('single-dash -app-port=1 is accepted (Go flag style)', () => {
    expect(run(['-app-port=1']).appPort).toBe(1);
  });

  it('a separate value is consumed and does not swallow the next flag', () => {
    const c = run(['--default-role', 'my-role', '--pod-wait', '2s', '--log-format=json']);
    expect(c.defaultRole).toBe('my-role');
    expect(c.podWaitMs).toBe(2000);
    expect(c.logFormat).toBe('json');
  });

  it('the last occurrence of a flag wins', () => {
    expect(run(['--app-port=1', '--app-port=2']).appPort).toBe(2);
  });

  it('a bare bool flag is true and does not consume the next argument', () => {
    const c = run(['--iptables', '--host-ip=10.0.1.23']);
    expect(c.iptables).toBe(true);
    expect(c.hostIp).toBe('10.0.1.23');
  });

  it.each([
    ['--iptables=false', false],
    ['--iptables=0', false],
    ['--iptables=no', false],
    ['--iptables=FALSE', false],
    ['--iptables=true', true],
    ['--iptables=1', true],
    ['--iptables=yes', true],
    ['-iptables', true],
  ])('bool form %s -> %s', (flag, expected) => {
    expect(run([flag, '--host-ip=10.0.1.23']).iptables).toBe(expected);
  });

  it('--events=false turns events off', () => {
    expect(run(['--events=false']).events).toBe(false);
  });

  it('an "=" value may itself contain "="', () => {
    expect(run(['--api-token=abc=def==']).apiToken).toBe('abc=def==');
  });

  it('--help and --version are requests of their own', () => {
    expect(parseConfig(['--help'], {}).kind).toBe('help');
    expect(parseConfig(['-version'], {}).kind).toBe('version');
    expect(parseConfig(['--help=false'], {}).kind).toBe('run');
  });
});

describe('parseConfig values', () => {
  it('HOST_IP and NODE_NAME are fallbacks for --host-ip and --node', () => {
    const c = run([], { HOST_IP: '10.0.0.7', NODE_NAME: 'ip-10-0-0-7' });
    expect(c.hostIp).toBe('10.0.0.7');
    expect(c.node).toBe('ip-10-0-0-7');
  });

  it('flags beat the environment', () => {
    const c = run(['--host-ip=10.0.0.8', '--node=n2'], { HOST_IP: '10.0.0.7', NODE_NAME: 'n1' });
    expect(c.hostIp).toBe('10.0.0.8');
    expect(c.node).toBe('n2');
  });

  it('empty environment values count as unset', () => {
    const c = run([], { HOST_IP: '  ', NODE_NAME: '' });
    expect(c.hostIp).toBeUndefined();
    expect(c.node).toBeUndefined();
  });

  it('HOST_IP satisfies --iptables', () => {
    const c = run(['--iptables'], { HOST_IP: '10.0.0.7' });
    expect(c.iptables).toBe(true);
    expect(c.hostIp).toBe('10.0.0.7');
  });

  it("the STS region comes from --sts-region, AWS_REGION, AWS_DEFAULT_REGION, else none (the node's, at start)", () => {
    expect(run(['--sts-region=eu-west-1'], { AWS_REGION: 'us-west-2' })).toMatchObject({ stsRegion: 'eu-west-1', stsRegionFrom: '--sts-region' });
    expect(run([], { AWS_REGION: 'us-west-2', AWS_DEFAULT_REGION: 'ap-south-1' })).toMatchObject({ stsRegion: 'us-west-2', stsRegionFrom: 'AWS_REGION' });
    expect(run([], { AWS_DEFAULT_REGION: 'ap-south-1' })).toMatchObject({ stsRegion: 'ap-south-1', stsRegionFrom: 'AWS_DEFAULT_REGION' });
    expect(run([], {})).toMatchObject({ stsRegion: undefined, stsRegionFrom: undefined });
    expect(run([], { AWS_ENDPOINT_URL_STS: 'http://127.0.0.1:4566' }).stsEndpointOverride).toBe('http://127.0.0.1:4566');
  });

  it('a region that is not a region name is refused, naming --sts-region', () => {
    expect(() => run(['--sts-region=eu-west-1.evil.example'], {})).toThrow(/--sts-region: "eu-west-1.evil.example" is not a region name, e.g. --sts-region=eu-west-1/);
    expect(() => run([], { AWS_REGION: 'us east 1' })).toThrow(/--sts-region: AWS_REGION="us east 1" is not a region name; set --sts-region, e.g. --sts-region=eu-west-1/);
  });

  it('--base-role-arn gets a trailing /', () => {
    expect(run(['--base-role-arn=arn:aws:iam::123456789012:role']).baseRoleArn).toBe('arn:aws:iam::123456789012:role/');
    expect(run(['--base-role-arn=arn:aws:iam::123456789012:role/']).baseRoleArn).toBe('arn:aws:iam::123456789012:role/');
    expect(run(['--base-role-arn=arn:aws:iam::123456789012:role/team']).baseRoleArn).toBe('arn:aws:iam::123456789012:role/team/');
  });

  it('--metadata-addr takes host, host:port and [v6]:port', () => {
    const a = run(['--metadata-addr=169.254.169.254:8080']);
    expect([a.metadataHost, a.metadataPort]).toEqual(['169.254.169.254', 8080]);
    const b = run(['--metadata-addr=127.0.0.1']);
    expect([b.metadataHost, b.metadataPort]).toEqual(['127.0.0.1', 80]);
    const c = run(['--metadata-addr=[fd00:ec2::254]:81']);
    expect([c.metadataHost, c.metadataPort]).toEqual(['fd00:ec2::254', 81]);
  });

  it('parseHostPort rejects ports out of range and URLs', () => {
    expect(parseHostPort('h:0')).toBeUndefined();
    expect(parseHostPort('h:65536')).toBeUndefined();
    expect(parseHostPort('http://h')).toBeUndefined();
    expect(parseHostPort('h:65535')).toEqual(['h', 65535]);
  });

  it.each([
    [['--log-level=warning'], 'warn'],
    [['--log-level=warn'], 'warn'],
    [['--log-level=error'], 'error'],
    [['--verbose'], 'debug'],
    [['--log-level=error', '--verbose'], 'debug'],
    [['--debug'], 'debug'],
  ])('%j -> log level %s', (argv, level) => {
    expect(run(argv).logLevel).toBe(level);
  });

  it('--debug also sets debug', () => {
    expect(run(['--debug']).debug).toBe(true);
    expect(run(['--verbose']).debug).toBe(false);
  });

  it('--iam-role-session-ttl takes exact seconds within 15m..12h', () => {
    expect(run(['--iam-role-session-ttl=15m']).sessionTtlSeconds).toBe(900);
    expect(run(['--iam-role-session-ttl=12h']).sessionTtlSeconds).toBe(43200);
    expect(run(['--iam-role-session-ttl=1h30m']).sessionTtlSeconds).toBe(5400);
  });

  it('an http API server is allowed with --insecure', () => {
    const c = run(['--api-server=http://127.0.0.1:8080', '--insecure']);
    expect(c.apiServer).toBe('http://127.0.0.1:8080');
    expect(c.insecure).toBe(true);
    expect(run(['--api-server=https://10.0.0.1:443']).apiServer).toBe('https://10.0.0.1:443');
  });

  it('accepts and validates kube2iam compatibility flags', () => {
    const c = run(['--iam-role-error-ttl=0s', '--backoff-max-interval=1s', '--cache-resync-period=30m', '--resolve-duplicate-cache-ips', '--use-regional-sts-endpoint=true', '--auto-discover-default-role=false']);
    expect(c.appPort).toBe(8181);
  });

  it('describeConfig never contains the API token', () => {
    const cfg = run(['--api-server=https://10.0.0.1', '--api-token=s3cr3t-t0ken-value']);
    expect(cfg.apiToken).toBe('s3cr3t-t0ken-value');
    const described = describeConfig(cfg);
    expect(JSON.stringify(described)).not.toContain('s3cr3t-t0ken-value');
    expect(described.apiToken).toBe('<redacted>');
    expect(described.appPort).toBe(8181);
    expect(describeConfig(run([])).apiToken).toBeUndefined();
  });
});

describe('parseConfig rejects bad values with the flag name and an example', () => {
  // [case, argv, flag the message must name, env]
  const cases: Array<[string, string[], string, NodeJS.ProcessEnv?]> = [
    ['app-port 0', ['--app-port=0'], '--app-port'],
    ['app-port 70000', ['--app-port=70000'], '--app-port'],
    ['app-port abc', ['--app-port=abc'], '--app-port'],
    ['app-port -1', ['--app-port=-1'], '--app-port'],
    ['app-port 1.5', ['--app-port', '1.5'], '--app-port'],
    ['metrics-port 0', ['--metrics-port=0'], '--metrics-port'],
    ['metrics-port abc', ['--metrics-port', 'abc'], '--metrics-port'],
    ['host-ip nope', ['--host-ip=nope'], '--host-ip'],
    ['HOST_IP nope', [], '--host-ip', { HOST_IP: 'nope' }],
    ['host-interface "a b"', ['--host-interface=a b'], '--host-interface'],
    ['host-interface too long', ['--host-interface=abcdefghijklmnop'], '--host-interface'],
    ['metadata-addr http://x', ['--metadata-addr=http://x'], '--metadata-addr'],
    ['metadata-addr port 0', ['--metadata-addr=169.254.169.254:0'], '--metadata-addr'],
    ['metadata-timeout abc', ['--metadata-timeout=abc'], '--metadata-timeout'],
    ['metadata-timeout 10ms', ['--metadata-timeout=10ms'], '--metadata-timeout'],
    ['base-role-arn foo', ['--base-role-arn=foo'], '--base-role-arn'],
    ['default-role "a b"', ['--default-role=a b'], '--default-role'],
    ['default-role bad ARN', ['--default-role=arn:aws:iam::123:role/x'], '--default-role'],
    ['default-role empty', ['--default-role='], '--default-role'],
    ['iam-role-session-ttl 5m', ['--iam-role-session-ttl=5m'], '--iam-role-session-ttl'],
    ['iam-role-session-ttl 13h', ['--iam-role-session-ttl=13h'], '--iam-role-session-ttl'],
    ['iam-role-session-ttl 1x', ['--iam-role-session-ttl=1x'], '--iam-role-session-ttl'],
    ['iam-role-session-ttl not whole seconds', ['--iam-role-session-ttl=15m500ms'], '--iam-role-session-ttl'],
    ['pod-wait abc', ['--pod-wait=abc'], '--pod-wait'],
    ['pod-wait 31s', ['--pod-wait=31s'], '--pod-wait'],
    ['sts-timeout 10ms', ['--sts-timeout=10ms'], '--sts-timeout'],
    ['sts-timeout 2m', ['--sts-timeout=2m'], '--sts-timeout'],
    ['iptables-reconcile-interval 100ms', ['--iptables-reconcile-interval=100ms'], '--iptables-reconcile-interval'],
    ['namespace-restriction-format xml', ['--namespace-restriction-format=xml'], '--namespace-restriction-format'],
    ['log-format xml', ['--log-format=xml'], '--log-format'],
    ['log-level loud', ['--log-level=loud'], '--log-level'],
    // An unknown flag's message suggests the nearest flag, or an example.
    ['unknown flag', ['--no-such-flag=1'], '--no-such-flag'],
    ['positional argument', ['stray'], 'stray'],
    ['missing value', ['--app-port'], '--app-port'],
    ['missing value at the end', ['--iptables', '--host-ip'], '--host-ip'],
    ['--iptables without --host-ip', ['--iptables'], '--host-ip'],
    ['--iptables with a hostname metadata address', ['--iptables', '--host-ip=10.0.0.1', '--metadata-addr=metadata.local'], '--metadata-addr'],
    ['--api-server http:// without --insecure', ['--api-server=http://10.0.0.1:8080'], '--api-server'],
    ['--api-server not a url', ['--api-server=not a url'], '--api-server'],
    ['--api-server ftp://', ['--api-server=ftp://10.0.0.1'], '--api-server'],
    ['--auto-discover-base-arn with --base-role-arn', ['--auto-discover-base-arn', '--base-role-arn=arn:aws:iam::123456789012:role/'], '--auto-discover-base-arn'],
    ['--auto-discover-default-role', ['--auto-discover-default-role'], '--auto-discover-default-role'],
    ['bool maybe', ['--iptables=maybe'], '--iptables'],
    ['bool maybe on a compat flag', ['--resolve-duplicate-cache-ips=maybe'], '--resolve-duplicate-cache-ips'],
    ['bad compat duration', ['--cache-resync-period=forever'], '--cache-resync-period'],
    ['two IPv4 host addresses', ['--host-ip=10.0.0.1,10.0.0.2'], '--host-ip'],
    ['two IPv6 host addresses', ['--host-ip=fd00::1,fd00::2'], '--host-ip'],
    ['a bad address in a host-ip list', ['--host-ip=10.0.0.1,nope'], '--host-ip'],
    ['--iptables with only an IPv6 host address', ['--iptables', '--host-ip=fd00::1'], '--host-ip'],
    ['metadata-addr-ipv6 not IPv6', ['--metadata-addr-ipv6=169.254.169.254'], '--metadata-addr-ipv6'],
    ['metadata-addr-ipv6 unbracketed with port', ['--metadata-addr-ipv6=fd00:ec2::254:80'], '--metadata-addr-ipv6'],
    ['bool maybe on --iptables-guard', ['--iptables-guard=maybe'], '--iptables-guard'],
  ];

  // `env` has a default so the callback's arity stays 3: jest would take a 4th parameter for `done`.
  it.each(cases)('%s', (_name, argv, flag, env: NodeJS.ProcessEnv = {}) => {
    const err = configError(argv, env);
    expect(err.code).toBe('ConfigError');
    expect(err.flag).toBe(flag);
    expect(err.message).toContain(flag);
    // "e.g. --flag=value", or at least a sample flag usage like "--app-port=8181".
    expect(err.message).toMatch(/e\.g\.|--[a-z][a-z-]*=\S/);
  });

  it('a bad value is quoted in the message', () => {
    expect(configError(['--app-port=70000']).message).toContain('70000');
    expect(configError(['--log-level=loud']).message).toContain('"loud"');
  });

  it('--iptables without --host-ip names both flags', () => {
    const msg = configError(['--iptables']).message;
    expect(msg).toContain('--iptables');
    expect(msg).toContain('--host-ip');
  });
});

describe('parseDuration', () => {
  it.each([
    ['900ms', 900],
    ['15m', 900_000],
    ['1h30m', 5_400_000],
    ['3600s', 3_600_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    ['1m30s', 90_000],
    ['0s', 0],
  ])('%s -> %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['bad', '', '15', 'm', '1d', '-1s', '1h 30m', '1x', '1.s', 'ms'])('%j is not a duration', (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });
});

describe('interception flags', () => {
  it('--host-ip takes one address per family, comma-separated (status.hostIPs), in either order', () => {
    for (const text of ['10.0.1.23,fd00:10::23', 'fd00:10::23, 10.0.1.23']) {
      const c = run(['--iptables', `--host-ip=${text}`]);
      expect([c.hostIp, c.hostIp4, c.hostIp6]).toEqual(['10.0.1.23', '10.0.1.23', 'fd00:10::23']);
    }
    expect(run([], { HOST_IP: '10.0.0.7,fd00::7' }).hostIp6).toBe('fd00::7');
    const v6only = run(['--host-ip=fd00::9']);
    expect([v6only.hostIp, v6only.hostIp4, v6only.hostIp6]).toEqual(['fd00::9', undefined, 'fd00::9']);
  });

  it('the guard is on by default; --iptables-guard=false turns it off', () => {
    expect(run(['--iptables', '--host-ip=10.0.0.1']).iptablesGuard).toBe(true);
    expect(run(['--iptables', '--host-ip=10.0.0.1', '--iptables-guard=false']).iptablesGuard).toBe(false);
  });

  it('the IPv6 metadata endpoint is [fd00:ec2::254]:80 by default, settable, and off with "off"', () => {
    expect([run([]).metadataHost6, run([]).metadataPort6]).toEqual(['fd00:ec2::254', 80]);
    expect([run(['--metadata-addr-ipv6=[fd00::1]:8080']).metadataHost6, run(['--metadata-addr-ipv6=[fd00::1]:8080']).metadataPort6]).toEqual(['fd00::1', 8080]);
    expect(run(['--metadata-addr-ipv6=off']).metadataHost6).toBeUndefined();
  });

  it('--cleanup asks for a cleanup with the DaemonSet\'s own flags, and needs no --host-ip', () => {
    expect(parseConfig(['--cleanup'], {})).toEqual({ kind: 'cleanup' });
    expect(parseConfig(['--iptables', '--host-ip=10.0.1.23,fd00:10::23', '--host-interface=cali+', '--node=n1', '--cleanup'], {})).toEqual({ kind: 'cleanup' });
    expect(parseConfig(['--iptables', '--cleanup'], {})).toEqual({ kind: 'cleanup' });
    expect(() => parseConfig(['--cleanup', '--no-such-flag'], {})).toThrow(ConfigError);
  });
});

describe('connection caps (--max-connections-per-ip, --max-connections)', () => {
  it('default to 256 per IP and 8192 in all, and take whole numbers', () => {
    expect(run([])).toMatchObject({ maxConnectionsPerIp: 256, maxConnections: 8192 });
    expect(run(['--max-connections-per-ip=16', '--max-connections', '100'])).toMatchObject({ maxConnectionsPerIp: 16, maxConnections: 100 });
  });

  it.each([['--max-connections-per-ip=0'], ['--max-connections-per-ip=-1'], ['--max-connections=1.5'], ['--max-connections=lots'], ['--max-connections=99999999']])('%s: an error naming the flag, with an example', (arg) => {
    const err = configError([arg]);
    expect(err.message).toMatch(new RegExp(`^${arg.slice(0, arg.indexOf('='))}: .*whole number.*e\\.g\\. --max-connections`));
  });
});
