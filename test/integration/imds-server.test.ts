import { spawn } from 'node:child_process';

import path from 'node:path';
import {
  FakeImds,
  INSTANCE_ID,
  LOCAL_IPV4,
  NODE_ACCESS_KEY_ID,
  NODE_CREDENTIAL_STRINGS,
  NODE_IDENTITY_ACCESS_KEY_ID,
  NODE_SECRET,
  NODE_TOKEN,
  USER_DATA,
} from '../support/imds-server.js';
import { freePort, httpRequest } from '../support/net.js';

const TS_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;
const TTL = 'X-aws-ec2-metadata-token-ttl-seconds';
const TOKEN = 'X-aws-ec2-metadata-token';

describe('FakeImds', () => {
  let imds: FakeImds;

  beforeAll(async () => {
    imds = await FakeImds.start();
  });
  afterAll(async () => {
    await imds.stop();
  });
  afterEach(() => {
    imds.setRequireV2(false);
    imds.setLatency(0);
    imds.clearRequests();
  });

  const get = (p: string, headers: Record<string, string> = {}) => httpRequest(`${imds.url}${p}`, { headers });
  const putToken = (headers: Record<string, string>, p = '/latest/api/token') =>
    httpRequest(`${imds.url}${p}`, { method: 'PUT', headers });

  test('listens on loopback and exposes url/port', () => {
    expect(imds.url).toBe(`http://127.0.0.1:${imds.port}`);
    expect(imds.port).toBeGreaterThan(0);
  });

  describe('IMDSv1 GETs', () => {
    test('leaf values, text/plain, Server: EC2ws', async () => {
      const r = await get('/latest/meta-data/instance-id');
      expect(r.status).toBe(200);
      expect(r.body).toBe(INSTANCE_ID);
      expect(r.headers['content-type']).toBe('text/plain');
      expect(r.headers['server']).toBe('EC2ws');
      expect((await get('/latest/meta-data/local-ipv4')).body).toBe(LOCAL_IPV4);
      expect((await get('/latest/meta-data/placement/region')).body).toBe('us-east-1');
      expect((await get('/latest/meta-data/placement/availability-zone')).body).toBe('us-east-1a');
      expect((await get('/latest/user-data')).body).toBe(USER_DATA);
    });

    test('directory listings are newline separated, subdirectories end in /', async () => {
      const md = await get('/latest/meta-data/');
      expect(md.status).toBe(200);
      const entries = md.body.split('\n');
      expect(entries).toEqual(expect.arrayContaining(['instance-id', 'local-ipv4', 'iam/', 'placement/']));
      expect((await get('/latest/meta-data')).body).toBe(md.body);
      expect((await get('/latest/meta-data/iam/')).body).toBe('info\nsecurity-credentials/');
      expect((await get('/latest/meta-data/iam/security-credentials/')).body).toBe('node-role');
      expect((await get('/latest/')).body).toBe('dynamic\nmeta-data\nuser-data');
      expect((await get('/')).body.split('\n')).toContain('latest');
    });

    test('iam/info', async () => {
      const info = JSON.parse((await get('/latest/meta-data/iam/info')).body) as Record<string, string>;
      expect(info['Code']).toBe('Success');
      expect(info['LastUpdated']).toMatch(TS_RE);
      expect(info['InstanceProfileArn']).toBe('arn:aws:iam::123456789012:instance-profile/node-role');
      expect(info['InstanceProfileId']).toMatch(/^AIPA/);
    });

    test('node role credentials', async () => {
      const r = await get('/latest/meta-data/iam/security-credentials/node-role');
      expect(r.status).toBe(200);
      const c = JSON.parse(r.body) as Record<string, string>;
      expect(c).toEqual({
        Code: 'Success',
        LastUpdated: expect.stringMatching(TS_RE),
        Type: 'AWS-HMAC',
        AccessKeyId: NODE_ACCESS_KEY_ID,
        SecretAccessKey: NODE_SECRET,
        Token: NODE_TOKEN,
        Expiration: expect.stringMatching(TS_RE),
      });
      expect(Date.parse(c['Expiration']!)).toBeGreaterThan(Date.now() + 3600_000);
      expect(NODE_ACCESS_KEY_ID).toMatch(/^ASIANODE/);
      expect(NODE_SECRET).toMatch(/^NODESECRET/);
      expect(NODE_TOKEN).toMatch(/^NODETOKEN/);
      expect(NODE_CREDENTIAL_STRINGS).toContain(NODE_TOKEN);
      expect((await get('/latest/meta-data/iam/security-credentials/other-role')).status).toBe(404);
    });

    test('identity credentials and identity document', async () => {
      const id = JSON.parse(
        (await get('/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance')).body,
      ) as Record<string, string>;
      expect(id['AccessKeyId']).toBe(NODE_IDENTITY_ACCESS_KEY_ID);
      expect(id['Type']).toBe('AWS-HMAC');
      expect(id['Expiration']).toMatch(TS_RE);
      const doc = JSON.parse((await get('/latest/dynamic/instance-identity/document')).body) as Record<string, string>;
      expect(doc).toMatchObject({ region: 'us-east-1', accountId: '123456789012', instanceId: INSTANCE_ID });
    });

    test('dated versions serve the same tree', async () => {
      expect((await get('/2021-03-23/meta-data/instance-id')).body).toBe(INSTANCE_ID);
      expect((await get('/2021-03-23/meta-data/iam/security-credentials/')).body).toBe('node-role');
      expect((await get('/not-a-version/meta-data/instance-id')).status).toBe(404);
    });

    test('unknown paths 404, other methods 405, HEAD has no body', async () => {
      expect((await get('/latest/meta-data/nope')).status).toBe(404);
      expect((await get('/latest/meta-data/instance-id/deeper')).status).toBe(404);
      expect((await get('/favicon.ico')).status).toBe(404);
      for (const method of ['POST', 'DELETE', 'PATCH']) {
        const r = await httpRequest(`${imds.url}/latest/meta-data/instance-id`, { method });
        expect(r.status).toBe(405);
      }
      const head = await httpRequest(`${imds.url}/latest/meta-data/instance-id`, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.body).toBe('');
      expect(head.headers['content-length']).toBe(String(INSTANCE_ID.length));
    });
  });

  describe('IMDSv2 token flow', () => {
    test('PUT returns a token and echoes the TTL; the token works on GETs', async () => {
      const r = await putToken({ [TTL]: '21600' });
      expect(r.status).toBe(200);
      expect(r.headers['x-aws-ec2-metadata-token-ttl-seconds']).toBe('21600');
      expect(r.headers['content-type']).toBe('text/plain');
      expect(r.body.length).toBeGreaterThan(20);
      const second = await putToken({ [TTL]: '1' });
      expect(second.status).toBe(200);
      expect(second.body).not.toBe(r.body);

      const g = await get('/latest/meta-data/instance-id', { [TOKEN]: r.body });
      expect(g.status).toBe(200);
      expect(g.body).toBe(INSTANCE_ID);
    });

    test.each([[undefined], ['0'], ['21601'], ['-5'], ['abc'], ['1.5'], ['']])('TTL %p -> 400', async (ttl) => {
      const r = await putToken(ttl === undefined ? {} : { [TTL]: ttl });
      expect(r.status).toBe(400);
    });

    test('PUT to a dated token path -> 403', async () => {
      expect((await putToken({ [TTL]: '60' }, '/2021-03-23/api/token')).status).toBe(403);
    });

    test('PUT with X-Forwarded-For -> 403, and the header is recorded', async () => {
      const r = await putToken({ [TTL]: '60', 'X-Forwarded-For': '10.0.0.7' });
      expect(r.status).toBe(403);
      const puts = imds.requests.filter((q) => q.method === 'PUT');
      expect(puts).toHaveLength(1);
      expect(puts[0]!.path).toBe('/latest/api/token');
      expect(puts[0]!.headers['x-forwarded-for']).toBe('10.0.0.7');
      expect(puts[0]!.headers['x-aws-ec2-metadata-token-ttl-seconds']).toBe('60');
    });

    test('requests are recorded with headers', async () => {
      await putToken({ [TTL]: '60' });
      await get('/latest/meta-data/instance-id');
      expect(imds.requests.map((q) => `${q.method} ${q.path}`)).toEqual([
        'PUT /latest/api/token',
        'GET /latest/meta-data/instance-id',
      ]);
      expect(imds.requests[0]!.headers['x-forwarded-for']).toBeUndefined();
      expect(imds.requestsTo('/latest/api/token')).toHaveLength(1);
    });

    test('invalid or expired token -> 401', async () => {
      expect((await get('/latest/meta-data/instance-id', { [TOKEN]: 'bogus' })).status).toBe(401);
      const token = (await putToken({ [TTL]: '60' })).body;
      expect((await get('/latest/meta-data/instance-id', { [TOKEN]: token })).status).toBe(200);
      imds.expireTokens();
      expect((await get('/latest/meta-data/instance-id', { [TOKEN]: token })).status).toBe(401);
    });

    test('token expires after its TTL', async () => {
      const token = (await putToken({ [TTL]: '1' })).body;
      expect((await get('/latest/meta-data/instance-id', { [TOKEN]: token })).status).toBe(200);
      await new Promise((r) => setTimeout(r, 1100));
      expect((await get('/latest/meta-data/instance-id', { [TOKEN]: token })).status).toBe(401);
    });

    test('GET /latest/api/token is not allowed', async () => {
      expect((await get('/latest/api/token')).status).toBe(405);
    });

    test('requireV2: no token -> 401, valid token -> 200', async () => {
      imds.setRequireV2(true);
      expect((await get('/latest/meta-data/instance-id')).status).toBe(401);
      expect((await get('/latest/meta-data/iam/security-credentials/node-role')).status).toBe(401);
      const token = (await putToken({ [TTL]: '60' })).body;
      expect((await get('/latest/meta-data/instance-id', { [TOKEN]: token })).status).toBe(200);
      imds.setRequireV2(false);
      expect((await get('/latest/meta-data/instance-id')).status).toBe(200);
    });
  });

  test('setLatency delays responses', async () => {
    imds.setLatency(150);
    const t0 = Date.now();
    await get('/latest/meta-data/instance-id');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
  });
});

describe('FakeImds options', () => {
  test('requireV2, nodeRole, accountId, region', async () => {
    const imds = await FakeImds.start({
      requireV2: true,
      nodeRole: 'worker',
      accountId: '111122223333',
      region: 'eu-west-1',
    });
    try {
      expect((await httpRequest(`${imds.url}/latest/meta-data/instance-id`)).status).toBe(401);
      const token = (
        await httpRequest(`${imds.url}/latest/api/token`, { method: 'PUT', headers: { [TTL]: '60' } })
      ).body;
      const h = { [TOKEN]: token };
      expect((await httpRequest(`${imds.url}/latest/meta-data/iam/security-credentials/`, { headers: h })).body).toBe(
        'worker',
      );
      const info = JSON.parse((await httpRequest(`${imds.url}/latest/meta-data/iam/info`, { headers: h })).body) as {
        InstanceProfileArn: string;
      };
      expect(info.InstanceProfileArn).toBe('arn:aws:iam::111122223333:instance-profile/worker');
      expect((await httpRequest(`${imds.url}/latest/meta-data/placement/region`, { headers: h })).body).toBe(
        'eu-west-1',
      );
    } finally {
      await imds.stop();
    }
  });

  test('stop() does not hang on a request delayed by latency', async () => {
    const imds = await FakeImds.start({ latencyMs: 5000 });
    const pending = httpRequest(`${imds.url}/latest/meta-data/instance-id`).catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 50));
    const t0 = Date.now();
    await imds.stop();
    expect(Date.now() - t0).toBeLessThan(1000);
    // Node's Error is from another realm than jest's, so check the shape, not instanceof.
    expect(String(await pending)).toMatch(/socket hang up|ECONNRESET/);
  });

  test('fixed port', async () => {
    const port = await freePort();
    const imds = await FakeImds.start({ port });
    try {
      expect(imds.port).toBe(port);
      expect((await httpRequest(`http://127.0.0.1:${port}/latest/meta-data/instance-id`)).body).toBe(INSTANCE_ID);
    } finally {
      await imds.stop();
    }
  });
});

// The CLI is exercised from the build output (npm test builds first; FAKE_IMDS_CLI overrides the path);
// npm test builds it first.
const cliPath = process.env['FAKE_IMDS_CLI'] ?? path.resolve(process.cwd(), 'dist/test/support/imds-server-cli.js');
test('imds-server-cli prints ready <url> and stops on SIGTERM', async () => {
  const args = ['--host', '127.0.0.1', '--port', '0', '--require-v2', '--node-role', 'cli-role'];
  const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        const m = /^ready (\S+)$/m.exec(out);
        if (m) resolve(m[1]!);
      });
      child.once('exit', () => reject(new Error(`cli exited early: ${out}`)));
    });
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await httpRequest(`${url}/latest/meta-data/instance-id`)).status).toBe(401);
    const token = (await httpRequest(`${url}/latest/api/token`, { method: 'PUT', headers: { [TTL]: '60' } })).body;
    const r = await httpRequest(`${url}/latest/meta-data/iam/security-credentials/`, { headers: { [TOKEN]: token } });
    expect(r.body).toBe('cli-role');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  }
});
