/**
 * SIGTERM and SIGINT, for the agent and the webhook alike: taken from start-up on, the first one
 * stops the process (as soon as it has started far enough to know what to undo), a second one
 * exits at once.
 */
import type { Logger } from './log.js';

export interface StopSignals {
  /** The first signal received, if any. */
  signalled(): NodeJS.Signals | undefined;
  /** Resolves with the exit code once the first signal (received already, or to come) has shut `running` down. */
  runUntilStopped(running: { shutdown(reason: string): Promise<void> }, log: Logger): Promise<number>;
}

/** `onFirst` runs when the first signal arrives (e.g. to abort a start-up that waits). */
export function stopSignals(onFirst?: (signal: NodeJS.Signals) => void): StopSignals {
  let signalled: NodeJS.Signals | undefined;
  let stop: ((signal: NodeJS.Signals) => void) | undefined;
  const handler = (signal: NodeJS.Signals): void => {
    // A second signal while draining exits at once.
    if (signalled !== undefined) process.exit(1);
    signalled = signal;
    onFirst?.(signal);
    stop?.(signal);
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  return {
    signalled: () => signalled,
    runUntilStopped(running, log) {
      return new Promise<number>((resolve) => {
        stop = (signal) =>
          running.shutdown(signal).then(
            () => resolve(0),
            (err: Error) => {
              log.error('shutdown failed', { error: err.message });
              resolve(1);
            },
          );
        if (signalled !== undefined) stop(signalled);
      });
    },
  };
}
