/**
 * Issue 19 (second adversarial review), the attacks on podiam's own resources, at the sizes the
 * review used, against the real podiam CLI on loopback (test API server, moto as STS):
 *  - a pod patching its own session-name annotation 300 times (every value a new STS session);
 *  - a pod opening 12,000 keep-alive connections to the metadata listener;
 *  - the same on the token listener, and the total cap across source IPs.
 */
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { freePort } from '../support/net.js';
import type { PodiamProcess } from '../support/podiam-process.js';
import { sleep, waitFor } from '../support/wait.js';
import { World } from '../support/world.js';

const CREDS = '/latest/meta-data/iam/security-credentials/';
const SESSION_NAME = 'iam.amazonaws.com/session-name';

let world: World;

beforeAll(async () => {
  world = await World.start();
});
afterAll(async () => {
  await world?.stop();
});

function rssBytes(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) * 1024;
}
const fds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

/**
 * Opens `n` connections from `fromIp` (at most `parallel` connecting at once), sends one
 * keep-alive request on each and keeps the ones answered open. The others were closed by podiam.
 */
async function hoard(port: number, fromIp: string, n: number, path = '/healthz', parallel = 200): Promise<{ kept: net.Socket[]; closed: number }> {
  const kept: net.Socket[] = [];
  let closed = 0;
  let next = 0;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port, localAddress: fromIp });
      let answered = false;
      socket.on('connect', () => socket.write(`GET ${path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: keep-alive\r\n\r\n`));
      socket.on('data', () => {
        if (answered) return;
        answered = true;
        kept.push(socket);
        resolve();
      });
      socket.on('error', () => undefined);
      socket.on('close', () => {
        if (answered) return;
        closed++;
        resolve();
      });
    });
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < n) {
        next++;
        await one();
      }
    }),
  );
  return { kept, closed };
}

describe('a pod churning its own session-name annotation', () => {
  let podiam: PodiamProcess;
  beforeAll(async () => {
    podiam = await world.podiam();
  });

  test('300 patches: at most a few AssumeRole calls, a bounded cache, and the pod gets its last value at once', async () => {
    const ip = world.nextIp();
    world.pod('churner', { ip, role: 'churn-role' });
    const role = `arn:aws:iam::123456789012:role/churn-role`;
    await waitFor(async () => (await podiam.get(CREDS, ip)).status === 200, 8000, 'pod known');
    await waitFor(() => world.sts.countFor(role) >= 1, 8000, 'first prefetch');

    for (let i = 0; i < 300; i++) {
      world.kube.updatePod('default', 'churner', (p) => {
        p.metadata!.annotations = { ...p.metadata!.annotations, [SESSION_NAME]: `s-${i}` };
      });
      if (i % 10 === 9) await sleep(5);
    }
    // Let the watch deliver every change and podiam act on it.
    await sleep(1500);
    const calls = world.sts.countFor(role);
    const entries = await podiam.metric('podiam_credential_cache_entries');
    console.log(`session-name churn: ${calls} AssumeRole calls, ${entries} cache entries after 300 patches`);
    // Today's main: 300 calls and 301 entries. Now: the first prefetch and a burst of at most 2 more.
    expect(calls).toBeLessThanOrEqual(4);
    expect(entries).toBeLessThanOrEqual(2);
    expect(await podiam.metric('podiam_new_sessions_throttled_total', { cause: 'prefetch' })).toBeGreaterThan(0);

    // The pod's own request for its current annotation: answered now, with its last value.
    const r = await podiam.get(CREDS + 'churn-role', ip);
    expect(r.status).toBe(200);
    const arn = await world.callerArn(JSON.parse(r.body) as { AccessKeyId: string; SecretAccessKey: string; Token: string });
    expect(arn).toBe('arn:aws:sts::123456789012:assumed-role/churn-role/default.s-299');
    expect(world.sts.countFor(role)).toBeLessThanOrEqual(5);
    expect(await podiam.metric('podiam_credential_cache_entries')).toBeLessThanOrEqual(2);

    // The pod is deleted: nothing of it stays in the cache.
    world.kube.deletePod('default', 'churner');
    await waitFor(async () => (await podiam.metric('podiam_credential_cache_entries')) === 0, 8000, 'cache emptied');
  }, 60_000);
});

describe('a pod hoarding connections', () => {
  test('12,000 keep-alive connections from one pod: 256 kept (the default cap), the rest closed at once and counted; fds and RSS bounded; other pods served', async () => {
    const podiam = await world.podiam();
    const pid = podiam.child.pid!;
    const attacker = world.nextIp();
    const other = world.nextIp();
    world.pod('hoarder', { ip: attacker, role: 'hoarder-role' });
    world.pod('neighbour', { ip: other, role: 'neighbour-role' });
    await waitFor(async () => (await podiam.get(CREDS, other)).status === 200, 8000, 'neighbour known');
    const fdsBefore = fds(pid);
    const rssBefore = rssBytes(pid);

    const { kept, closed } = await hoard(podiam.port, attacker, 12_000);
    try {
      const fdsDuring = fds(pid);
      const rssDuring = rssBytes(pid);
      console.log(`12,000 connections: ${kept.length} kept, ${closed} closed; podiam fds ${fdsBefore} -> ${fdsDuring}, RSS ${(rssBefore / 2 ** 20).toFixed(0)} -> ${(rssDuring / 2 ** 20).toFixed(0)} MiB`);
      // Today's main: 12,000 kept, fds 24 -> 12,023, RSS +70 MiB.
      expect(kept.length).toBe(256);
      expect(closed).toBe(12_000 - 256);
      expect(await podiam.metric('podiam_connections_refused_total', { listener: 'imds', limit: 'per-ip' })).toBe(12_000 - 256);
      expect(fdsDuring - fdsBefore).toBeLessThanOrEqual(256 + 10);
      expect(rssDuring - rssBefore).toBeLessThan(32 * 2 ** 20);
      // Another pod is not affected, and the kept connections still work.
      expect((await podiam.get(CREDS, other)).body).toBe('neighbour-role');
      const reply = await new Promise<string>((resolve) => {
        kept[0]!.once('data', (d: Buffer) => resolve(d.toString()));
        kept[0]!.write(`GET ${CREDS} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n`);
      });
      expect(reply).toMatch(/^HTTP\/1\.1 200 .*hoarder-role$/s);
    } finally {
      for (const s of kept) s.destroy();
    }
    // Closed connections give their room back.
    await waitFor(async () => (await hoard(podiam.port, attacker, 10)).kept.length === 10, 5000, 'room given back');
    await podiam.stop();
  }, 120_000);

  test('the total cap across source IPs, and both caps on the token listener', async () => {
    const tokenPort = await freePort();
    const podiam = await world.podiam(['--max-connections=40', '--max-connections-per-ip=10', '--token-identity', `--token-addr=127.0.0.1:${tokenPort}`]);
    const ips = Array.from({ length: 6 }, () => world.nextIp());
    const sockets: net.Socket[] = [];
    try {
      let kept = 0;
      for (const ip of ips) {
        const r = await hoard(podiam.port, ip, 10, '/healthz', 10);
        sockets.push(...r.kept);
        kept += r.kept.length;
      }
      // 40 in all (our own /metrics requests below come on top and are refused only when full).
      expect(kept).toBe(40);
      for (const s of sockets.splice(0, 10)) s.destroy();
      await sleep(200);
      expect(await podiam.metric('podiam_connections_refused_total', { listener: 'imds', limit: 'total' })).toBe(20);

      // Connections that send nothing yet (podiam answers a token refusal with Connection: close).
      const silent = Array.from({ length: 25 }, () => net.connect({ host: '127.0.0.1', port: tokenPort, localAddress: ips[0] }).on('error', () => undefined));
      sockets.push(...silent);
      await sleep(500);
      expect(silent.filter((s) => !s.closed).length).toBe(10);
      expect(await podiam.metric('podiam_connections_refused_total', { listener: 'token', limit: 'per-ip' })).toBe(15);
    } finally {
      for (const s of sockets) s.destroy();
    }
    await podiam.stop();
  }, 60_000);
});
