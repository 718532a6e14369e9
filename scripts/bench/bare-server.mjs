#!/usr/bin/env node
/**
 * The ceiling: a bare Node `http` server answering every request with a fixed body of the given
 * size and the same headers podiam sends (Content-Type, Content-Length, Server), with the same
 * keep-alive timeout. What any Node HTTP server on this machine can do, under the same load.
 *
 *   node scripts/bench/bare-server.mjs <bodyBytes>   ->  prints `ready <port>`; stops on SIGTERM
 */
// As podiam's bundle takes it (scripts/build.mjs): on Node 22 an ESM import of node:http builds its
// ESM facade, which loads undici, tls and http2 (~10 MB of RSS a listening server does not need),
// and the floor would be that much too high.
const http = process.getBuiltinModule('node:http');

const size = Number(process.argv[2] ?? 1200);
const body = Buffer.alloc(size, 'x');
const server = http.createServer({ keepAliveTimeout: 65_000 }, (_req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length, Server: 'EC2ws' });
  res.end(body);
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`ready ${server.address().port}\n`));
process.on('SIGTERM', () => process.exit(0));
// Never outlive the bench by much.
setTimeout(() => process.exit(0), 60 * 60 * 1000).unref();
