/**
 * Broker mode's flags: the agent's --broker family (config.ts, credentials/broker-flags.ts) and
 * `podiam broker`'s own (broker/config.ts), which shares the role policy flags with the agent.
 */
import { parseBrokerConfig, brokerHelpText, BROKER_FLAGS } from '../../src/broker/config.js';
import type { BrokerConfig } from '../../src/broker/config.js';
import { parseConfig } from '../../src/config.js';
import type { Config } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

const ENV = {};
const BROKER = ['--broker=https://podiam-broker.kube-system.svc:8443', '--broker-ca-file=/ca.crt', '--node=n1'];

function agent(args: string[]): Config {
  const r = parseConfig(args, ENV);
  if (r.kind !== 'run') throw new Error(r.kind);
  return r.config;
}
function broker(args: string[]): BrokerConfig {
  const r = parseBrokerConfig(args, ENV);
  if (r.kind !== 'run') throw new Error(r.kind);
  return r.config;
}
function error(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error('no error');
}

describe('agent: --broker', () => {
  it('is off by default: standalone, as today', () => {
    expect(agent([]).broker).toBeUndefined();
  });

  it('takes https replicas, the CA, the token file and the timeout', () => {
    const c = agent([...BROKER.slice(1), '--broker=https://b1:8443, https://b2:8443', '--broker-token-file=/t', '--broker-timeout=1500ms']);
    expect(c.broker).toEqual({ urls: ['https://b1:8443', 'https://b2:8443'], caFile: '/ca.crt', tokenFile: '/t', timeoutMs: 1500 });
    expect(agent(BROKER).broker).toMatchObject({ tokenFile: '/var/run/secrets/podiam/broker/token', timeoutMs: 2000 });
  });

  it('refuses plain http, paths, a duplicate replica, a missing CA or node', () => {
    expect(error(() => agent(['--broker=http://b:8443', '--broker-ca-file=/c', '--node=n']))).toMatch(/^--broker: .*not an https URL/);
    expect(error(() => agent(['--broker=https://b:8443/v1', '--broker-ca-file=/c', '--node=n']))).toMatch(/^--broker: .*scheme, host and port only/);
    expect(error(() => agent(['--broker=https://b:8443,https://b:8443', '--broker-ca-file=/c', '--node=n']))).toMatch(/^--broker: .*twice/);
    expect(error(() => agent(['--broker=https://b:8443', '--node=n']))).toMatch(/^--broker-ca-file: is required with --broker/);
    expect(error(() => agent(['--broker=https://b:8443', '--broker-ca-file=/c']))).toMatch(/^--node: --broker needs/);
  });

  it('refuses every role policy flag with --broker, naming it: they are the broker’s', () => {
    for (const flag of ['--base-role-arn=arn:aws:iam::123456789012:role/', '--default-role=x', '--namespace-restrictions', '--session-tags', '--sts-region=eu-west-1', '--iam-role-session-ttl=2h', '--auto-discover-base-arn', '--session-scope=role']) {
      const name = flag.split('=')[0]!;
      expect(error(() => agent([...BROKER, flag]))).toMatch(new RegExp(`^${name}: belongs to the broker with --broker: give ${name}`));
    }
    // Without --broker, the same flags are the agent's, as today.
    expect(agent(['--base-role-arn=arn:aws:iam::123456789012:role/', '--namespace-restrictions']).namespaceRestrictions).toBe(true);
  });
});

describe('podiam broker flags', () => {
  it('defaults as the contract says', () => {
    const c = broker([]);
    expect(c).toMatchObject({ port: 8443, metricsPort: 9191, agentServiceAccount: { namespace: 'kube-system', name: 'podiam' }, agentAudience: 'podiam-broker', tokenAudience: 'pods.eks.amazonaws.com', stsQps: 10, host: undefined });
  });

  it('takes the role policy flags with the agent’s meaning and checks', () => {
    const c = broker(['--base-role-arn=arn:aws:iam::123456789012:role', '--namespace-restrictions', '--namespace-restriction-format=regexp', '--session-tags', '--cluster-name=prod', '--iam-role-session-ttl=2h']);
    expect(c).toMatchObject({ baseRoleArn: 'arn:aws:iam::123456789012:role/', namespaceRestrictions: true, namespaceRestrictionFormat: 'regexp', sessionTags: true, clusterName: 'prod', sessionTtlSeconds: 7200 });
    expect(error(() => broker(['--base-role-arn=nope']))).toMatch(/^--base-role-arn: /);
    expect(error(() => broker(['--session-tags', '--session-scope=role']))).toMatch(/^--session-tags: cannot be combined/);
    expect(error(() => broker(['--auto-discover-default-role']))).toMatch(/^--auto-discover-default-role: refused/);
  });

  it('refuses a bad agent ServiceAccount, rate, equal audiences, equal ports, unknown flags', () => {
    expect(error(() => broker(['--agent-service-account=podiam']))).toMatch(/^--agent-service-account: .*<namespace>\/<name>/);
    expect(error(() => broker(['--agent-service-account=a/b/c']))).toMatch(/^--agent-service-account: /);
    expect(error(() => broker(['--sts-qps=0']))).toMatch(/^--sts-qps: /);
    expect(error(() => broker(['--sts-qps=fast']))).toMatch(/^--sts-qps: /);
    expect(broker(['--sts-qps=2.5']).stsQps).toBe(2.5);
    expect(error(() => broker(['--agent-audience=pods.eks.amazonaws.com']))).toMatch(/^--agent-audience: must differ from --token-audience/);
    expect(error(() => broker(['--metrics-port=8443']))).toMatch(/^--metrics-port: must differ/);
    expect(error(() => broker(['--app-port=8181']))).toMatch(/unknown flag for podiam broker/);
  });

  it('--peers: off by default; with it, this pod\'s name and the certificate name are required, and the companions need it', () => {
    expect(broker([]).peers).toBeUndefined();
    const c = broker(['--peers=kube-system/podiam-broker', '--pod-name=podiam-broker-7d9f-abcde', '--peer-tls-name=podiam-broker.kube-system.svc']);
    expect(c.peers).toEqual({ namespace: 'kube-system', serviceAccount: 'podiam-broker', podName: 'podiam-broker-7d9f-abcde', tlsName: 'podiam-broker.kube-system.svc', caFile: '/etc/podiam/broker/ca/ca.crt', tokenFile: '/var/run/secrets/podiam/peer/token' });
    expect(Object.isFrozen(c.peers)).toBe(true);
    expect(error(() => broker(['--peers=podiam-broker']))).toMatch(/^--peers: .*<namespace>\/<name>/);
    expect(error(() => broker(['--peers=kube-system/podiam-broker', '--peer-tls-name=x.svc']))).toMatch(/^--pod-name: is required with --peers/);
    expect(error(() => broker(['--peers=kube-system/podiam-broker', '--pod-name=p']))).toMatch(/^--peer-tls-name: is required with --peers/);
    expect(error(() => broker(['--pod-name=p']))).toMatch(/^--pod-name: is used only with --peers/);
    // The agents' ServiceAccount as the replicas': every agent could ask for any role.
    expect(error(() => broker(['--peers=kube-system/podiam', '--pod-name=p', '--peer-tls-name=x.svc']))).toMatch(/^--peers: must differ from --agent-service-account/);
    expect(error(() => broker(['--peers=kube-system/podiam-broker', '--pod-name=P_1', '--peer-tls-name=x.svc']))).toMatch(/^--pod-name: /);
  });

  it('--help lists every flag', () => {
    expect(parseBrokerConfig(['--help']).kind).toBe('help');
    for (const f of BROKER_FLAGS) expect(brokerHelpText()).toContain(`--${f.name}`);
  });
});
