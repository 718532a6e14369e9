/**
 * Churn without mistakes: pods are created, started, finished and deleted continuously on a
 * small pool of IPs (reused at once, with Pending and Succeeded pods still carrying the IP)
 * while clients ask for credentials from those IPs. Over 10,000 requests, no answer may name a
 * role other than the IP's owner's.
 *
 * "Owner" is judged from the API server's own timeline: a pod owns its IP from creation until it
 * is Succeeded or deleted. An answer is correct if its role's pod owned the caller's IP at some
 * instant between LAG ms before the request was sent and the moment the answer arrived — podiam
 * can only be as current as its watch, which delivers in milliseconds on loopback.
 */
import http from 'node:http';
import type { PodiamProcess } from '../support/podiam-process.js';
import { sleep } from '../support/wait.js';
import { World } from '../support/world.js';

const CREDS = '/latest/meta-data/iam/security-credentials/';
const IPS = 6;
const REQUESTS = 10_000;
const CLIENTS = 16;
const LAG_MS = 50;

interface Ownership {
  ip: string;
  role: string;
  from: number;
  until: number;
}

let world: World;
let podiam: PodiamProcess;

beforeAll(async () => {
  world = await World.start();
  podiam = await world.podiam(['--pod-wait=200ms']);
});
afterAll(async () => {
  await world?.stop();
});

const between = (a: number, b: number) => a + Math.floor(Math.random() * (b - a));

test(`${REQUESTS} requests under pod churn on ${IPS} reused IPs: never another pod's role`, async () => {
  const ips = Array.from({ length: IPS }, () => world.nextIp());
  const timeline: Ownership[] = [];
  let stop = false;

  // One churn loop per IP: Pending → Running → (Succeeded, keeping the IP | deleted) → next pod.
  const churn = ips.map(async (ip, i) => {
    for (let gen = 0; !stop; gen++) {
      const name = `churn-${i}-${gen}`;
      const own: Ownership = { ip, role: name, from: Date.now(), until: Infinity };
      timeline.push(own);
      world.pod(name, { ip, role: name, phase: 'Pending' });
      await sleep(between(10, 60));
      world.kube.updatePod('default', name, (p) => {
        p.status = { ...p.status, phase: 'Running' };
      });
      await sleep(between(50, 250));
      if (gen % 2 === 0) {
        own.until = Date.now();
        world.kube.updatePod('default', name, (p) => {
          p.status = { ...p.status, phase: 'Succeeded' };
        });
        // The finished pod lingers with its IP while the next one starts.
        const lingering = name;
        setTimeout(() => world.kube.deletePod('default', lingering), between(100, 400));
      } else {
        own.until = Date.now();
        world.kube.deletePod('default', name);
      }
      // Sometimes the IP stays free for a moment: then the only right answer is 404.
      if (gen % 3 === 0) await sleep(between(50, 200));
    }
  });

  const results = { ok: 0, notFound: 0, other: 0, wrong: [] as string[], wrongIp: 0, creds: 0 };
  const ownedAt = (ip: string, role: string, from: number, to: number) =>
    timeline.some((o) => o.ip === ip && o.role === role && o.from <= to && o.until >= from);

  let sent = 0;
  const clients = Array.from({ length: CLIENTS }, async () => {
    const agents = new Map(ips.map((ip) => [ip, new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: ip } as http.AgentOptions)]));
    try {
      while (sent < REQUESTS) {
        sent++;
        const ip = ips[Math.floor(Math.random() * ips.length)]!;
        const t0 = Date.now();
        const r = await get(podiam.port, CREDS, agents.get(ip)!);
        const t1 = Date.now();
        if (r.status === 200) {
          results.ok++;
          if (!timeline.some((o) => o.role === r.body && o.ip === ip)) results.wrongIp++;
          if (!ownedAt(ip, r.body, t0 - LAG_MS, t1)) results.wrong.push(`${ip} got ${r.body} at ${t0}..${t1}`);
          // Now and then, the credentials themselves: 200 only for the owner, else 403/404.
          if (sent % 25 === 0) {
            const c0 = Date.now();
            const c = await get(podiam.port, CREDS + r.body, agents.get(ip)!);
            const c1 = Date.now();
            if (c.status === 200) {
              results.creds++;
              if (!ownedAt(ip, r.body, c0 - LAG_MS, c1)) results.wrong.push(`${ip} got credentials of ${r.body} at ${c0}..${c1}`);
            } else if (![403, 404, 500].includes(c.status)) {
              results.other++;
            }
          }
        } else if (r.status === 404) {
          results.notFound++;
        } else {
          results.other++;
        }
      }
    } finally {
      for (const a of agents.values()) a.destroy();
    }
  });

  const started = Date.now();
  await Promise.all(clients);
  stop = true;
  await Promise.all(churn);
  const seconds = (Date.now() - started) / 1000;
  const pods = timeline.length;
  console.log(
    `churn: ${sent} requests in ${seconds.toFixed(1)} s over ${pods} pods on ${IPS} IPs: ${results.ok} role answers, ${results.creds} credentials, ${results.notFound} 404, ${results.other} other, ${results.wrong.length} wrong`,
  );
  expect(sent).toBeGreaterThanOrEqual(REQUESTS);
  expect(pods).toBeGreaterThan(IPS * 5);
  expect(results.wrongIp).toBe(0);
  expect(results.wrong).toEqual([]);
  expect(results.other).toBe(0);
  // Most answers are real answers, not 404s: the index keeps up with the churn.
  expect(results.ok).toBeGreaterThan(REQUESTS / 2);
}, 120_000);

function get(port: number, path: string, agent: http.Agent): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}
