/**
 * A CA certificate from a file the kubelet keeps up to date (a mounted Secret's ca.crt: the
 * agents' --broker-ca-file, the broker replicas' --peer-ca-file), read again when it changes.
 *
 * cert-manager renews the broker's CA (the component's: every four years) and then the serving
 * certificate it signs. The new ca.crt and the new serving certificate reach each pod's volume at
 * different moments (the kubelet's sync), so for a while one side has moved and the other has
 * not. Trusted here: the certificates the file holds now and those it held before its last
 * change, so a connection verifies whichever side moved first. Read once at start, a renewed CA
 * would have cut every agent off from the broker until it restarted.
 */
import { X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import type { Logger } from './log.js';

/** How often the file is looked at (a stat) while requests are made: the kubelet syncs every minute or so. */
export const CA_CHECK_MS = 10_000;

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** How many certificates `pem` holds that parse; 0 for anything that is not a PEM bundle. */
export function certificateCount(pem: Buffer): number {
  let n = 0;
  for (const block of pem.toString('utf8').match(PEM_CERTIFICATE) ?? []) {
    try {
      new X509Certificate(block);
      n++;
    } catch {
      return 0;
    }
  }
  return n;
}

export interface CaFileOptions {
  readonly everyMs?: number;
  readonly now?: () => number;
  /** The file changed and what is trusted with it (certificates: the file's now plus the previous). */
  readonly onChange?: (certificates: number) => void;
  /** The file changed to something that is not a CA bundle: the certificates trusted stay. */
  readonly onInvalid?: (reason: string) => void;
}

export class CaFile {
  private current: Buffer;
  private previous: Buffer | undefined;
  private signature = '';
  private checkedMs: number;
  private checking: Promise<boolean> | undefined;
  private readonly now: () => number;

  /** `first`: the file's content as read (and checked) at start. */
  constructor(
    readonly file: string,
    first: Buffer,
    private readonly options: CaFileOptions = {},
  ) {
    this.current = first;
    this.now = options.now ?? Date.now;
    this.checkedMs = this.now();
  }

  /** The certificates trusted: the file's now, then (after a change) those it held before. */
  get ca(): Buffer[] {
    return this.previous === undefined ? [this.current] : [this.current, this.previous];
  }

  /**
   * Looks at the file again, at most every CA_CHECK_MS (now, with `force`: a certificate was just
   * refused); true when what is trusted changed. Never throws: a file that cannot be read, or
   * holds no certificate (mid-update), changes nothing.
   */
  refresh(force = false): Promise<boolean> {
    if (this.checking !== undefined) return this.checking;
    if (!force && this.now() - this.checkedMs < (this.options.everyMs ?? CA_CHECK_MS)) return Promise.resolve(false);
    this.checkedMs = this.now();
    this.checking = this.check().finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  private async check(): Promise<boolean> {
    let content: Buffer;
    try {
      const s = await stat(this.file);
      const signature = `${s.ino}:${s.size}:${s.mtimeMs}`;
      if (signature === this.signature) return false;
      content = await readFile(this.file);
      this.signature = signature;
    } catch {
      return false;
    }
    if (content.equals(this.current)) return false;
    if (certificateCount(content) === 0) {
      this.options.onInvalid?.(`${this.file} holds no PEM certificate`);
      return false;
    }
    this.previous = this.current;
    this.current = content;
    this.options.onChange?.(certificateCount(this.current) + certificateCount(this.previous));
    return true;
  }
}

/** A CA file of `flag`'s (--broker-ca-file, --peer-ca-file), its changes logged. */
export function watchedCaFile(flag: string, file: string, first: Buffer, log: Logger): CaFile {
  return new CaFile(file, first, {
    onChange: (certificates) => log.info(`${flag} changed: trusting its new CA and the one before it`, { file, certificates }),
    onInvalid: (reason) => log.warn(`${flag} changed to something that is not a CA certificate: the CA trusted before stays`, { reason }),
  });
}
