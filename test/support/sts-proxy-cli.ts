/**
 * Standalone StsProxy, e.g. in a lab's node namespace in front of moto:
 *
 *   node dist/test/support/sts-proxy-cli.js --host 192.0.2.1 --port 5001 --target http://192.0.2.1:5000 \
 *     [--refuse-key ASIANODE0000EXAMPLE1 ...] [--control-port 5002] [--answer-roles REGEXP]
 *
 * Prints `ready <url>` once listening; stops on SIGTERM/SIGINT. With --control-port, a second
 * listener on the same host lets the test read what the proxy saw: `GET /calls` (the recorded
 * StsCall list, JSON), `POST /reset` (forget them).
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { closeServer, listen } from './net.js';
import { StsProxy } from './sts-proxy.js';

function intArg(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`--${name} must be a port number, got ${value}`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      target: { type: 'string' },
      'refuse-key': { type: 'string', multiple: true, default: [] },
      'control-port': { type: 'string' },
      'answer-roles': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write('usage: sts-proxy-cli --target URL [--host H] [--port P] [--refuse-key KEY ...] [--control-port P] [--answer-roles REGEXP]\n');
    return;
  }
  if (values.target === undefined) throw new Error('--target is required, e.g. --target http://127.0.0.1:5000');
  const proxy = await StsProxy.start(values.target, { host: values.host, port: intArg('port', values.port), refuseAccessKeyIds: values['refuse-key'], ...(values['answer-roles'] !== undefined && { answerRoles: new RegExp(values['answer-roles']) }) });

  let control: http.Server | undefined;
  const controlPort = intArg('control-port', values['control-port']);
  if (controlPort !== undefined) {
    control = http.createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/calls') {
        res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(proxy.calls));
      } else if (req.method === 'POST' && req.url === '/reset') {
        proxy.calls.length = 0;
        res.writeHead(204).end();
      } else {
        res.writeHead(404).end();
      }
    });
    await listen(control, controlPort, values.host);
  }
  process.stdout.write(`ready ${proxy.url}\n`);

  let stopping = false;
  const shutdown = (): void => {
    if (stopping) return;
    stopping = true;
    Promise.all([proxy.stop(), control === undefined ? undefined : closeServer(control)]).then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`stop failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

main().catch((err: unknown) => {
  process.stderr.write(`sts-proxy-cli: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
