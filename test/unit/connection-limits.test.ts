/**
 * ConnectionLimiter on real loopback sockets: per-IP and total caps in front of an HTTP server,
 * closed at once and counted, room given back on close, the server's own handling untouched.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import type { ConnectionLimit } from '../../src/connection-limits.js';
import { ConnectionLimiter } from '../../src/connection-limits.js';

const servers: http.Server[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => (s.closeAllConnections(), s.close(r)))));
});

async function serve(limiter: ConnectionLimiter): Promise<number> {
  const server = http.createServer((_req, res) => res.end('ok'));
  limiter.attach(server);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

/** Connects from `fromIp`; resolves 'open' when an HTTP answer came back, 'closed' when podiam closed it first. */
function connect(port: number, fromIp: string): Promise<'open' | 'closed'> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: fromIp });
    sockets.push(s);
    s.on('error', () => undefined);
    s.on('connect', () => s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    s.once('data', () => resolve('open'));
    s.once('close', () => resolve('closed'));
  });
}

test('per IP: the cap-th connection from one address is closed at once; another address is not affected', async () => {
  const refused: ConnectionLimit[] = [];
  const limiter = new ConnectionLimiter({ maxPerIp: 3, max: 100, onRefused: (l) => refused.push(l) });
  const port = await serve(limiter);
  const a = await Promise.all(Array.from({ length: 5 }, () => connect(port, '127.0.0.2')));
  expect(a.filter((r) => r === 'open')).toHaveLength(3);
  expect(refused).toEqual(['per-ip', 'per-ip']);
  expect(await connect(port, '127.0.0.3')).toBe('open');
  expect(limiter.count('127.0.0.2')).toBe(3);
  expect(limiter.count()).toBe(4);
});

test('total: shared by every server attached; a closed connection gives its room back', async () => {
  const refused: ConnectionLimit[] = [];
  const limiter = new ConnectionLimiter({ maxPerIp: 100, max: 4, onRefused: (l) => refused.push(l) });
  const [p1, p2] = [await serve(limiter), await serve(limiter)];
  expect(await Promise.all([connect(p1, '127.0.0.2'), connect(p1, '127.0.0.3'), connect(p2, '127.0.0.4'), connect(p2, '127.0.0.5')])).toEqual(['open', 'open', 'open', 'open']);
  expect(await connect(p2, '127.0.0.6')).toBe('closed');
  expect(refused).toEqual(['total']);
  sockets[0]!.destroy();
  await new Promise((r) => setTimeout(r, 50));
  expect(limiter.count()).toBe(3);
  expect(await connect(p1, '127.0.0.6')).toBe('open');
});
