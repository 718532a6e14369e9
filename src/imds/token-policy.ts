/**
 * Whether pods must use IMDSv2 tokens: as the node does (`--imds-tokens=auto`, the default), or as
 * the operator says (`required`, `optional`). An operator who set the instance's metadata options
 * to `HttpTokens=required` chose that defence against SSRF (a server-side request forger can send
 * a GET, rarely a PUT with a custom header); podiam answering token-less GETs would undo it for
 * every pod. With tokens required, a token-less GET gets 401, as EC2 answers it
 * (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instance-metadata-v2-how-it-works.html).
 *
 * auto: one token-less GET of `/latest/meta-data/` at start: 401 means the node requires tokens,
 * 200 that it does not. Until an answer comes, and while the service does not answer (down,
 * timeout, any other status), tokens are required: fail closed. Every SDK tries IMDSv2 first, so
 * that costs only IMDSv1-only clients, and only until the service answers: the probe is retried
 * every `retryMs` until it does. The answer is then kept: a later change of the instance's
 * metadata options is seen at podiam's next start (or set --imds-tokens).
 */
import type { Logger } from '../log.js';

export type ImdsTokensMode = 'required' | 'optional' | 'auto';

export const PROBE_PATH = '/latest/meta-data/';

export interface ImdsTokenPolicyOptions {
  readonly mode: ImdsTokensMode;
  /** The status of a token-less GET of PROBE_PATH on the real service; rejects when it does not answer. */
  readonly probe: () => Promise<number>;
  readonly log: Pick<Logger, 'info' | 'warn'>;
  readonly retryMs?: number;
}

export class ImdsTokenPolicy {
  private requiredNow: boolean;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly options: ImdsTokenPolicyOptions) {
    this.requiredNow = options.mode !== 'optional';
  }

  /** Hot path: a field read. */
  required(): boolean {
    return this.requiredNow;
  }

  /** With auto, the first probe (bounded by the passthrough's timeout); never rejects. */
  async start(): Promise<void> {
    const { mode, log } = this.options;
    if (mode !== 'auto') {
      log.info('IMDSv2 tokens from pods', { required: this.requiredNow, source: `--imds-tokens=${mode}` });
      return;
    }
    await this.probe(true);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
  }

  private async probe(first: boolean): Promise<void> {
    const { probe, log } = this.options;
    let status: number | undefined;
    let error: string | undefined;
    try {
      status = await probe();
    } catch (err) {
      error = (err as Error).message;
    }
    if (this.stopped) return;
    if (status === 401 || status === 200) {
      this.requiredNow = status === 401;
      log.info('IMDSv2 tokens from pods', { required: this.requiredNow, source: `the node's metadata service (token-less GET ${PROBE_PATH}: ${status})` });
      return;
    }
    if (first) {
      log.warn('the metadata service did not say whether it requires IMDSv2 tokens: pods must use them until it does (set --imds-tokens=optional to serve IMDSv1)', {
        answer: status ?? error,
        retryInMs: this.options.retryMs ?? 30_000,
      });
    }
    this.timer = setTimeout(() => void this.probe(false), this.options.retryMs ?? 30_000);
    this.timer.unref();
  }
}
