/** `podiam webhook [flags]`: parse its flags, start, and stop cleanly on SIGTERM/SIGINT. */
import { ConfigError } from '../errors.js';
import { createLogger } from '../log.js';
import { stopSignals } from '../signals.js';
import { parseWebhookConfig, webhookHelpText } from './config.js';
import { startWebhook } from './main.js';

export async function runWebhook(argv: readonly string[]): Promise<number> {
  let request;
  try {
    request = parseWebhookConfig(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`podiam webhook: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (request.kind === 'help') {
    process.stdout.write(webhookHelpText());
    return 0;
  }
  const { config } = request;
  const log = createLogger({ format: config.logFormat, level: config.logLevel });
  process.on('unhandledRejection', (reason) => {
    log.error('unhandled rejection', { error: reason instanceof Error ? reason.message : String(reason) });
  });
  const signals = stopSignals();

  let webhook;
  try {
    webhook = await startWebhook(config, log);
  } catch (err) {
    const message = (err as Error).message;
    log.error('podiam webhook could not start', { error: message });
    process.stderr.write(`podiam webhook: ${message}\n`);
    return 1;
  }
  return signals.runUntilStopped(webhook, log);
}
