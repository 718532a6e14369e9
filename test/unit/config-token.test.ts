/** The token identity and session tag flags: defaults as EKS uses them, and bad values exit 2 naming the flag. */
import type { Config } from '../../src/config.js';
import { parseConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

const run = (...argv: string[]): Config => {
  const r = parseConfig(argv, {});
  if (r.kind !== 'run') throw new Error(r.kind);
  return r.config;
};
const refused = (arg: string, flag: string): void => {
  try {
    run(arg);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).flag).toBe(flag);
    expect((err as Error).message).toMatch(/e\.g\. --/);
    return;
  }
  throw new Error(`${arg} was accepted`);
};

test('defaults: off, on the EKS addresses, with the EKS audience, no tags', () => {
  const c = run();
  expect(c.tokenIdentity).toBe(false);
  expect(c.tokenAddrs).toEqual([{ host: '169.254.170.23', port: 80 }, { host: 'fd00:ec2::23', port: 80 }]);
  expect(c.tokenAudience).toBe('pods.eks.amazonaws.com');
  expect(c.tokenInterface).toBeUndefined();
  expect(c.sessionTags).toBe(false);
  expect(c.clusterName).toBeUndefined();
  expect(Object.isFrozen(c.tokenAddrs)).toBe(true);
});

test('values', () => {
  const c = run('--token-identity', '--token-addr=127.0.0.1:18099', '--token-audience=podiam', '--token-interface=lo', '--session-tags', '--cluster-name=prod-eu');
  expect(c).toMatchObject({ tokenIdentity: true, tokenAddrs: [{ host: '127.0.0.1', port: 18099 }], tokenAudience: 'podiam', tokenInterface: 'lo', sessionTags: true, clusterName: 'prod-eu' });
});

test('bad values name the flag', () => {
  refused('--token-addr=localhost:80', '--token-addr');
  refused('--token-addr=127.0.0.1:99999', '--token-addr');
  refused('--token-audience=has space', '--token-audience');
  refused('--token-interface=way-too-long-interface', '--token-interface');
  refused('--cluster-name=no;semicolons', '--cluster-name');
});
