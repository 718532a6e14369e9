import http from 'node:http';
import {
  AssumeRoleCommand,
  GetCallerIdentityCommand,
  STSClient,
  STSServiceException,
} from '@aws-sdk/client-sts';
import type { STSClientConfig } from '@aws-sdk/client-sts';
import { Moto } from '../support/moto.js';
import { closeServer, httpRequest, listen } from '../support/net.js';
import { StsProxy, parseStsRequest } from '../support/sts-proxy.js';

// The SDK warns once that it will need Node >= 22 from 2027; keep test output clean.
process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] = 'true';

const ROLE_A = 'arn:aws:iam::123456789012:role/app-a';
const ROLE_B = 'arn:aws:iam::123456789012:role/app-b';

describe('StsProxy in front of moto', () => {
  let moto: Moto;
  let proxy: StsProxy;
  const clients: STSClient[] = [];

  const client = (config: STSClientConfig = {}): STSClient => {
    const c = new STSClient({
      region: 'us-east-1',
      endpoint: proxy.url,
      credentials: Moto.credentials,
      maxAttempts: 1,
      ...config,
    });
    clients.push(c);
    return c;
  };
  const assume = (c: STSClient, roleArn = ROLE_A, sessionName = 's1') =>
    c.send(new AssumeRoleCommand({ RoleArn: roleArn, RoleSessionName: sessionName, DurationSeconds: 3600 }));

  beforeAll(async () => {
    moto = await Moto.start();
    proxy = await StsProxy.start(moto.url);
  });
  afterAll(async () => {
    for (const c of clients) c.destroy();
    await proxy?.stop();
    await moto?.stop();
  });
  beforeEach(() => proxy.reset());

  test('moto directly: AssumeRole then GetCallerIdentity with the returned credentials', async () => {
    const direct = client({ endpoint: moto.url });
    const before = Date.now();
    const out = await assume(direct);
    expect(out.AssumedRoleUser?.Arn).toBe('arn:aws:sts::123456789012:assumed-role/app-a/s1');
    const creds = out.Credentials!;
    expect(creds.AccessKeyId).toMatch(/^ASIA/);
    // moto honours DurationSeconds: Expiration = now + DurationSeconds.
    const lifetime = creds.Expiration!.getTime() - before;
    expect(lifetime).toBeGreaterThan(3590_000);
    expect(lifetime).toBeLessThan(3610_000);

    const asRole = client({
      endpoint: moto.url,
      credentials: {
        accessKeyId: creds.AccessKeyId!,
        secretAccessKey: creds.SecretAccessKey!,
        sessionToken: creds.SessionToken!,
      },
    });
    const who = await asRole.send(new GetCallerIdentityCommand({}));
    expect(who.Arn).toBe('arn:aws:sts::123456789012:assumed-role/app-a/s1');
    expect(who.Account).toBe('123456789012');
    expect(proxy.calls).toHaveLength(0); // went straight to moto
  });

  test('moto honours DurationSeconds (900 s)', async () => {
    const before = Date.now();
    const out = await client().send(
      new AssumeRoleCommand({ RoleArn: ROLE_A, RoleSessionName: 'short', DurationSeconds: 900 }),
    );
    const lifetime = out.Credentials!.Expiration!.getTime() - before;
    expect(lifetime).toBeGreaterThan(890_000);
    expect(lifetime).toBeLessThan(910_000);
  });

  test('calls are recorded and counted by action and role', async () => {
    const c = client();
    await assume(c, ROLE_A, 's1');
    await assume(c, ROLE_A, 's2');
    await c.send(
      new AssumeRoleCommand({ RoleArn: ROLE_B, RoleSessionName: 'b', ExternalId: 'ext-1', DurationSeconds: 1800 }),
    );
    await c.send(new GetCallerIdentityCommand({}));

    expect(proxy.count('AssumeRole')).toBe(3);
    expect(proxy.count('GetCallerIdentity')).toBe(1);
    expect(proxy.countFor(ROLE_A)).toBe(2);
    expect(proxy.countFor(ROLE_B)).toBe(1);
    expect(proxy.calls[0]).toMatchObject({
      action: 'AssumeRole',
      roleArn: ROLE_A,
      sessionName: 's1',
      durationSeconds: 3600,
      outcome: 'forwarded',
      status: 200,
      accessKeyId: 'testing',
    });
    expect(proxy.calls[0]!.externalId).toBeUndefined();
    expect(proxy.calls[2]).toMatchObject({ roleArn: ROLE_B, externalId: 'ext-1', durationSeconds: 1800 });
    // awsQuery protocol on the wire
    expect(proxy.calls[0]!.params).toMatchObject({ Action: 'AssumeRole', Version: '2011-06-15' });
    expect(typeof proxy.calls[0]!.time).toBe('number');

    proxy.reset();
    expect(proxy.calls).toHaveLength(0);
    expect(proxy.count('AssumeRole')).toBe(0);
  });

  test('the SDK honours AWS_ENDPOINT_URL_STS', async () => {
    const saved = process.env['AWS_ENDPOINT_URL_STS'];
    process.env['AWS_ENDPOINT_URL_STS'] = proxy.url;
    try {
      const c = new STSClient({ region: 'us-east-1', credentials: Moto.credentials, maxAttempts: 1 });
      clients.push(c);
      const who = await c.send(new GetCallerIdentityCommand({}));
      expect(who.Account).toBe('123456789012');
      expect(proxy.count('GetCallerIdentity')).toBe(1);
    } finally {
      if (saved === undefined) delete process.env['AWS_ENDPOINT_URL_STS'];
      else process.env['AWS_ENDPOINT_URL_STS'] = saved;
    }
  });

  test('failNext gives the SDK a Throttling error, then passes through again', async () => {
    const c = client();
    proxy.failNext(1, { status: 400, code: 'Throttling', message: 'Rate exceeded' });
    expect(proxy.pendingFailures).toBe(1);
    const err: unknown = await assume(c).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(STSServiceException);
    const e = err as STSServiceException;
    expect(e.name).toBe('Throttling');
    expect(e.message).toBe('Rate exceeded');
    expect(e.$fault).toBe('client');
    expect(e.$metadata.httpStatusCode).toBe(400);
    expect(proxy.pendingFailures).toBe(0);
    expect(proxy.calls[0]).toMatchObject({ action: 'AssumeRole', outcome: 'failed', status: 400 });

    const ok = await assume(c);
    expect(ok.Credentials?.AccessKeyId).toBeDefined();
    expect(proxy.count('AssumeRole')).toBe(2);
  });

  test('failNext with 503 ServiceUnavailable is retried by the SDK', async () => {
    const c = client({ maxAttempts: 3 });
    proxy.failNext(2, { status: 503, code: 'ServiceUnavailable', message: 'try later' });
    const out = await assume(c);
    expect(out.$metadata.attempts).toBe(3);
    expect(proxy.calls.map((x) => x.outcome)).toEqual(['failed', 'failed', 'forwarded']);
    expect(proxy.calls.map((x) => x.status)).toEqual([503, 503, 200]);
  });

  test('failNext can target one action', async () => {
    const c = client();
    proxy.failNext(1, { action: 'AssumeRole', code: 'AccessDenied', message: 'nope', status: 403 });
    await c.send(new GetCallerIdentityCommand({})); // not affected
    const err = (await assume(c).catch((e: unknown) => e)) as STSServiceException;
    expect(err.name).toBe('AccessDenied');
    expect(err.$metadata.httpStatusCode).toBe(403);
  });

  test('fault responses are STS XML errors', async () => {
    proxy.failNext(1, { status: 400, code: 'Throttling', message: 'Rate exceeded' });
    const r = await httpRequest(`${proxy.url}/`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `Action=AssumeRole&Version=2011-06-15&RoleArn=${encodeURIComponent(ROLE_A)}&RoleSessionName=raw`,
    });
    expect(r.status).toBe(400);
    expect(r.headers['content-type']).toBe('text/xml');
    expect(r.body).toMatch(
      /<ErrorResponse[^>]*>\s*<Error>\s*<Type>Sender<\/Type>\s*<Code>Throttling<\/Code>\s*<Message>Rate exceeded<\/Message>\s*<\/Error>\s*<RequestId>[-0-9a-f]+<\/RequestId>\s*<\/ErrorResponse>/,
    );
    expect(r.headers['x-amzn-requestid']).toBeDefined();
    expect(proxy.calls[0]).toMatchObject({ roleArn: ROLE_A, sessionName: 'raw', outcome: 'failed' });
  });

  test('setDown gives the SDK a network error (no HTTP response), setDown(false) recovers', async () => {
    const c = client();
    await assume(c); // leaves a keep-alive connection open; setDown must kill it too
    proxy.setDown(true);
    type NetErr = Error & { code?: string; $metadata?: { httpStatusCode?: number } };
    const err = (await assume(c).catch((e: unknown) => e)) as NetErr;
    expect(err).not.toBeInstanceOf(STSServiceException);
    expect(err.$metadata?.httpStatusCode).toBeUndefined();
    // The SDK labels a reset connection name='TimeoutError' with code ECONNRESET.
    expect(err.code ?? err.message).toMatch(/ECONNRESET|EPIPE|socket hang up/);
    expect(proxy.droppedConnections).toBeGreaterThan(0);
    expect(proxy.count('AssumeRole')).toBe(1); // the dropped attempt never reached STS

    proxy.setDown(false);
    await assume(c);
    expect(proxy.count('AssumeRole')).toBe(2);
  });

  test('setLatency delays calls', async () => {
    const c = client();
    proxy.setLatency(300);
    const t0 = Date.now();
    await c.send(new GetCallerIdentityCommand({}));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
  });
});

describe('StsProxy refusing callers by access key (the node role, in broker mode)', () => {
  let moto: Moto;
  let proxy: StsProxy;
  const clients: STSClient[] = [];
  const as = (accessKeyId: string): STSClient => {
    const c = new STSClient({ region: 'us-east-1', endpoint: proxy.url, credentials: { accessKeyId, secretAccessKey: 'x' }, maxAttempts: 1 });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    moto = await Moto.start();
    proxy = await StsProxy.start(moto.url, { refuseAccessKeyIds: ['ASIANODE0000EXAMPLE1'] });
  });
  afterAll(async () => {
    for (const c of clients) c.destroy();
    await proxy?.stop();
    await moto?.stop();
  });

  test('AssumeRole signed with a refused key: 403 AccessDenied, not forwarded, counted; another key passes; other actions pass', async () => {
    const err = await as('ASIANODE0000EXAMPLE1')
      .send(new AssumeRoleCommand({ RoleArn: ROLE_A, RoleSessionName: 'n', DurationSeconds: 900 }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(STSServiceException);
    expect((err as STSServiceException).name).toBe('AccessDenied');
    expect((err as STSServiceException).$metadata.httpStatusCode).toBe(403);
    expect((err as STSServiceException).message).toContain(ROLE_A);
    expect(proxy.calls).toEqual([expect.objectContaining({ action: 'AssumeRole', roleArn: ROLE_A, accessKeyId: 'ASIANODE0000EXAMPLE1', outcome: 'refused', status: 403 })]);

    // The broker's key assumes the same role; the call records the key STS issued.
    const out = await as('AKIABROKER0000000001').send(new AssumeRoleCommand({ RoleArn: ROLE_A, RoleSessionName: 'b', DurationSeconds: 900 }));
    expect(out.AssumedRoleUser?.Arn).toBe('arn:aws:sts::123456789012:assumed-role/app-a/b');
    expect(proxy.calls[1]).toMatchObject({ accessKeyId: 'AKIABROKER0000000001', outcome: 'forwarded', status: 200, issuedAccessKeyId: out.Credentials!.AccessKeyId });
    expect(proxy.calls[0]!.issuedAccessKeyId).toBeUndefined();
    // The refused key may still ask who it is (only AssumeRole is refused).
    expect((await as('ASIANODE0000EXAMPLE1').send(new GetCallerIdentityCommand({}))).Account).toBe('123456789012');

    // A fault injected meanwhile is not consumed by a refused call.
    proxy.failNext(1, { action: 'AssumeRole' });
    await expect(as('ASIANODE0000EXAMPLE1').send(new AssumeRoleCommand({ RoleArn: ROLE_B, RoleSessionName: 'n', DurationSeconds: 900 }))).rejects.toMatchObject({ name: 'AccessDenied' });
    expect(proxy.pendingFailures).toBe(1);
    expect(proxy.refusedCount()).toBe(2);
    expect(proxy.refusedCount('ASIANODE0000EXAMPLE1')).toBe(2);
    expect(proxy.refusedCount('AKIABROKER0000000001')).toBe(0);

    // Keys can be added later; reset() forgets calls but not the refused keys.
    proxy.reset();
    proxy.refuseAccessKeys(['testing']);
    await expect(as('testing').send(new AssumeRoleCommand({ RoleArn: ROLE_A, RoleSessionName: 't', DurationSeconds: 900 }))).rejects.toMatchObject({ name: 'AccessDenied' });
    await expect(as('ASIANODE0000EXAMPLE1').send(new AssumeRoleCommand({ RoleArn: ROLE_A, RoleSessionName: 't', DurationSeconds: 900 }))).rejects.toMatchObject({ name: 'AccessDenied' });
    expect(proxy.refusedCount()).toBe(2);
  });
});

describe('StsProxy answering AssumeRole itself for some roles (answerRoles)', () => {
  let moto: Moto;
  let proxy: StsProxy;
  beforeAll(async () => {
    moto = await Moto.start();
    proxy = await StsProxy.start(moto.url, { refuseAccessKeyIds: ['ASIANODE0000EXAMPLE1'], answerRoles: /:role\/load-/ });
  });
  afterAll(async () => {
    await proxy?.stop();
    await moto?.stop();
  });

  test('a matching role is answered at once in STS’s format and traced; others go to moto; a refused key stays refused', async () => {
    const c = new STSClient({ region: 'us-east-1', endpoint: proxy.url, credentials: { accessKeyId: 'AKIABROKER0000000001', secretAccessKey: 'x' }, maxAttempts: 1 });
    try {
      const local = await c.send(new AssumeRoleCommand({ RoleArn: 'arn:aws:iam::123456789012:role/load-7', RoleSessionName: 'default.load-7', DurationSeconds: 900 }));
      expect(local.AssumedRoleUser?.Arn).toBe('arn:aws:sts::123456789012:assumed-role/load-7/default.load-7');
      expect(local.Credentials?.AccessKeyId).toMatch(/^ASIA[0-9A-F]{16}$/);
      expect(local.Credentials!.Expiration!.getTime() - Date.now()).toBeGreaterThan(890_000);
      const other = await c.send(new AssumeRoleCommand({ RoleArn: ROLE_A, RoleSessionName: 's', DurationSeconds: 900 }));
      expect(proxy.calls.map((x) => [x.roleArn, x.outcome, x.issuedAccessKeyId])).toEqual([
        ['arn:aws:iam::123456789012:role/load-7', 'answered', local.Credentials!.AccessKeyId],
        [ROLE_A, 'forwarded', other.Credentials!.AccessKeyId],
      ]);
      const node = new STSClient({ region: 'us-east-1', endpoint: proxy.url, credentials: { accessKeyId: 'ASIANODE0000EXAMPLE1', secretAccessKey: 'x' }, maxAttempts: 1 });
      await expect(node.send(new AssumeRoleCommand({ RoleArn: 'arn:aws:iam::123456789012:role/load-8', RoleSessionName: 'x' }))).rejects.toMatchObject({ name: 'AccessDenied' });
      node.destroy();
    } finally {
      c.destroy();
    }
  });
});

describe('StsProxy forwarding', () => {
  let target: http.Server;
  let proxy: StsProxy;
  const seen: Array<{ method?: string; url?: string; headers: http.IncomingHttpHeaders; body: string }> = [];

  beforeAll(async () => {
    target = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push({ method: req.method, url: req.url, headers: req.headers, body });
        res.writeHead(207, { 'X-Upstream': 'yes', 'Content-Type': 'text/xml' });
        res.end('<ok/>');
      });
    });
    const port = await listen(target, 0, '127.0.0.1');
    proxy = await StsProxy.start(`http://127.0.0.1:${port}`);
  });
  afterAll(async () => {
    await proxy.stop();
    await closeServer(target);
  });

  test('forwards method, path, headers (incl. Host) and body verbatim; pipes the response back', async () => {
    const body = 'Action=GetSessionToken&Version=2011-06-15&DurationSeconds=900';
    const r = await httpRequest(`${proxy.url}/some/path?x=1`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-custom': 'abc', host: 'sts.example.test' },
      body,
    });
    expect(r.status).toBe(207);
    expect(r.headers['x-upstream']).toBe('yes');
    expect(r.body).toBe('<ok/>');
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ method: 'POST', url: '/some/path?x=1', body });
    expect(seen[0]!.headers['host']).toBe('sts.example.test');
    expect(seen[0]!.headers['x-custom']).toBe('abc');
    expect(proxy.calls[0]).toMatchObject({ action: 'GetSessionToken', durationSeconds: 900, status: 207 });
  });

  test('unreachable target -> 502 STS error, recorded as error', async () => {
    const dead = await StsProxy.start('http://127.0.0.1:1');
    try {
      const r = await httpRequest(`${dead.url}/`, { method: 'POST', body: 'Action=GetCallerIdentity' });
      expect(r.status).toBe(502);
      expect(r.body).toContain('<Code>ServiceUnavailable</Code>');
      expect(dead.calls[0]).toMatchObject({ action: 'GetCallerIdentity', outcome: 'error', status: 502 });
    } finally {
      await dead.stop();
    }
  });
});

describe('parseStsRequest', () => {
  test('awsQuery form body', () => {
    const p = parseStsRequest(
      'POST',
      '/',
      { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
      Buffer.from('Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&RoleSessionName=s'),
    );
    expect(p.action).toBe('AssumeRole');
    expect(p.params['RoleArn']).toBe('arn:aws:iam::1:role/r');
  });
  test('query string GET', () => {
    expect(parseStsRequest('GET', '/?Action=GetCallerIdentity&Version=2011-06-15', {}, Buffer.alloc(0)).action).toBe(
      'GetCallerIdentity',
    );
  });
  test('awsJson with X-Amz-Target', () => {
    const p = parseStsRequest(
      'POST',
      '/',
      { 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': 'AWSSecurityTokenServiceV20110615.AssumeRole' },
      Buffer.from(JSON.stringify({ RoleArn: 'arn:aws:iam::1:role/r', DurationSeconds: 900 })),
    );
    expect(p).toEqual({ action: 'AssumeRole', params: { RoleArn: 'arn:aws:iam::1:role/r', DurationSeconds: '900' } });
  });
});
