/**
 * kube2iam drop-in, through the real CLI on loopback: every kube2iam 0.15 flag (its cmd/main.go)
 * is accepted or refused as the README's table says; STS refusing a role is a 403 denial with an
 * Event and no STS storm; --session-scope=role shares one session per role; allowed-roles regexps
 * decide as kube2iam; a taken app port is waited for, not a crash.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from '../support/net.js';
import { CLI, PodiamProcess, ROOT, awsTestEnv, runCli } from '../support/podiam-process.js';
import { sleep, waitFor } from '../support/wait.js';
import { ACCOUNT, BASE_ARN, NODE, World } from '../support/world.js';

const CREDS = '/latest/meta-data/iam/security-credentials/';

/** kube2iam 0.15.0 cmd/main.go addFlags, in its order. */
const KUBE2IAM_FLAGS = [
  'kubeconfig', 'api-server', 'api-token', 'app-port', 'metrics-port', 'base-role-arn', 'debug', 'default-role', 'iam-role-key',
  'iam-external-id', 'iam-role-session-ttl', 'iam-role-error-ttl', 'insecure', 'metadata-addr', 'iptables', 'auto-discover-base-arn',
  'auto-discover-default-role', 'host-interface', 'namespace-restrictions', 'namespace-restriction-format', 'namespace-key',
  'cache-resync-period', 'resolve-duplicate-cache-ips', 'host-ip', 'node', 'backoff-max-interval', 'backoff-max-elapsed-time',
  'log-format', 'log-level', 'use-regional-sts-endpoint', 'verbose', 'version',
];

type Verdict = 'same' | 'mapped' | 'ignored' | 'refused';

/** The README's "kube2iam flag | in podiam" table: flag -> verdict. */
function readmeTable(): Map<string, Verdict> {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const table = new Map<string, Verdict>();
  for (const m of readme.matchAll(/^\| `--([a-z-]+)` \| (same|mapped|ignored|refused)\b/gm)) table.set(m[1]!, m[2] as Verdict);
  return table;
}

let world: World;
beforeAll(async () => {
  world = await World.start();
});
afterAll(async () => {
  await world?.stop();
});

describe('every kube2iam flag', () => {
  const table = readmeTable();

  test('the README table lists each kube2iam 0.15 flag exactly once, with a verdict', () => {
    expect([...table.keys()].sort()).toEqual([...KUBE2IAM_FLAGS].sort());
  });

  test('a kube2iam DaemonSet args list starts and serves; ignored flags are named once at start', async () => {
    const port = await freePort();
    const metricsPort = await freePort();
    world.kube.createNamespace({ metadata: { name: 'k2i', annotations: { 'iam.amazonaws.com/allowed-roles': JSON.stringify(['app', 'app-[']) } } });
    const appIp = world.nextIp();
    world.pod('k2i-app', { ip: appIp, role: 'app-admin', namespace: 'k2i' });
    const plainIp = world.nextIp();
    world.pod('k2i-plain', { ip: plainIp, namespace: 'k2i' });
    const given: Record<string, string> = {
      'api-server': `--api-server=${world.kube.url}`,
      'api-token': '--api-token=not-checked-by-the-test-server',
      'app-port': `--app-port=${port}`,
      'metrics-port': `--metrics-port=${metricsPort}`,
      'base-role-arn': `--base-role-arn=${BASE_ARN}`,
      debug: '--debug',
      'default-role': '--default-role=fallback',
      'iam-role-key': '--iam-role-key=iam.amazonaws.com/role',
      'iam-external-id': '--iam-external-id=iam.amazonaws.com/external-id',
      'iam-role-session-ttl': '--iam-role-session-ttl=15m',
      'iam-role-error-ttl': '--iam-role-error-ttl=0s',
      insecure: '--insecure',
      'metadata-addr': `--metadata-addr=127.0.0.1:${world.imds.port}`,
      iptables: '--iptables=false',
      'host-interface': '--host-interface=cali+',
      'namespace-restrictions': '--namespace-restrictions',
      'namespace-restriction-format': '--namespace-restriction-format=regexp',
      'namespace-key': '--namespace-key=iam.amazonaws.com/allowed-roles',
      'cache-resync-period': '--cache-resync-period=30m',
      'resolve-duplicate-cache-ips': '--resolve-duplicate-cache-ips',
      'host-ip': '--host-ip=127.0.0.1',
      node: `--node=${NODE}`,
      'backoff-max-interval': '--backoff-max-interval=1s',
      'backoff-max-elapsed-time': '--backoff-max-elapsed-time=2s',
      'log-format': '--log-format=JSON',
      'log-level': '--log-level=trace',
      'use-regional-sts-endpoint': '--use-regional-sts-endpoint',
      verbose: '--verbose',
    };
    const accepted = KUBE2IAM_FLAGS.filter((f) => table.get(f) !== 'refused' && f !== 'version' && f !== 'kubeconfig' && f !== 'auto-discover-base-arn');
    expect(Object.keys(given).sort()).toEqual(accepted.sort());
    const p = await PodiamProcess.start(Object.values(given), awsTestEnv(world.sts.url), { port });
    try {
      // JSON logs (--log-format=JSON), debug lines (--log-level=trace), the ignored flags by name, once.
      const lines = p.logLines();
      const ignoredLines = lines.filter((l) => String(l.message).startsWith('kube2iam flags accepted and ignored'));
      expect(ignoredLines).toHaveLength(1);
      expect((ignoredLines[0]!.flags as string[]).sort()).toEqual(KUBE2IAM_FLAGS.filter((f) => table.get(f) === 'ignored').map((f) => `--${f}`).sort());
      // regexp as kube2iam: "app" allows app-admin (unanchored), "app-[" is skipped, not a denial.
      const served = await p.get(CREDS + 'app-admin', appIp);
      expect(served.status).toBe(200);
      expect(await world.callerArn(JSON.parse(served.body))).toContain(':assumed-role/app-admin/');
      expect((await p.get(CREDS, plainIp)).body).toBe('fallback');
      // Requests are logged at debug level: with --log-level=trace they are there.
      await waitFor(() => p.logLines().some((l) => l.level === 'debug' && l.message === 'request'), 5000, 'a debug line');
      // --metrics-port: /metrics is on its own port.
      const metric = async (name: string): Promise<string | undefined> => {
        const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
        return text.split('\n').find((l) => l.startsWith(`${name}{namespace="k2i"}`))?.split(' ')[1];
      };
      await waitFor(async () => (await metric('podiam_allowed_roles_unanchored_matches_total')) === '1', 5000, 'unanchored warning');
      expect(await metric('podiam_allowed_roles_invalid_entries_total')).toBe('1');
      await waitFor(() => world.kube.events().some((e) => (e as { reason?: string }).reason === 'PodiamInvalidAllowedRole'), 5000, 'Event on the namespace');
      expect((await p.get('/metrics')).status).toBe(404);
      expect((await p.get('/debug/store')).status).toBe(200);
    } finally {
      await p.stop();
    }
  });

  test('--kubeconfig and --auto-discover-base-arn (from iam/info) start and serve', async () => {
    const port = await freePort();
    const dir = mkdtempSync(path.join(tmpdir(), 'podiam-k2i-'));
    const kubeconfig = path.join(dir, 'kubeconfig');
    writeFileSync(kubeconfig, `apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: ${world.kube.url}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n`);
    const ip = world.nextIp();
    world.pod('k2i-discovered', { ip, role: 'discovered' });
    const p = await PodiamProcess.start(
      [`--kubeconfig=${kubeconfig}`, '--auto-discover-base-arn', `--app-port=${port}`, '--host-ip=127.0.0.1', `--metadata-addr=127.0.0.1:${world.imds.port}`, `--node=${NODE}`, '--log-format=json'],
      awsTestEnv(world.sts.url),
      { port },
    );
    try {
      const r = await p.get(CREDS + 'discovered', ip);
      expect(r.status).toBe(200);
      expect(p.logLines().some((l) => l.message === 'discovered base role ARN' && l.baseRoleArn === `arn:aws:iam::${ACCOUNT}:role/`)).toBe(true);
    } finally {
      await p.stop();
    }
  });

  test('--version prints the version and exits 0', async () => {
    expect(table.get('version')).toBe('same');
    const r = await runCli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^podiam \d+\.\d+\.\d+\n$/);
  });

  test.each(KUBE2IAM_FLAGS.filter((f) => readmeTable().get(f) === 'refused'))('--%s is refused (exit 2) with its replacement', async (flag) => {
    const r = await runCli([`--${flag}`, '--metadata-addr=127.0.0.1:1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--${flag}`);
    expect(r.stderr).toContain("--default-role=<the node's role>");
  });
});

describe('STS refusing the role is a denial', () => {
  let podiam: PodiamProcess;
  beforeAll(async () => {
    podiam = await world.podiam(['--iam-role-error-ttl=30s']);
  });
  afterAll(async () => {
    await podiam.stop();
  });
  afterEach(() => world.sts.reset());

  test('AccessDenied -> 403 RoleNotTrusted with the reason, one Event, the denial metric, no STS storm', async () => {
    const ip = world.nextIp();
    const roleArn = `${BASE_ARN}untrusting`;
    const reason = `User: arn:aws:sts::${ACCOUNT}:assumed-role/node-role/i-0123456789abcdef0 is not authorized to perform: sts:AssumeRole on resource: ${roleArn}`;
    world.sts.failNext(1_000, { status: 403, code: 'AccessDenied', message: reason, action: 'AssumeRole' });
    world.pod('untrusting', { ip, role: 'untrusting' });
    const eventsBefore = world.kube.events().length;
    const statuses: number[] = [];
    const bodies = new Set<string>();
    const until = Date.now() + 3000;
    while (Date.now() < until) {
      const batch = await Promise.all(Array.from({ length: 4 }, () => podiam.get(CREDS + 'untrusting', ip)));
      for (const b of batch) {
        statuses.push(b.status);
        bodies.add(b.body);
      }
      await sleep(50);
    }
    expect(statuses.length).toBeGreaterThan(20);
    expect(new Set(statuses)).toEqual(new Set([403]));
    const body = [...bodies][0]!;
    expect(body).toContain('RoleNotTrusted');
    expect(body).toContain(`role ${roleArn} does not trust this node's role node-role`);
    expect(body).toContain('is not authorized to perform: sts:AssumeRole');
    // One STS call (prefetch or the first request), whatever the pod does, for the TTL.
    expect(world.sts.countFor(roleArn)).toBe(1);
    expect(await podiam.metric('podiam_denials_total', { code: 'RoleNotTrusted' })).toBe(statuses.length);
    await waitFor(() => world.kube.events().length > eventsBefore, 5000, 'the Event');
    await sleep(300);
    const events = world.kube.events().slice(eventsBefore) as Array<{ reason?: string; message?: string; involvedObject?: { name?: string } }>;
    expect(events).toHaveLength(1);
    expect(events[0]!.reason).toBe('PodiamRoleNotTrusted');
    expect(events[0]!.involvedObject?.name).toBe('untrusting');
    expect(events[0]!.message).toContain("does not trust this node's role node-role");
  });

  test('throttling stays a 500 StsUnavailable', async () => {
    const ip = world.nextIp();
    world.sts.failNext(1_000, { status: 400, code: 'Throttling', message: 'Rate exceeded', action: 'AssumeRole' });
    world.pod('throttled-k2i', { ip, role: 'throttled-k2i' });
    const r = await podiam.get(CREDS + 'throttled-k2i', ip);
    expect(r.status).toBe(500);
    expect(r.body).toContain('StsUnavailable');
  });
});

describe('--session-scope=role', () => {
  test('two pods sharing a role make one AssumeRole; the default makes one per pod', async () => {
    const roleArn = `${BASE_ARN}shared-role`;
    const ips = [world.nextIp(), world.nextIp()];
    world.pod('shared-1', { ip: ips[0]!, role: 'shared-role' });
    world.pod('shared-2', { ip: ips[1]!, role: 'shared-role', namespace: 'default' });
    world.sts.reset();
    const role = await world.podiam(['--session-scope=role']);
    const keys = [];
    for (const ip of ips) {
      const r = await role.get(CREDS + 'shared-role', ip);
      expect(r.status).toBe(200);
      keys.push(JSON.parse(r.body).AccessKeyId);
    }
    expect(keys[0]).toBe(keys[1]);
    expect(world.sts.countFor(roleArn)).toBe(1);
    expect(world.sts.calls.find((c) => c.roleArn === roleArn)?.sessionName).toBe(`${NODE}.shared-role`);
    await role.stop();

    world.sts.reset();
    const perPod = await world.podiam();
    for (const ip of ips) expect((await perPod.get(CREDS + 'shared-role', ip)).status).toBe(200);
    expect(world.sts.countFor(roleArn)).toBe(2);
    await perPod.stop();
  });
});

describe('the app port held by another process', () => {
  test('podiam says who holds it, waits, and takes over when it is freed', async () => {
    const port = await freePort();
    const holder = net.createServer((s) => s.destroy());
    await new Promise<void>((resolve) => holder.listen(port, '127.0.0.1', resolve));
    const args = [`--app-port=${port}`, '--host-ip=127.0.0.1', `--metadata-addr=127.0.0.1:${world.imds.port}`, `--api-server=${world.kube.url}`, '--insecure', `--node=${NODE}`, `--base-role-arn=${BASE_ARN}`, '--log-format=json'];
    const child = spawn(process.execPath, [CLI, ...args], { env: awsTestEnv(world.sts.url), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    let exited = false;
    child.on('exit', () => (exited = true));
    try {
      await waitFor(() => out.includes('app port is taken'), 30_000, 'the port-taken warning');
      const line = JSON.parse(out.split('\n').find((l) => l.includes('app port is taken'))!) as { heldBy: string };
      expect(line.heldBy).toContain(`pid ${process.pid}`);
      await sleep(1000);
      expect(exited).toBe(false);
      await new Promise<void>((resolve) => holder.close(() => resolve()));
      await waitFor(async () => {
        const r = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
        return r?.status === 200;
      }, 15_000, 'podiam listening once the port is free');
      expect(out).toContain('app port is free now');
    } finally {
      if (holder.listening) holder.close();
      child.kill('SIGTERM');
      await new Promise((resolve) => (exited ? resolve(undefined) : child.on('exit', resolve)));
    }
  });

  test('SIGTERM while waiting for the port exits 0 at once', async () => {
    const port = await freePort();
    const holder = net.createServer((s) => s.destroy());
    await new Promise<void>((resolve) => holder.listen(port, '127.0.0.1', resolve));
    const child = spawn(process.execPath, [CLI, `--app-port=${port}`, '--host-ip=127.0.0.1', `--metadata-addr=127.0.0.1:${world.imds.port}`, `--api-server=${world.kube.url}`, '--insecure', '--log-format=json'], { env: awsTestEnv(world.sts.url), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFor(() => out.includes('app port is taken'), 30_000, 'the port-taken warning');
      const t0 = Date.now();
      child.kill('SIGTERM');
      const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
      expect(code).toBe(0);
      expect(Date.now() - t0).toBeLessThan(3000);
    } finally {
      holder.close();
    }
  });
});

describe('--allow-signed-identity', () => {
  test("forwards the node's signed identity paths instead of refusing them", async () => {
    const ip = world.nextIp();
    world.pod('vault-client', { ip, role: 'vault-client' });
    const p = await world.podiam(['--allow-signed-identity']);
    try {
      for (const kind of ['pkcs7', 'signature', 'rsa2048']) {
        const r = await p.get(`/latest/dynamic/instance-identity/${kind}`, ip);
        // Forwarded: the fake metadata service has no signed identity and answers 404 itself.
        expect(r.status).not.toBe(403);
        expect(r.body).not.toContain('PathRefused');
      }
      expect(await p.metric('podiam_http_requests_total', { route: 'proxy' })).toBeGreaterThanOrEqual(3);
      expect(await p.metric('podiam_http_requests_total', { route: 'refused' })).toBe(0);
      // identity-credentials stay refused.
      expect((await p.get('/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance', ip)).status).toBe(403);
    } finally {
      await p.stop();
    }
  });
});
