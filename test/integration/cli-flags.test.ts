/**
 * Every bad flag value makes the real CLI exit 2 with a message naming the flag and a valid
 * example. Runs the built CLI (dist/podiam.js, the bundle) as an operator would.
 */
import { runCli } from '../support/podiam-process.js';

const BAD: Array<[string[], string]> = [
  [['--app-port=0'], '--app-port'],
  [['--app-port=70000'], '--app-port'],
  [['--app-port=abc'], '--app-port'],
  [['--metrics-port=-1'], '--metrics-port'],
  [['--host-ip=nope'], '--host-ip'],
  [['--host-interface=a b'], '--host-interface'],
  [['--metadata-addr=http://169.254.169.254'], '--metadata-addr'],
  [['--metadata-addr=127.0.0.1:99999'], '--metadata-addr'],
  [['--metadata-timeout=soon'], '--metadata-timeout'],
  [['--base-role-arn=foo'], '--base-role-arn'],
  [['--base-role-arn=arn:aws:iam::12:role/'], '--base-role-arn'],
  [['--default-role=a b'], '--default-role'],
  [['--default-role=arn:aws:iam::123:role/x'], '--default-role'],
  [['--iam-role-session-ttl=5m'], '--iam-role-session-ttl'],
  [['--iam-role-session-ttl=13h'], '--iam-role-session-ttl'],
  [['--iam-role-session-ttl=1x'], '--iam-role-session-ttl'],
  [['--pod-wait=forever'], '--pod-wait'],
  [['--pod-wait=31s'], '--pod-wait'],
  [['--sts-timeout=1'], '--sts-timeout'],
  [['--namespace-restriction-format=xml'], '--namespace-restriction-format'],
  [['--log-format=xml'], '--log-format'],
  [['--log-level=loud'], '--log-level'],
  [['--iptables=maybe'], '--iptables'],
  [['--iptables', '--node=n'], '--host-ip'],
  [['--iptables', '--host-ip=fd00::1'], '--host-ip'],
  [['--api-server=http://127.0.0.1:1'], '--api-server'],
  [['--api-server=not a url', '--insecure'], '--api-server'],
  [['--auto-discover-base-arn', '--base-role-arn=arn:aws:iam::123456789012:role/'], '--auto-discover-base-arn'],
  [['--auto-discover-default-role'], '--auto-discover-default-role'],
  [['--no-such-flag=1'], '--no-such-flag'],
  [['--app-port'], '--app-port'],
  [['stray'], 'stray'],
  [['--iam-role-error-ttl=x'], '--iam-role-error-ttl'],
];

describe.each(BAD)('podiam %j', (args, flag) => {
  test(`exits 2 naming ${flag}`, async () => {
    const r = await runCli(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(flag);
    expect(r.stderr).toMatch(/e\.g\.|see podiam --help|flags look like/);
    expect(r.stdout).toBe('');
  });
});

test('a role name as --default-role without a base ARN is refused at start-up', async () => {
  const r = await runCli(['--default-role=fallback', '--api-server=http://127.0.0.1:1', '--insecure', '--metadata-addr=127.0.0.1:1']);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain('--default-role');
  expect(r.stderr).toContain('--base-role-arn');
});

test('--auto-discover-base-arn with no metadata service exits non-zero naming the flag', async () => {
  const r = await runCli(['--auto-discover-base-arn', '--metadata-addr=127.0.0.1:1', '--metadata-timeout=200ms', '--api-server=http://127.0.0.1:1', '--insecure']);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain('--auto-discover-base-arn');
});

test('--help lists every kube2iam flag and exits 0', async () => {
  const r = await runCli(['--help']);
  expect(r.code).toBe(0);
  for (const flag of ['app-port', 'metrics-port', 'host-ip', 'host-interface', 'iptables', 'metadata-addr', 'base-role-arn', 'auto-discover-base-arn', 'default-role', 'iam-role-key', 'iam-external-id', 'namespace-key', 'namespace-restrictions', 'namespace-restriction-format', 'iam-role-session-ttl', 'node', 'kubeconfig', 'api-server', 'api-token', 'insecure', 'log-format', 'log-level', 'verbose', 'debug', 'version']) {
    expect(r.stdout).toContain(`--${flag} `);
  }
});

test('--version prints the package version', async () => {
  const r = await runCli(['--version']);
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^podiam \d+\.\d+\.\d+\n$/);
});
