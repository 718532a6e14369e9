#!/usr/bin/env node
/** The podiam command: parse flags, start, and stop cleanly on SIGTERM/SIGINT. */
import { readFileSync } from 'node:fs';
import { ConfigError } from './errors.js';
import { helpText, parseConfig } from './config.js';
import { createLogger } from './log.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: readonly string[]): Promise<number> {
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
  const { config } = request;
  const log = createLogger({ format: config.logFormat, level: config.logLevel });
  let podiam;
  try {
    // Loaded only now: flag errors, --help and --version answer without loading the SDKs.
    const { start } = await import('./main.js');
    podiam = await start(config, log);
  } catch (err) {
    const message = (err as Error).message;
    log.error('podiam could not start', { error: message });
    process.stderr.write(`podiam: ${message}\n`);
    return err instanceof ConfigError ? 2 : 1;
  }
  const running = podiam;
  return new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      process.removeAllListeners('SIGTERM');
      process.removeAllListeners('SIGINT');
      // A second signal while draining exits at once.
      process.once('SIGTERM', () => process.exit(1));
      process.once('SIGINT', () => process.exit(1));
      running.shutdown(signal).then(
        () => resolve(0),
        (err: Error) => {
          log.error('shutdown failed', { error: err.message });
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
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
