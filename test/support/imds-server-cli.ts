/**
 * Standalone FakeImds, e.g. inside a network namespace in a lab:
 *
 *   node dist/test/support/imds-server-cli.js --host 169.254.169.254 --port 80 \
 *     [--require-v2] [--node-role node-role] [--account-id 123456789012] [--region us-east-1] [--latency-ms 0] [--keep-alive-ms 1000]
 *
 * Prints `ready <url>` once listening; stops on SIGTERM/SIGINT.
 */
import { parseArgs } from 'node:util';
import { FakeImds } from './imds-server.js';

function intArg(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got ${value}`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      'require-v2': { type: 'boolean', default: false },
      'node-role': { type: 'string' },
      'account-id': { type: 'string' },
      region: { type: 'string' },
      'latency-ms': { type: 'string' },
      'keep-alive-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(
      'usage: imds-server-cli [--host H] [--port P] [--require-v2] [--node-role R] [--account-id A] [--region R] [--latency-ms N] [--keep-alive-ms N]\n',
    );
    return;
  }
  const imds = await FakeImds.start({
    host: values.host,
    port: intArg('port', values.port),
    requireV2: values['require-v2'],
    nodeRole: values['node-role'],
    accountId: values['account-id'],
    region: values.region,
    latencyMs: intArg('latency-ms', values['latency-ms']),
    keepAliveMs: intArg('keep-alive-ms', values['keep-alive-ms']),
  });
  process.stdout.write(`ready ${imds.url}\n`);

  let stopping = false;
  const shutdown = (): void => {
    if (stopping) return;
    stopping = true;
    imds.stop().then(
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
  process.stderr.write(`imds-server-cli: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
