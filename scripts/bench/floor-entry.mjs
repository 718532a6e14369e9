/**
 * The floor (scripts/bench/floor.mjs): what a Node HTTP server weighs once it carries the packages
 * podiam is required to use, and nothing of podiam. Bundled by scripts/build.mjs's build() exactly as
 * podiam is (same plugins, same minification, the same shebang's flags), it loads
 * @kubernetes/client-node's KubeConfig (as src/kube/api.ts does, and applies it to an HTTPS options
 * object), a winston JSON logger (src/log.ts), a prom-client registry with the default metrics and
 * one labelled histogram observed per request (src/metrics.ts), and answers every request with a
 * fixed 603-byte body and the headers podiam's credentials answer carries.
 *
 * FLOOR_SKIP=default,hist leaves out the default metrics and/or the per-request histogram.
 * Prints `ready <port>` once listening; stops on SIGTERM.
 */
import { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import { Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import winston from 'winston';

const http = process.getBuiltinModule('node:http');
const skip = new Set((process.env.FLOOR_SKIP ?? '').split(','));

const kc = new KubeConfig();
kc.loadFromOptions({
  clusters: [{ name: 'c', server: 'https://127.0.0.1:1', skipTLSVerify: true }],
  users: [{ name: 'u', token: 'floor' }],
  contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
  currentContext: 'x',
});
await kc.applyToHTTPSOptions({});
const logger = winston.createLogger({ level: 'info', format: winston.format.combine(winston.format.timestamp(), winston.format.json()), transports: [new winston.transports.Console()] });
const registry = new Registry();
if (!skip.has('default')) collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 1000 });
const seconds = new Histogram({ name: 'floor_request_duration_seconds', help: 'h', labelNames: ['route', 'code'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [registry] });
const observe = !skip.has('hist');

const body = Buffer.alloc(603, 'x');
const server = http.createServer({ keepAliveTimeout: 65_000 }, (_req, res) => {
  const t0 = process.hrtime.bigint();
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length, Server: 'EC2ws' });
  res.end(body);
  if (observe) seconds.observe({ route: 'credentials', code: '200' }, Number(process.hrtime.bigint() - t0) / 1e9);
});
server.listen(0, '127.0.0.1', () => {
  logger.info('floor listening', { port: server.address().port });
  process.stdout.write(`ready ${server.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
setTimeout(() => process.exit(0), 60 * 60 * 1000).unref();
