/**
 * A CA certificate from a file the kubelet keeps up to date (a mounted Secret's ca.crt: the
 * agents' --broker-ca-file, the broker replicas' --peer-ca-file), read again when it changes.
 *
 * cert-manager renews the broker's CA (the component's: every four years, keeping its key) and
 * writes the new ca.crt with the next serving certificate. The Secret's new files reach each
 * pod's volume at the kubelet's next sync, so for a minute or two one side has moved and the other
 * has not. Trusted here: the certificates the file holds now and, for PREVIOUS_TRUST_MS after a
 * change, those it held before, so a connection verifies whichever side moved first; then only
 * the file's. Read once at start, a renewed CA would have cut every agent off from the broker
 * until it restarted.
 */
import { X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import type { Agent } from 'node:https';
import type { Logger } from './log.js';

/** How often the file is looked at (a stat) while requests are made: the kubelet syncs every minute or so. */
export const CA_CHECK_MS = 10_000;
/** How long the CA the file held before its last change stays trusted: every pod's volume has the new files by then. */
export const PREVIOUS_TRUST_MS = 60 * 60_000;

/** A TLS error code that says the peer's certificate was not trusted (Node's and OpenSSL's). */
export function isCertificateError(code: string | undefined): boolean {
  return /CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS/i.test(code ?? '');
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** How many CA certificates `pem` holds; 0 for anything else (a key, a serving certificate, a block that does not parse). */
export function certificateCount(pem: Buffer): number {
  let n = 0;
  for (const block of pem.toString('utf8').match(PEM_CERTIFICATE) ?? []) {
    try {
      if (!new X509Certificate(block).ca) return 0;
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
  /** The file changed: the CA certificates it holds now (the previous ones trusted for a while too). */
  readonly onChange?: (certificates: number) => void;
  /** The file changed to something that is not a CA bundle: the certificates trusted stay. */
  readonly onInvalid?: (reason: string) => void;
}

export class CaFile {
  /** Counts every change of what is trusted: a client rebuilds its connections when it differs from the one it built them with. */
  version = 0;
  private current: Buffer;
  private previous: Buffer | undefined;
  private previousUntilMs = 0;
  private signature = '';
  private checkedMs: number;
  private checking: Promise<void> | undefined;
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

  /** The certificates trusted: the file's now, then (for a while after a change) those it held before. */
  get ca(): Buffer[] {
    return this.previous === undefined ? [this.current] : [this.current, this.previous];
  }

  /**
   * Looks at the file again, at most every CA_CHECK_MS (now, with `force`: a certificate was just
   * refused); `version` tells whether what is trusted changed. Never throws: a file that cannot
   * be read, or holds no CA certificate (mid-update), changes nothing.
   */
  refresh(force = false): Promise<void> {
    if (this.previous !== undefined && this.now() >= this.previousUntilMs) {
      this.previous = undefined;
      this.version++;
    }
    if (this.checking !== undefined) return this.checking;
    if (!force && this.now() - this.checkedMs < (this.options.everyMs ?? CA_CHECK_MS)) return Promise.resolve();
    this.checkedMs = this.now();
    this.checking = this.check().finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  private async check(): Promise<void> {
    let content: Buffer;
    try {
      const s = await stat(this.file);
      const signature = `${s.ino}:${s.size}:${s.mtimeMs}`;
      if (signature === this.signature) return;
      content = await readFile(this.file);
      this.signature = signature;
    } catch {
      return;
    }
    if (content.equals(this.current)) return;
    const certificates = certificateCount(content);
    if (certificates === 0) {
      this.options.onInvalid?.(`${this.file} holds no PEM CA certificate`);
      return;
    }
    this.previous = this.current;
    this.previousUntilMs = this.now() + PREVIOUS_TRUST_MS;
    this.current = content;
    this.version++;
    this.options.onChange?.(certificates);
  }
}

/** A CA file of `flag`'s (--broker-ca-file, --peer-ca-file), its changes logged. */
export function watchedCaFile(flag: string, file: string, first: Buffer, log: Logger): CaFile {
  return new CaFile(file, first, {
    onChange: (certificates) => log.info(`${flag} changed: trusting its new CA, and the one before it for an hour`, { file, certificates }),
    onInvalid: (reason) => log.warn(`${flag} changed to something that is not a CA certificate: the CA trusted before stays`, { reason }),
  });
}

/**
 * Connections made before what is trusted changed are let go: idle ones closed by their server
 * (keep-alive), and their agents destroyed after this long (longer than any request, the broker's
 * long poll included).
 */
export const RETIRED_AGENT_MS = 5 * 60_000;

/**
 * A client's https agents, made with the CAs it trusts (a fixed CA, or a CaFile's), made again
 * once per change of the file; the superseded ones destroyed RETIRED_AGENT_MS later (or at close()).
 */
export class TrustedAgents<T> {
  private current: T;
  /** The CA file's version `current` was made with. */
  private builtWith = 0;
  private readonly retired = new Set<Agent>();

  constructor(
    private readonly ca: Buffer | CaFile,
    private readonly make: (ca: Buffer | Buffer[]) => T,
    private readonly agentsOf: (made: T) => readonly Agent[],
  ) {
    this.current = this.build();
  }

  get agents(): T {
    return this.current;
  }

  /** The CA file looked at again (now, when `force`); true when new connections trust something new. */
  async refresh(force: boolean): Promise<boolean> {
    if (Buffer.isBuffer(this.ca)) return false;
    await this.ca.refresh(force);
    if (this.ca.version === this.builtWith) return false;
    for (const agent of this.agentsOf(this.current)) {
      this.retired.add(agent);
      setTimeout(() => {
        agent.destroy();
        this.retired.delete(agent);
      }, RETIRED_AGENT_MS).unref();
    }
    this.current = this.build();
    return true;
  }

  close(): void {
    for (const agent of [...this.agentsOf(this.current), ...this.retired]) agent.destroy();
    this.retired.clear();
  }

  private build(): T {
    if (Buffer.isBuffer(this.ca)) return this.make(this.ca);
    this.builtWith = this.ca.version;
    return this.make(this.ca.ca);
  }
}
