/**
 * Hostile input: fuzzed paths, methods and headers, slowloris, large bodies, and malformed
 * annotations. podiam must not crash, must stay bounded in memory, must never hand a pod
 * another pod's (or the node's) credentials, and must say clearly why it denies.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { NODE_CREDENTIAL_STRINGS } from '../support/imds-server.js';
import type { PodiamProcess } from '../support/podiam-process.js';
import { World } from '../support/world.js';
import { waitFor } from '../support/wait.js';

const CREDS = '/latest/meta-data/iam/security-credentials/';

let world: World;
let podiam: PodiamProcess;
let attacker: string;
let victim: string;
let victimSecret: string;

beforeAll(async () => {
  world = await World.start();
  podiam = await world.podiam();
  attacker = world.nextIp();
  victim = world.nextIp();
  world.pod('attacker', { ip: attacker, role: 'attacker-role' });
  world.pod('victim', { ip: victim, role: 'victim-role' });
  const r = await podiam.get(CREDS + 'victim-role', victim);
  expect(r.status).toBe(200);
  victimSecret = (JSON.parse(r.body) as { SecretAccessKey: string }).SecretAccessKey;
});
afterAll(async () => {
  await world?.stop();
});

function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

/** Sends raw bytes from the attacker's address; resolves with whatever comes back (or '' on close). */
function raw(payload: string | Buffer, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port: podiam.port, localAddress: attacker });
    let out = '';
    socket.on('data', (d) => (out += d.toString('latin1')));
    socket.on('error', () => resolve(out));
    socket.on('close', () => resolve(out));
    socket.setTimeout(timeoutMs, () => socket.destroy());
    socket.write(payload);
  });
}

function expectNoLeak(text: string): void {
  expect(text).not.toContain(victimSecret);
  for (const s of NODE_CREDENTIAL_STRINGS) expect(text).not.toContain(s);
}

test('fuzzed paths never crash podiam and never leak another role or the node credentials', async () => {
  const before = rssKb(podiam.child.pid!);
  const seeds = [
    CREDS + 'victim-role',
    CREDS + 'victim-role/',
    CREDS + 'victim-role/..',
    CREDS + '../security-credentials/victim-role',
    CREDS + '%2e%2e/victim-role',
    CREDS + 'attacker-role%2f..%2fvictim-role',
    CREDS + 'attacker-role/../victim-role',
    CREDS + 'victim-role%00',
    CREDS + 'VICTIM-ROLE',
    '/latest/meta-data/iam/security-credentials//victim-role',
    '/latest/meta-data/iam/security-credentials/node-role',
    '/latest/meta-data/iam/Security-Credentials/node-role',
    '/latest//meta-data/iam/security-credentials/node-role',
    '/latest/meta-data/./iam/security-credentials/node-role',
    '/latest/meta-data/iam%2fsecurity-credentials/node-role',
    '/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance',
    '/%6catest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance',
    '/latest/meta-data/iam\\security-credentials\\node-role',
    '/' + 'a'.repeat(5000),
    '/latest/meta-data/' + 'é'.repeat(100),
    '/latest/meta-data/%ff%fe',
    '/latest/meta-data/%',
    '/?' + 'x'.repeat(3000),
  ];
  const alphabet = ['/', '.', '..', '%2f', '%2e', '%', 'iam', 'security-credentials', 'victim-role', 'node-role', 'identity-credentials', '\\', '%5c', 'é', '~', ';', '?', '#', ' '];
  const fuzz: string[] = [...seeds];
  for (let i = 0; i < 400; i++) {
    let p = '/latest/meta-data/';
    const n = 1 + Math.floor(Math.random() * 8);
    for (let j = 0; j < n; j++) p += alphabet[Math.floor(Math.random() * alphabet.length)];
    fuzz.push(p);
  }
  for (const path of fuzz) {
    // Some of these are not even valid request lines: send them raw.
    const answer = await raw(`GET ${path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n`);
    expectNoLeak(answer);
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);
    // Either refused outright, or answered as the attacker (its own role) or by the upstream.
    expect(status === 0 || (status >= 200 && status < 600)).toBe(true);
  }
  // Still alive, still right.
  expect((await podiam.get(CREDS, attacker)).body).toBe('attacker-role');
  expect((await podiam.get(CREDS + 'victim-role', attacker)).status).toBe(403);
  expect(rssKb(podiam.child.pid!) - before).toBeLessThan(60_000);
});

test('methods: anything but GET/HEAD on credential paths is refused; garbage methods do not crash', async () => {
  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE']) {
    const r = await podiam.request(CREDS + 'attacker-role', { fromIp: attacker, method });
    expect(r.status).toBe(405);
  }
  const head = await podiam.request(CREDS + 'attacker-role', { fromIp: attacker, method: 'HEAD' });
  expect(head.status).toBe(200);
  for (const line of ['FOO / HTTP/1.1', 'GET', 'GET / HTTP/9.9', '\u0000\u0001\u0002', 'GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\nContent-Length: -1']) {
    const answer = await raw(`${line}\r\n\r\n`);
    expectNoLeak(answer);
  }
  expect((await podiam.get('/healthz')).status).toBe(200);
});

test('headers: oversized headers get 431, X-Forwarded-For spoofing changes nothing', async () => {
  const big = await raw(`GET ${CREDS} HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
  expect(big).toMatch(/^HTTP\/1\.1 431/);
  const many = Array.from({ length: 500 }, (_, i) => `X-H${i}: ${'b'.repeat(30)}`).join('\r\n');
  const manyAnswer = await raw(`GET ${CREDS} HTTP/1.1\r\nHost: x\r\n${many}\r\n\r\n`);
  expect(manyAnswer).toMatch(/^HTTP\/1\.1 (431|400)/);
  const spoof = await podiam.request(CREDS + 'victim-role', { fromIp: attacker, headers: { 'x-forwarded-for': victim, forwarded: `for=${victim}`, 'x-real-ip': victim } });
  expect(spoof.status).toBe(403);
  expectNoLeak(spoof.body);
});

test('large and chunked bodies are refused on proxied paths; credential paths ignore bodies', async () => {
  const big = await podiam.request('/latest/meta-data/instance-id', { fromIp: attacker, method: 'GET', headers: { 'content-length': String(10 * 1024 * 1024) }, body: 'x'.repeat(1024) }).catch(() => ({ status: 0, body: '' }));
  expect([0, 413]).toContain(big.status);
  const chunked = await raw(`PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`);
  expect(chunked).toMatch(/^HTTP\/1\.1 411/);
  const withBody = await podiam.request(CREDS + 'attacker-role', { fromIp: attacker, method: 'GET', body: 'x'.repeat(50_000), headers: { 'content-length': '50000' } });
  expect(withBody.status).toBe(200);
  expect((await podiam.get('/healthz')).status).toBe(200);
});

test('slowloris: half-sent requests are cut off, and others are served meanwhile', async () => {
  const sockets: net.Socket[] = [];
  const closed: Promise<number>[] = [];
  for (let i = 0; i < 50; i++) {
    const s = net.connect({ host: '127.0.0.1', port: podiam.port, localAddress: attacker });
    const started = Date.now();
    closed.push(new Promise((resolve) => s.on('close', () => resolve(Date.now() - started))));
    s.on('error', () => undefined);
    s.write(`GET ${CREDS} HTTP/1.1\r\nHost: x\r\n`);
    sockets.push(s);
  }
  // Dribble a header byte now and then, as slowloris does.
  const dribble = setInterval(() => sockets.forEach((s) => s.writable && s.write('X-a: b\r\n')), 500);
  try {
    const t0 = Date.now();
    expect((await podiam.get(CREDS, victim)).body).toBe('victim-role');
    expect(Date.now() - t0).toBeLessThan(500);
    const lifetimes = await Promise.all(closed);
    // headersTimeout is 5 s, checked every second.
    expect(Math.max(...lifetimes)).toBeLessThan(8000);
  } finally {
    clearInterval(dribble);
    sockets.forEach((s) => s.destroy());
  }
}, 20_000);

describe('malformed annotations: a clear denial, and a log line naming the object and annotation', () => {
  test.each([
    ['bad-arn', { 'iam.amazonaws.com/role': 'arn:aws:iam::notanaccount:role/x' }, 'iam.amazonaws.com/role'],
    ['bad-name', { 'iam.amazonaws.com/role': 'has spaces in it' }, 'iam.amazonaws.com/role'],
    ['bad-external-id', { 'iam.amazonaws.com/role': 'ok-role', 'iam.amazonaws.com/external-id': 'x' }, 'iam.amazonaws.com/external-id'],
  ])('%s', async (name, annotations, annotation) => {
    const ip = world.nextIp();
    world.pod(name, { ip, annotations });
    const r = await podiam.get(CREDS, ip);
    expect(r.status).toBe(403);
    expect(r.body).toContain('BadAnnotation');
    expect(r.body).toContain(annotation);
    // The log line travels through a pipe: it may land just after the answer.
    const deadline = Date.now() + 3000;
    const find = () => podiam.logLines().find((l) => l.message === 'credentials denied' && l.pod === `default/${name}`);
    while (find() === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    expect(find()?.reason).toContain(`pod default/${name}: annotation ${annotation} is invalid`);
  });

  test('a bad regexp in allowed-roles is skipped (as kube2iam), named in the log, and grants nothing', async () => {
    world.kube.createNamespace({ metadata: { name: 'bad-re', annotations: { 'iam.amazonaws.com/allowed-roles': '["app-(unclosed", "db-.*"]' } } });
    const strict = await world.podiam(['--namespace-restrictions', '--namespace-restriction-format=regexp']);
    const ip = world.nextIp();
    world.pod('in-bad-re', { ip, role: 'app-x', namespace: 'bad-re' });
    const okIp = world.nextIp();
    world.pod('db-in-bad-re', { ip: okIp, role: 'db-x', namespace: 'bad-re' });
    const r = await strict.get(CREDS, ip);
    expect(r.status).toBe(403);
    expect(r.body).toContain('RoleNotAllowed');
    // The other entry still applies: the namespace is not denied as a whole.
    expect((await strict.get(CREDS, okIp)).status).toBe(200);
    await waitFor(() => strict.output().includes('allowed-roles entry skipped'), 5000, 'the log line');
    const line = strict.logLines().find((l) => l.message === 'allowed-roles entry skipped')!;
    expect(line.namespace).toBe('bad-re');
    expect(line.entry).toBe('app-(unclosed');
    await strict.stop();
  });
});

test('denials become Kubernetes Events on the pod, rate-limited', async () => {
  const ip = world.nextIp();
  world.pod('denied', { ip, role: 'mine' });
  for (let i = 0; i < 20; i++) expect((await podiam.get(CREDS + 'not-mine', ip)).status).toBe(403);
  const deadline = Date.now() + 3000;
  const mine = () => world.kube.events().filter((e) => (e as { involvedObject?: { name?: string } }).involvedObject?.name === 'denied');
  while (mine().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
  await new Promise((r) => setTimeout(r, 300));
  const events = mine() as Array<{ reason?: string; message?: string; type?: string; involvedObject?: { kind?: string; uid?: string } }>;
  expect(events).toHaveLength(1);
  expect(events[0]!.reason).toBe('PodiamRoleMismatch');
  expect(events[0]!.type).toBe('Warning');
  expect(events[0]!.involvedObject?.kind).toBe('Pod');
  expect(events[0]!.message).toContain('not-mine');
  expect(await podiam.metric('podiam_kube_events_total', { outcome: 'suppressed' })).toBeGreaterThanOrEqual(19);
});
