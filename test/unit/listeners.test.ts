import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { drain, listen, reusePortSupported } from '../../src/listeners.js';
import { otherListeners } from '../../src/handover.js';

test('reusePort: Node 22.12+, 23.1+ and later majors; not 20 or 22.11', () => {
  expect(['20.19.0', '22.11.0', '22.12.0', '22.23.5', '23.0.0', '23.1.0', '24.0.0'].map((v) => [v, reusePortSupported(v)])).toEqual([
    ['20.19.0', false],
    ['22.11.0', false],
    ['22.12.0', true],
    ['22.23.5', true],
    ['23.0.0', false],
    ['23.1.0', true],
    ['24.0.0', true],
  ]);
});

function get(port: number, agent: http.Agent): Promise<{ status: number; connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
    }).on('error', reject);
  });
}

test('drain: a keep-alive client polling every 20 ms gets every answer (the last with Connection: close), an idle connection is closed after idleMs, then the server is closed', async () => {
  const server = http.createServer({ keepAliveTimeout: 65_000 }, (_req, res) => res.end('ok'));
  const { port } = await listen(server, 0, '127.0.0.1', false);
  const busy = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const idle = new http.Agent({ keepAlive: true, maxSockets: 1 });
  expect(await get(port, idle)).toEqual({ status: 200, connection: 'keep-alive' });
  expect(await get(port, busy)).toEqual({ status: 200, connection: 'keep-alive' });
  const idleSocketClosed = new Promise<number>((resolve) => {
    const socket = Object.values(idle.freeSockets)[0]![0]!;
    socket.once('close', () => resolve(Date.now()));
  });
  const t0 = Date.now();
  const drained = drain(server, { graceMs: 5_000, idleMs: 300 });
  const answers: Array<{ status: number; connection: string | undefined }> = [];
  // Polled every 20 ms: its connection answers (Connection: close), the agent reconnects and is refused
  // (nothing listens any more), which ends the loop.
  for (let i = 0; i < 5; i++) {
    const a = await get(port, busy).catch((err: NodeJS.ErrnoException) => ({ status: 0, connection: err.code }));
    answers.push(a);
    if (a.status === 0) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  expect(answers).toEqual([{ status: 200, connection: 'close' }, { status: 0, connection: 'ECONNREFUSED' }]);
  expect((await idleSocketClosed) - t0).toBeGreaterThanOrEqual(250);
  await drained;
  expect(server.listening).toBe(false);
  busy.destroy();
  idle.destroy();
});

test('drain: an answer still being worked on (the handler waiting, as on STS) is not cut; it closes its connection', async () => {
  let release!: () => void;
  const waiting = new Promise<void>((resolve) => (release = resolve));
  let arrived!: () => void;
  const started = new Promise<void>((resolve) => (arrived = resolve));
  const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    if (req.url === '/slow') {
      arrived();
      void waiting.then(() => res.end('late'));
    } else res.end('ok');
  });
  const { port } = await listen(server, 0, '127.0.0.1', false);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  expect(await get(port, agent)).toEqual({ status: 200, connection: 'keep-alive' });
  const slow = new Promise<{ status: number; connection: string | undefined; body: string }>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/slow', agent }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body }));
    }).on('error', reject);
  });
  await started;
  // idleMs far shorter than the handler's wait: a sweep that took the connection for idle would cut the answer.
  const drained = drain(server, { graceMs: 5_000, idleMs: 50 });
  await new Promise((r) => setTimeout(r, 400));
  release();
  expect(await slow).toEqual({ status: 200, connection: 'close', body: 'late' });
  await drained;
  agent.destroy();
});

test('drain: pipelined requests on one connection are all answered, the last one closing it', async () => {
  let release!: () => void;
  const waiting = new Promise<void>((resolve) => (release = resolve));
  let arrivals = 0;
  let allArrived!: () => void;
  const arrived = new Promise<void>((resolve) => (allArrived = resolve));
  const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    if (++arrivals === 3) allArrived();
    void waiting.then(() => res.end(req.url));
  });
  const { port } = await listen(server, 0, '127.0.0.1', false);
  const socket = net.connect(port, '127.0.0.1');
  let raw = '';
  socket.on('data', (d: Buffer) => (raw += d.toString()));
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.write(['/a', '/b', '/c'].map((p) => `GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`).join(''));
  await arrived;
  const drained = drain(server, { graceMs: 5_000, idleMs: 50 });
  await new Promise((r) => setTimeout(r, 200));
  release();
  await closed;
  await drained;
  const answers = raw.split('HTTP/1.1 ').slice(1);
  expect(answers.map((a) => [/\r\n\r\n(.*)$/s.exec(a)?.[1], /connection: (\S+)/i.exec(a)?.[1]?.toLowerCase()])).toEqual([
    ['/a', 'keep-alive'],
    ['/b', 'keep-alive'],
    ['/c', 'close'],
  ]);
});

test('a finished answer is not kept: its ServerResponse can be collected while its keep-alive connection stays open', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const answers: Array<WeakRef<http.ServerResponse>> = [];
  const server = http.createServer({ keepAliveTimeout: 65_000 }, (_req, res) => {
    answers.push(new WeakRef(res));
    res.end('ok');
  });
  const { port } = await listen(server, 0, '127.0.0.1', false);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < 3; i++) expect(await get(port, agent)).toEqual({ status: 200, connection: 'keep-alive' });
    // A response's close event is emitted on the next tick after it finishes: let it pass.
    await new Promise((r) => setTimeout(r, 50));
    gc();
    await new Promise((r) => setTimeout(r, 0));
    gc();
    expect(Object.values(agent.freeSockets).flat()).toHaveLength(1);
    expect(answers.map((a) => a.deref() === undefined)).toEqual([true, true, true]);
  } finally {
    agent.destroy();
    await drain(server, { graceMs: 1_000, idleMs: 10 });
  }
});

test('otherListeners: a listener of this process is not another; one of a child process is', async () => {
  const server = http.createServer();
  const { port } = (await listen(server, 0, '127.0.0.1', false)) as AddressInfo;
  expect(await otherListeners(port)).toBe(0);
  const child = spawn(process.execPath, ['-e', "const s = require('net').createServer().listen(0, '127.0.0.1', () => console.log(s.address().port))"], { stdio: ['ignore', 'pipe', 'inherit'] });
  const childPort = Number(await new Promise<string>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString()))));
  try {
    expect(await otherListeners(childPort)).toBe(1);
  } finally {
    child.kill('SIGKILL');
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
