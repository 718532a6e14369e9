/**
 * Standalone KubeApiServer, e.g. for a demo or a lab:
 *
 *   node dist/test/support/kube-api-server-cli.js --host 0.0.0.0 --port 18080 \
 *     [--fixture fixture.json] [--token T] [--history-limit 1000]
 *
 * The fixture is `{ "nodes": [...], "namespaces": [...], "serviceAccounts": [...], "pods": [...] }` (in that order).
 * `GET /_test/node-patches` answers the node PATCHes applied so far (KubeApiServer.nodePatches()).
 * Prints `ready <url>` once listening; stops on SIGTERM/SIGINT.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { KubeApiServer } from './kube-api-server.js';
import type { KubeObjectInput } from './kube-api-server.js';

function intArg(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got ${value}`);
  return n;
}

interface Fixture {
  nodes?: KubeObjectInput[];
  namespaces?: KubeObjectInput[];
  pods?: KubeObjectInput[];
  serviceAccounts?: KubeObjectInput[];
}

function loadFixture(path: string): Fixture {
  const parsed: unknown = JSON.parse(readFileSync(path, 'utf8'));
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error(`${path}: expected an object with "namespaces" and/or "pods" arrays`);
  }
  const fixture = parsed as Fixture;
  for (const key of ['nodes', 'namespaces', 'pods', 'serviceAccounts'] as const) {
    if (fixture[key] !== undefined && !Array.isArray(fixture[key])) throw new Error(`${path}: "${key}" must be an array`);
  }
  return fixture;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      fixture: { type: 'string' },
      token: { type: 'string' },
      'history-limit': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(
      'usage: kube-api-server-cli [--host H] [--port P] [--fixture file.json] [--token T] [--history-limit N]\n',
    );
    return;
  }
  const fixture = values.fixture === undefined ? {} : loadFixture(values.fixture);
  const server = new KubeApiServer({
    host: values.host,
    port: intArg('port', values.port),
    historyLimit: intArg('history-limit', values['history-limit']),
    token: values.token,
  });
  for (const node of fixture.nodes ?? []) server.createNode(node);
  for (const ns of fixture.namespaces ?? []) server.createNamespace(ns);
  for (const sa of fixture.serviceAccounts ?? []) server.createServiceAccount(sa);
  for (const pod of fixture.pods ?? []) server.createPod(pod);
  await server.listen();
  process.stdout.write(`ready ${server.url}\n`);

  let stopping = false;
  const shutdown = (): void => {
    if (stopping) return;
    stopping = true;
    server.stop().then(
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
  process.stderr.write(`kube-api-server-cli: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
