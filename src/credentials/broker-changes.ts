/**
 * The agent's end of the broker's change feed (src/broker/policy-changes.ts): one long poll at a
 * time, for the agent's life. Each answer names the namespaces and ServiceAccounts of this node's
 * pods whose policy changed; BrokerCredentials.policyChanged holds those pods until the broker has
 * said their role again. A broker that cannot be reached is asked again with backoff (the
 * credential requests themselves report the broker down); the first failure is logged, and the
 * recovery.
 */
import type { Logger } from '../log.js';
import type { BrokerLink } from './broker-client.js';
import type { WireChange } from './broker-wire.js';
import { CHANGES_PATH, parseChangesAnswer } from './broker-wire.js';

/** Longer than the broker holds a poll (20 s) on the first replica asked, with time for a second. */
const LONG_POLL_TIMEOUT_MS = 60_000;
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;

export class BrokerChanges {
  private since: number | undefined;
  private stopped = false;
  private wake: (() => void) | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly link: BrokerLink,
    private readonly apply: (changes: readonly WireChange[], reset: boolean) => number,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.running ??= this.loop();
  }

  /** Stops polling; the poll in flight ends when the link closes. */
  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        const raw = await this.link.post(CHANGES_PATH, this.since === undefined ? {} : { since: this.since }, { timeoutMs: LONG_POLL_TIMEOUT_MS, observe: false });
        const answer = parseChangesAnswer(raw);
        if (answer === undefined) throw new Error('the broker answered /v1/changes with something else than changes');
        if (this.stopped) return;
        if (failures > 0) this.log.info('broker change feed: back', { after: failures });
        failures = 0;
        if (answer.reset || answer.changes.length > 0) {
          const pods = this.apply(answer.changes, answer.reset);
          this.log.info('broker: policy changed, asking the broker again about the pods it touches', { reset: answer.reset, changes: answer.changes.map((c) => (c.serviceAccount === undefined ? c.namespace : `${c.namespace}/${c.serviceAccount}`)).slice(0, 20), pods });
        }
        this.since = answer.now;
      } catch (err) {
        if (this.stopped) return;
        failures++;
        const retryInMs = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (failures - 1));
        const status = (err as { status?: number }).status;
        if (failures === 1) {
          const why = status === 404 || status === 405 ? 'the broker does not serve /v1/changes (older than this agent: upgrade the broker)' : 'no answer';
          this.log.warn(`broker change feed: ${why}; policy changes reach this node when it is back (until then, at each refresh)`, { code: (err as { code?: string }).code, error: (err as Error).message, retryInMs });
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, retryInMs);
          timer.unref();
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = undefined;
      }
    }
  }
}
