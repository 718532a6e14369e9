/** `podiam broker [flags]`: parse its flags, start, and stop cleanly on SIGTERM/SIGINT. */
import { ConfigError } from '../errors.js';
import { createLogger } from '../log.js';
import { stopSignals } from '../signals.js';
import { brokerHelpText, parseBrokerConfig } from './config.js';
import { startBroker } from './main.js';

export async function runBroker(argv: readonly string[]): Promise<number> {
  let request;
  try {
    request = parseBrokerConfig(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`podiam broker: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (request.kind === 'help') {
    process.stdout.write(brokerHelpText());
    return 0;
  }
  const { config } = request;
  const log = createLogger({ format: config.logFormat, level: config.logLevel });
  process.on('unhandledRejection', (reason) => {
    log.error('unhandled rejection in a background task', { error: reason instanceof Error ? reason.message : String(reason) });
  });
  const signals = stopSignals();
  let broker;
  try {
    broker = await startBroker(config, log);
  } catch (err) {
    const message = (err as Error).message;
    log.error('podiam broker could not start', { error: message });
    process.stderr.write(`podiam broker: ${message}\n`);
    return err instanceof ConfigError ? 2 : 1;
  }
  return signals.runUntilStopped(broker, log);
}
