#!/usr/bin/env node
/** The podiam command: parse flags, start, and stop cleanly on SIGTERM/SIGINT. */
import { readFileSync } from 'node:fs';
import { ConfigError } from './errors.js';
import { helpText, parseConfig } from './config.js';
import { createLogger } from './log.js';
import { start } from './main.js';
import { stopSignals } from './signals.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: readonly string[]): Promise<number> {
  // `podiam webhook …`: the mutating admission webhook, a process of its own with its own flags.
  // Its own chunk of the bundle (scripts/build.mjs): the agent never reads it.
  if (argv[0] === 'webhook') return (await import('./webhook/run.js')).runWebhook(argv.slice(1));
  // `podiam broker …`: the cluster's credential broker (the only caller of STS in broker mode), its own chunk too.
  if (argv[0] === 'broker') return (await import('./broker/run.js')).runBroker(argv.slice(1));
  let request;
  try {
    request = parseConfig(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`podiam: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (request.kind === 'help') {
    process.stdout.write(helpText());
    return 0;
  }
  if (request.kind === 'version') {
    process.stdout.write(`podiam ${version()}\n`);
    return 0;
  }
  if (request.kind === 'cleanup') return cleanupRules(request.tokenLink);
  const { config } = request;
  const log = createLogger({ format: config.logFormat, level: config.logLevel });
  // A background task that fails must not take the node's credentials down with it: log it.
  process.on('unhandledRejection', (reason) => {
    log.error('unhandled rejection in a background task', { error: reason instanceof Error ? reason.message : String(reason) });
  });

  // Signals are taken from the start: a SIGTERM while starting (after the iptables rule went in,
  // say) must still shut down cleanly, once start-up has got far enough to know what to undo;
  // one that arrives while start-up waits (for the app port, held by kube2iam) aborts the wait.
  const starting = new AbortController();
  const signals = stopSignals(() => starting.abort());

  let podiam;
  try {
    podiam = await start(config, log, starting.signal);
  } catch (err) {
    const signalled = signals.signalled();
    if (signalled !== undefined && (err as Error).name === 'StartAborted') {
      log.info('podiam stopped before it started', { signal: signalled });
      return 0;
    }
    const message = (err as Error).message;
    log.error('podiam could not start', { error: message });
    process.stderr.write(`podiam: ${message}\n`);
    return err instanceof ConfigError ? 2 : 1;
  }
  return signals.runUntilStopped(podiam, log);
}

/**
 * podiam --cleanup: what kube-proxy --cleanup is to kube-proxy. Needs neither Kubernetes nor STS.
 * Removes the interception rules and, with --token-interface, the token addresses on that link.
 */
async function cleanupRules(tokenLink: { readonly link: string; readonly addresses: readonly string[] } | undefined): Promise<number> {
  const { cleanup } = await import('./iptables.js');
  try {
    const report = await cleanup();
    for (const line of report.removed) process.stdout.write(`removed: ${line}\n`);
    for (const line of report.skipped) process.stdout.write(`skipped: ${line}\n`);
    process.stdout.write(report.removed.length === 0 ? 'podiam --cleanup: no podiam rules found, nothing to remove\n' : `podiam --cleanup: removed ${report.removed.length} rule(s)/chain(s)\n`);
    if (tokenLink !== undefined) {
      const { createLinkAddresses } = await import('./link-addresses.js');
      await createLinkAddresses(tokenLink.link, tokenLink.addresses).remove();
      process.stdout.write(`removed: token addresses ${tokenLink.addresses.join(', ')} from ${tokenLink.link}${tokenLink.link === 'lo' ? '' : ' (and the link)'}\n`);
    }
    return 0;
  } catch (err) {
    process.stderr.write(`podiam: ${(err as Error).message}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    // Let the logger flush, then exit with the code (open handles must not keep a stopped agent alive).
    setTimeout(() => process.exit(code), 50).unref();
    process.exitCode = code;
  },
  (err: Error) => {
    process.stderr.write(`podiam: fatal: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
