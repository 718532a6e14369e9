/**
 * The kube2iam drop-in pieces that are pure: flag meanings, STS refusal classification and its
 * negative cache, role-scoped sessions, the port-holder parser, the allowed-roles audit.
 */
import { mkdtemp, mkdir, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Config } from '../../src/config.js';
import { parseConfig } from '../../src/config.js';
import { ConfigError, StsUnavailable } from '../../src/errors.js';
import { classify, StsError } from '../../src/aws/sts.js';
import type { AwsCredentials, RoleAssumer } from '../../src/aws/sts.js';
import { CredentialCache } from '../../src/aws/credential-cache.js';
import { roleScoped } from '../../src/aws/session-scope.js';
import type { NamespaceInfo, PodInfo, RoleRequest } from '../../src/roles.js';
import { RoleResolver } from '../../src/roles.js';
import { describeHolder, findPortHolder, listeningSockets } from '../../src/port-holder.js';
import { AllowedRolesAudit } from '../../src/allowed-roles-audit.js';
import { FakeClock, flushPromises } from '../support/fake-clock.js';
import { rolePolicy } from '../support/role-policy.js';

function run(argv: string[]): Config {
  const r = parseConfig(argv, {});
  if (r.kind !== 'run') throw new Error(r.kind);
  return r.config;
}

function configError(argv: string[]): ConfigError {
  try {
    parseConfig(argv, {});
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('kube2iam flags', () => {
  it.each([
    ['trace', 'debug'],
    ['TRACE', 'debug'],
    ['debug', 'debug'],
    ['Info', 'info'],
    ['warning', 'warn'],
    ['WARN', 'warn'],
    ['error', 'error'],
    ['fatal', 'error'],
    ['panic', 'error'],
  ])('--log-level=%s (logrus) is %s', (given, level) => {
    expect(run([`--log-level=${given}`]).logLevel).toBe(level);
  });

  it.each([
    ['JSON', 'json'],
    ['Json', 'json'],
    ['TEXT', 'text'],
  ])('--log-format=%s is %s', (given, format) => {
    expect(run([`--log-format=${given}`]).logFormat).toBe(format);
  });

  it('--namespace-restriction-format takes any case and the anchored variant', () => {
    expect(run(['--namespace-restriction-format=REGEXP']).namespaceRestrictionFormat).toBe('regexp');
    expect(run(['--namespace-restriction-format=regexp-anchored']).namespaceRestrictionFormat).toBe('regexp-anchored');
    expect(run([]).namespaceRestrictionFormat).toBe('glob');
  });

  it('--auto-discover-default-role is refused with the explicit equivalent and why', () => {
    const err = configError(['--auto-discover-default-role']);
    expect(err.message).toContain('--auto-discover-default-role');
    expect(err.message).toContain("--default-role=<the node's role>");
    expect(err.message).toContain("node's permissions");
    expect(err.message).not.toMatch(/e\.g\. --auto-discover-default-role/);
    expect(run(['--auto-discover-default-role=false']).defaultRole).toBeUndefined();
  });

  it('--iam-role-error-ttl is the STS refusal TTL: default 30s, at least 1s, kube2iam 0s accepted', () => {
    expect(run([]).stsRefusalTtlMs).toBe(30_000);
    expect(run(['--iam-role-error-ttl=5m']).stsRefusalTtlMs).toBe(300_000);
    expect(run(['--iam-role-error-ttl=0s']).stsRefusalTtlMs).toBe(1000);
    expect(configError(['--iam-role-error-ttl=2h']).message).toContain('--iam-role-error-ttl');
  });

  it('lists the ignored kube2iam flags given, by name, and only those', () => {
    expect(run(['--backoff-max-interval=1s', '--cache-resync-period=30m', '--resolve-duplicate-cache-ips', '--use-regional-sts-endpoint', '--debug']).ignoredFlags).toEqual([
      '--backoff-max-interval',
      '--cache-resync-period',
      '--resolve-duplicate-cache-ips',
      '--use-regional-sts-endpoint',
    ]);
    expect(run(['--iam-role-error-ttl=1m']).ignoredFlags).toEqual([]);
  });

  it('--session-scope and --allow-signed-identity', () => {
    expect(run([]).sessionScope).toBe('pod');
    expect(run(['--session-scope=role']).sessionScope).toBe('role');
    expect(configError(['--session-scope=node']).message).toContain('--session-scope');
    expect(run([]).allowSignedIdentity).toBe(false);
    expect(run(['--allow-signed-identity']).allowSignedIdentity).toBe(true);
  });
});

describe('STS refusals', () => {
  const ROLE = 'arn:aws:iam::123456789012:role/app';
  const sdkError = (name: string, status: number, message: string) => Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status }, $fault: status >= 500 ? 'server' : 'client' });

  it('AccessDenied is RoleNotTrusted, 403, not retryable, naming the node role STS names', () => {
    const err = classify(ROLE, sdkError('AccessDenied', 403, 'User: arn:aws:sts::123456789012:assumed-role/node-role/i-0abc is not authorized to perform: sts:AssumeRole on resource: ' + ROLE));
    expect(err.code).toBe('RoleNotTrusted');
    expect(err.status).toBe(403);
    expect(err.retryable).toBe(false);
    expect(err.message).toContain(`role ${ROLE} does not trust this node's role node-role`);
    expect(err.message).toContain('is not authorized to perform: sts:AssumeRole');
  });

  it('an invalid role ARN is RoleInvalid, 403', () => {
    const err = classify(ROLE, sdkError('ValidationError', 400, "1 validation error detected: Value 'x' at 'roleArn' failed to satisfy constraint"));
    expect(err.code).toBe('RoleInvalid');
    expect(err.status).toBe(403);
  });

  it('throttling and 5xx stay StsUnavailable, 500, retryable', () => {
    for (const e of [sdkError('Throttling', 400, 'Rate exceeded'), sdkError('InternalFailure', 500, 'oops'), sdkError('ServiceUnavailable', 503, 'not authorized to be down')]) {
      const err = classify(ROLE, e);
      expect(err.code).toBe('StsUnavailable');
      expect(err.status).toBe(500);
      expect(err.retryable).toBe(true);
    }
  });

  it('a refusal is answered from memory for exactly --iam-role-error-ttl, then STS is asked again', async () => {
    const clock = new FakeClock(1_000_000);
    let calls = 0;
    let refuse = true;
    const assumer: RoleAssumer = {
      assume: async (r: RoleRequest): Promise<AwsCredentials> => {
        calls++;
        if (refuse) throw classify(r.roleArn, sdkError('AccessDenied', 403, 'not authorized'));
        return { accessKeyId: 'ASIAX', secretAccessKey: 's', sessionToken: 't', expiration: new Date(clock.now() + 3_600_000) };
      },
    };
    const cache = new CredentialCache({ assumer, clock, render: () => Buffer.from('{}'), refusalTtlMs: 30_000, random: () => 0.5 });
    const req: RoleRequest = { roleArn: ROLE, roleName: 'app', externalId: undefined, sessionName: 'ns.pod', pod: 'ns/pod' };
    await expect(cache.get(req)).rejects.toMatchObject({ code: 'RoleNotTrusted', status: 403 });
    for (let i = 0; i < 50; i++) await expect(cache.get(req)).rejects.toBeInstanceOf(StsUnavailable);
    expect(calls).toBe(1);
    await clock.advance(29_000);
    await flushPromises();
    await expect(cache.get(req)).rejects.toBeInstanceOf(StsError);
    expect(calls).toBe(1);
    refuse = false;
    await clock.advance(1_000);
    await flushPromises();
    expect((await cache.get(req)).accessKeyId).toBe('ASIAX');
    expect(calls).toBe(2);
    cache.stop();
  });
});

describe('--session-scope=role', () => {
  const policy = rolePolicy();
  const pod = (name: string, annotations: Record<string, string>, namespace = 'ns'): PodInfo => ({ namespace, name, uid: name, ips: ['10.0.0.1'], phase: 'Running', hostNetwork: false, createdMs: 0, deleting: false, annotations });

  it('pods with the same role and external id share one request; others do not', () => {
    const roles = roleScoped(new RoleResolver(policy), 'node-1');
    const a = roles.resolve(pod('a', { 'iam.amazonaws.com/role': 'app' }), undefined) as RoleRequest;
    const b = roles.resolve(pod('b', { 'iam.amazonaws.com/role': 'app' }, 'other'), undefined) as RoleRequest;
    const c = roles.resolve(pod('c', { 'iam.amazonaws.com/role': 'app', 'iam.amazonaws.com/external-id': 'ext-1' }), undefined) as RoleRequest;
    const d = roles.resolve(pod('d', { 'iam.amazonaws.com/role': 'db' }), undefined) as RoleRequest;
    expect(b).toBe(a);
    expect(c).not.toBe(a);
    expect(d).not.toBe(a);
    expect(a.sessionName).toBe('node-1.app');
    expect(c.externalId).toBe('ext-1');
  });

  it('denials pass through', () => {
    const roles = roleScoped(new RoleResolver(policy), 'node-1');
    expect(roles.resolve(pod('x', {}), undefined)).toBeInstanceOf(Error);
  });
});

describe('who holds the port', () => {
  const TCP = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 0100007F:1FF5 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0',
    '   1: 0100007F:1FF5 0100007F:D2C4 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 100 0 0 10 0',
    '   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 100 0 0 10 0',
  ].join('\n');

  it('finds the listening socket of a port in /proc/net/tcp', () => {
    expect(listeningSockets(TCP, 8181)).toEqual([{ inode: '4242', uid: 0 }]);
    expect(listeningSockets(TCP, 80)).toEqual([{ inode: '777', uid: 1000 }]);
    expect(listeningSockets(TCP, 9999)).toEqual([]);
  });

  it('finds the process by its fd link, and reports only pid and command name', async () => {
    const proc = await mkdtemp(path.join(tmpdir(), 'podiam-proc-'));
    await mkdir(path.join(proc, 'net'));
    await writeFile(path.join(proc, 'net/tcp'), TCP);
    await mkdir(path.join(proc, '321/fd'), { recursive: true });
    await writeFile(path.join(proc, '321/comm'), 'kube2iam\n');
    await writeFile(path.join(proc, '321/cmdline'), 'kube2iam\0--api-token=secret\0');
    await symlink('socket:[4242]', path.join(proc, '321/fd/7'));
    const holder = await findPortHolder(8181, proc);
    expect(holder).toEqual({ port: 8181, inode: '4242', uid: 0, pid: 321, command: 'kube2iam' });
    expect(describeHolder(holder)).toBe('pid 321 (kube2iam), uid 0');
    expect(describeHolder(holder)).not.toContain('secret');
    const outside = await findPortHolder(80, proc);
    expect(describeHolder(outside)).toContain('uid 1000');
    expect(await findPortHolder(9999, proc)).toBeUndefined();
  });

  it('names the program by its executable when it has one: Node 24 calls its main thread "MainThread"', async () => {
    const proc = await mkdtemp(path.join(tmpdir(), 'podiam-proc-'));
    await mkdir(path.join(proc, 'net'));
    await writeFile(path.join(proc, 'net/tcp'), TCP);
    await mkdir(path.join(proc, '654/fd'), { recursive: true });
    await writeFile(path.join(proc, '654/comm'), 'MainThread\n');
    await symlink('/usr/local/bin/node', path.join(proc, '654/exe'));
    await symlink('socket:[4242]', path.join(proc, '654/fd/9'));
    expect(describeHolder(await findPortHolder(8181, proc))).toBe('pid 654 (node), uid 0');
  });
});

describe('allowed-roles audit', () => {
  const base = rolePolicy({ namespaceRestrictions: true, namespaceRestrictionFormat: 'regexp' });
  const ns = (entries: string[]): NamespaceInfo => ({ name: 'team-a', annotations: { 'iam.amazonaws.com/allowed-roles': JSON.stringify(entries) } });
  const sinks = () => {
    const s = { warnings: [] as string[], invalid: 0, unanchored: 0, events: [] as string[] };
    return {
      s,
      sinks: {
        warn: (m: string) => s.warnings.push(m),
        invalidEntry: () => s.invalid++,
        unanchoredMatch: () => s.unanchored++,
        namespaceEvent: (_n: string, reason: string, message: string) => s.events.push(`${reason}: ${message}`),
      },
    };
  };

  it('reports a bad entry once (log, metric, Event) and unanchored-only matches once per role', () => {
    const { s, sinks: k } = sinks();
    const audit = new AllowedRolesAudit(base, k);
    const n = ns(['app-[', 'app', 'db-(ro|rw)']);
    audit.check(n, ['arn:aws:iam::123456789012:role/app-admin', 'arn:aws:iam::123456789012:role/app', 'arn:aws:iam::123456789012:role/db-ro']);
    audit.check(ns(['app-[', 'app', 'db-(ro|rw)']), ['arn:aws:iam::123456789012:role/app-admin']);
    expect(s.invalid).toBe(1);
    expect(s.events).toHaveLength(1);
    expect(s.events[0]).toContain('InvalidAllowedRole');
    expect(s.events[0]).toContain('app-[');
    expect(s.unanchored).toBe(1);
    expect(s.warnings).toEqual(['allowed-roles entry skipped', 'allowed-roles entry matches only because kube2iam regexps are unanchored']);
  });

  it('stays quiet for glob, and in anchored mode reports only bad entries', () => {
    const g = sinks();
    new AllowedRolesAudit({ ...base, namespaceRestrictionFormat: 'glob' }, g.sinks).check(ns(['app-[']), []);
    expect(g.s.warnings).toEqual([]);
    const a = sinks();
    new AllowedRolesAudit({ ...base, namespaceRestrictionFormat: 'regexp-anchored' }, a.sinks).check(ns(['app-[', 'app']), ['arn:aws:iam::123456789012:role/app-admin']);
    expect(a.s.invalid).toBe(1);
    expect(a.s.unanchored).toBe(0);
  });
});
