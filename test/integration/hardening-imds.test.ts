/**
 * The second adversarial review (issue 19), the metadata path, each finding written as the attack:
 *  - the IMDSv2 token table filled for 6 h by short-lived pods (1,030 pods x 64 tokens of 21,600 s, then deleted);
 *  - user-data (kubeadm/kOps join tokens) served to every pod;
 *  - IMDSv1 answered to pods although the node requires IMDSv2 (HttpTokens=required).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { FakeImds, NODE_ACCESS_KEY_ID, USER_DATA } from '../support/imds-server.js';
import { ROOT } from '../support/podiam-process.js';
import type { PodiamProcess } from '../support/podiam-process.js';
import { waitFor } from '../support/wait.js';
import { World } from '../support/world.js';

const CREDS = '/latest/meta-data/iam/security-credentials/';
const TTL = 'x-aws-ec2-metadata-token-ttl-seconds';
const TOKEN = 'x-aws-ec2-metadata-token';

let world: World;

beforeAll(async () => {
  world = await World.start();
});
afterAll(async () => {
  await world?.stop();
});

/** A pod podiam has indexed (its role listing answers). */
async function indexedPod(podiam: PodiamProcess, name: string, role = `${name}-role`): Promise<string> {
  const ip = world.nextIp();
  world.pod(name, { ip, role });
  await waitFor(async () => (await podiam.get(CREDS, ip)).status === 200, 8000, `${name} indexed`);
  return ip;
}

function putToken(podiam: PodiamProcess, fromIp: string, agent: http.Agent, ttl = '21600'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: podiam.port, path: '/latest/api/token', method: 'PUT', localAddress: fromIp, agent, headers: { [TTL]: ttl } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A FakeImds in its own process (66,000 token PUTs: the test process has enough to do), keeping upstream connections alive. */
async function imdsProcess(): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [path.join(ROOT, 'dist/test/support/imds-server-cli.js'), '--keep-alive-ms', '65000'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /ready http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`imds-server-cli exited (${code}): ${out}`)));
  });
  return { child, port };
}

describe('the IMDSv2 token table: a deleted pod’s tokens are dropped', () => {
  let podiam: PodiamProcess;
  let imds: { child: ChildProcess; port: number };
  beforeAll(async () => {
    imds = await imdsProcess();
    // A slow shared machine: no PUT may time out upstream, every one of them must be a token.
    podiam = await world.podiam([`--metadata-addr=127.0.0.1:${imds.port}`, '--metadata-timeout=30s']);
  });
  afterAll(() => {
    imds?.child.kill('SIGTERM');
  });

  test('1,030 short-lived pods x 64 tokens of 21,600 s, then deleted: a new pod still gets a token', async () => {
    const WAVES = 10;
    const PODS_PER_WAVE = 103;
    const TOKENS_PER_POD = 64;
    const statuses: Record<string, number> = {};
    for (let wave = 0; wave < WAVES; wave++) {
      const pods = Array.from({ length: PODS_PER_WAVE }, (_, i) => {
        const name = `short-${wave}-${i}`;
        const ip = world.nextIp();
        world.pod(name, { ip, role: 'short-role' });
        return { name, ip };
      });
      // Each pod takes its 64 tokens (the per-caller cap) over its own keep-alive connections.
      await Promise.all(
        pods.map(async ({ ip }) => {
          const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
          try {
            for (let t = 0; t < TOKENS_PER_POD; t++) {
              const r = await putToken(podiam, ip, agent);
              const key = r.status === 200 ? '200' : `${r.status} ${r.body.split(':')[0]}`;
              statuses[key] = (statuses[key] ?? 0) + 1;
            }
          } finally {
            agent.destroy();
          }
        }),
      );
      for (const { name } of pods) world.kube.deletePod('default', name);
    }
    expect(statuses).toEqual({ '200': WAVES * PODS_PER_WAVE * TOKENS_PER_POD });

    // 65,920 tokens were handed out, more than the table holds (65,536); their pods are gone, and so are they.
    const ip = await indexedPod(podiam, 'late');
    const agent = new http.Agent({ keepAlive: false });
    const r = await putToken(podiam, ip, agent);
    expect({ status: r.status, body: r.body.slice(0, 80) }).toMatchObject({ status: 200 });
    expect((await podiam.request('/latest/meta-data/instance-id', { fromIp: ip, headers: { [TOKEN]: r.body } })).status).toBe(200);
  }, 600_000);
});

describe('user-data: the node’s bootstrap secrets are not served to pods', () => {
  let podiam: PodiamProcess;
  beforeAll(async () => {
    podiam = await world.podiam();
  });

  test('a pod gets 403 PathRefused for user-data in every spelling EC2 serves, and the request never reaches the service', async () => {
    const ip = await indexedPod(podiam, 'curious');
    for (const path of ['/latest/user-data', '/latest/user-data/', '/2021-03-23/user-data', '/1.0/user-data', '/latest/User-Data']) {
      const before = world.imds.requests.length;
      const r = await podiam.get(path, ip);
      expect({ path, status: r.status }).toEqual({ path, status: 403 });
      expect(r.body).toMatch(/^PathRefused: /);
      expect(r.body).toContain('--allow-user-data');
      expect(r.body).not.toContain('#!/bin/bash');
      const head = await podiam.request(path, { fromIp: ip, method: 'HEAD' });
      expect(head.status).toBe(403);
      expect(world.imds.requests.slice(before)).toEqual([]);
    }
    // With an IMDSv2 token, the same.
    const token = await podiam.request('/latest/api/token', { fromIp: ip, method: 'PUT', headers: { [TTL]: '60' } });
    expect((await podiam.request('/latest/user-data', { fromIp: ip, headers: { [TOKEN]: token.body } })).status).toBe(403);
    expect(await podiam.metric('podiam_denials_total', { code: 'PathRefused' })).toBeGreaterThanOrEqual(11);
    // The rest of the metadata is still the pod's to read.
    expect((await podiam.get('/latest/meta-data/instance-id', ip)).status).toBe(200);
  });

  test('the node itself (its own addresses) still reads user-data', async () => {
    const r = await podiam.get('/latest/user-data');
    expect(r.status).toBe(200);
    expect(r.body).toBe(USER_DATA);
  });

  test('--allow-user-data serves it to pods', async () => {
    const allowing = await world.podiam(['--allow-user-data']);
    const ip = await indexedPod(allowing, 'trusted');
    const r = await allowing.get('/latest/user-data', ip);
    expect(r.status).toBe(200);
    expect(r.body).toBe(USER_DATA);
  });
});

describe('IMDSv1 follows the node: HttpTokens=required on the node means a token-less GET from a pod is 401', () => {
  let required: FakeImds;
  let podiam: PodiamProcess;
  beforeAll(async () => {
    required = await FakeImds.start({ requireV2: true });
    podiam = await world.podiam([`--metadata-addr=127.0.0.1:${required.port}`]);
  });
  afterAll(async () => {
    await required?.stop();
  });

  test('the credential paths and passthrough alike: 401 without a token, as EC2; 200 with the pod’s own token', async () => {
    const ip = world.nextIp();
    world.pod('v1-client', { ip, role: 'v1-role' });
    // The SDK's way: PUT a token (once the pod is indexed), then GET with it.
    let token = '';
    await waitFor(async () => {
      const r = await podiam.request('/latest/api/token', { fromIp: ip, method: 'PUT', headers: { [TTL]: '21600' } });
      token = r.body;
      return r.status === 200;
    }, 8000, 'the pod indexed');
    const before = required.requests.length;
    for (const path of [`${CREDS}v1-role`, CREDS, '/latest/meta-data/iam/info', '/latest/meta-data/instance-id', '/latest/meta-data/', '/latest/dynamic/instance-identity/document', '/']) {
      const r = await podiam.get(path, ip);
      expect({ path, status: r.status }).toEqual({ path, status: 401 });
      expect(r.body).not.toMatch(/ASIA|SecretAccessKey/);
    }
    // Refused by podiam itself: the token-less GETs never reached the metadata service.
    expect(required.requests.slice(before).filter((q) => q.method === 'GET')).toEqual([]);

    const withToken = (path: string, fromIp = ip, t = token) => podiam.request(path, { fromIp, headers: { [TOKEN]: t } });
    expect((await withToken(CREDS)).body).toBe('v1-role');
    const creds = await withToken(`${CREDS}v1-role`);
    expect(creds.status).toBe(200);
    expect(JSON.parse(creds.body)).toMatchObject({ Code: 'Success' });
    expect((await withToken('/latest/meta-data/instance-id')).status).toBe(200);
    // Made up, or another pod's: 401 on every path.
    const other = world.nextIp();
    world.pod('v1-other', { ip: other, role: 'other-role' });
    await waitFor(async () => (await podiam.request('/latest/api/token', { fromIp: other, method: 'PUT', headers: { [TTL]: '60' } })).status === 200, 8000, 'v1-other indexed');
    for (const path of [`${CREDS}v1-role`, CREDS, '/latest/meta-data/instance-id']) {
      expect((await withToken(path, ip, 'made-up')).status).toBe(401);
      expect((await withToken(path, other)).status).toBe(401);
    }
    expect((await withToken(`${CREDS}other-role`, other)).status).toBe(401);
    // The node itself, like any caller of EC2 with HttpTokens=required.
    expect((await podiam.get('/latest/meta-data/instance-id')).status).toBe(401);
    expect((await podiam.get('/latest/meta-data/iam/security-credentials/node-role')).body).not.toContain(NODE_ACCESS_KEY_ID);
    // Decided at start from the node's own answer.
    expect(podiam.logLines().find((l) => l['message'] === 'IMDSv2 tokens from pods')).toMatchObject({ required: true });
  });

  test('--imds-tokens=optional on such a node: podiam answers the credential paths without a token (the operator said so)', async () => {
    const lenient = await world.podiam([`--metadata-addr=127.0.0.1:${required.port}`, '--imds-tokens=optional']);
    const ip = world.nextIp();
    world.pod('v1-lenient', { ip, role: 'lenient-role' });
    await waitFor(async () => (await lenient.get(`${CREDS}lenient-role`, ip)).status === 200, 8000);
    // Passthrough is the node's own answer: 401 from the metadata service itself.
    expect((await lenient.get('/latest/meta-data/instance-id', ip)).status).toBe(401);
  });
});

describe('--imds-tokens and the probe', () => {
  test('--imds-tokens=required on a node that does not require them: 401 without a token', async () => {
    const strict = await world.podiam(['--imds-tokens=required']);
    const ip = world.nextIp();
    world.pod('strict-pod', { ip, role: 'strict-role' });
    await waitFor(async () => (await strict.get(`${CREDS}strict-role`, ip)).status === 401, 8000);
    expect((await strict.get('/latest/meta-data/instance-id', ip)).status).toBe(401);
    expect(strict.logLines().find((l) => l['message'] === 'IMDSv2 tokens from pods')).toMatchObject({ required: true, source: '--imds-tokens=required' });
  });

  test('auto on a node that does not require them: IMDSv1 still works', async () => {
    const auto = await world.podiam();
    const ip = world.nextIp();
    world.pod('auto-pod', { ip, role: 'auto-role' });
    await waitFor(async () => (await auto.get(`${CREDS}auto-role`, ip)).status === 200, 8000);
    expect((await auto.get('/latest/meta-data/instance-id', ip)).status).toBe(200);
    expect(auto.logLines().find((l) => l['message'] === 'IMDSv2 tokens from pods')).toMatchObject({ required: false });
  });

  test('auto with the metadata service unreachable: starts at once, and requires tokens (fail closed) with a warning naming the flag', async () => {
    const started = Date.now();
    const closed = await world.podiam(['--metadata-addr=127.0.0.1:1', '--metadata-timeout=500ms']);
    expect(Date.now() - started).toBeLessThan(10_000);
    const warning = closed.logLines().find((l) => typeof l['message'] === 'string' && (l['message'] as string).startsWith('the metadata service did not say whether it requires IMDSv2'));
    expect(warning).toBeDefined();
    expect(String(warning!['message'])).toContain('--imds-tokens=optional');
    const ip = world.nextIp();
    world.pod('closed-pod', { ip, role: 'closed-role' });
    await waitFor(async () => (await closed.get(`${CREDS}closed-role`, ip)).status === 401, 8000);
  });
});
