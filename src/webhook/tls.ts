/**
 * The serving certificate, from files (a kubernetes.io/tls Secret mounted as a volume: tls.crt
 * and tls.key, as cert-manager writes them). The files are re-read every --tls-reload-interval;
 * a new, valid pair replaces the server's context in place (https.Server#setSecureContext), so
 * a rotated certificate is served without a restart and without dropping connections. A pair
 * that does not load (half-written, key not matching) is refused and the one in use stays.
 * The kubelet swaps a Secret volume's files atomically (the ..data symlink), typically within a
 * minute of the Secret changing.
 */
import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { readFile } from 'node:fs/promises';
import type { Server } from 'node:https';
import type { Logger } from '../log.js';
import type { WebhookMetrics } from './metrics.js';

export interface CertificatePair {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly notAfter: Date;
  readonly subject: string;
}

/** Reads and checks a pair: both parse, and the key belongs to the certificate. Throws why not. */
export async function loadCertificatePair(certFile: string, keyFile: string): Promise<CertificatePair> {
  const [cert, key] = await Promise.all([readFile(certFile), readFile(keyFile)]);
  // Throws on an unparsable certificate or key, and on a key that does not match the certificate.
  createSecureContext({ cert, key });
  const leaf = new X509Certificate(cert);
  return { cert, key, notAfter: new Date(leaf.validTo), subject: leaf.subject.replace(/\n/g, ', ') };
}

export class CertificateReloader {
  private timer: NodeJS.Timeout | undefined;
  private lastFailure: string | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private current: CertificatePair,
    private readonly options: { certFile: string; keyFile: string; intervalMs: number; server: Server; log: Logger; metrics: Pick<WebhookMetrics, 'certificateReloads' | 'certificateExpiry'> },
  ) {
    options.metrics.certificateExpiry.set(current.notAfter.getTime() / 1000);
  }

  start(): void {
    this.timer = setInterval(() => void this.check(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** One look at the files; resolves when done (tests call it directly). Never throws. */
  check(): Promise<void> {
    this.running ??= this.reload().finally(() => (this.running = undefined));
    return this.running;
  }

  private async reload(): Promise<void> {
    const { certFile, keyFile, server, log, metrics } = this.options;
    let pair: CertificatePair;
    try {
      pair = await loadCertificatePair(certFile, keyFile);
    } catch (err) {
      const why = (err as Error).message;
      // Once per distinct failure: a broken file must not flood the log every interval.
      if (this.lastFailure !== why) {
        this.lastFailure = why;
        metrics.certificateReloads.inc({ outcome: 'failure' });
        log.warn('serving certificate files do not load; keeping the certificate in use', { certFile, keyFile, error: why, notAfter: this.current.notAfter.toISOString() });
      }
      return;
    }
    this.lastFailure = undefined;
    if (pair.cert.equals(this.current.cert) && pair.key.equals(this.current.key)) return;
    server.setSecureContext({ cert: pair.cert, key: pair.key });
    this.current = pair;
    metrics.certificateReloads.inc({ outcome: 'success' });
    metrics.certificateExpiry.set(pair.notAfter.getTime() / 1000);
    log.info('serving certificate reloaded', { subject: pair.subject, notAfter: pair.notAfter.toISOString() });
  }
}
