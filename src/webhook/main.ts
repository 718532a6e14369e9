/** Wiring only: config → certificate → Kubernetes reads → servers → listen; shutdown in reverse. */
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import type { Server } from 'node:http';
import { createObjectReader } from '../kube/object-reader.js';
import type { Logger } from '../log.js';
import { describeWebhookConfig } from './config.js';
import type { WebhookConfig } from './config.js';
import { cachedLookups } from './lookups.js';
import { createWebhookMetrics } from './metrics.js';
import { createAdmissionServer, createHealthServer } from './server.js';
import { CertificateReloader, loadCertificatePair } from './tls.js';

export interface RunningWebhook {
  shutdown(signal: string): Promise<void>;
}

export async function startWebhook(config: WebhookConfig, log: Logger): Promise<RunningWebhook> {
  log.info('podiam webhook starting', describeWebhookConfig(config));
  const metrics = createWebhookMetrics();
  const certificate = await loadCertificatePair(config.tlsCertFile, config.tlsKeyFile).catch((err: Error) => {
    throw new Error(`cannot load the serving certificate (--tls-cert-file, --tls-key-file): ${err.message}`);
  });
  metrics.certificateReloads.inc({ outcome: 'success' });
  const clientCa = config.clientCaFile === undefined ? undefined : await loadClientCa(config.clientCaFile);
  const reader = createObjectReader(config);
  const lookups = cachedLookups(reader, { timeoutMs: config.lookupTimeoutMs, ttlMs: config.cacheTtlMs });
  const options = { tokenAudience: config.tokenAudience, roleKey: config.roleKey, optInKey: config.optInKey, injectAllWithRole: config.injectAllWithRole };

  const admission = createAdmissionServer(certificate, { lookups, options, log, metrics, clientCa });
  const reloader = new CertificateReloader(certificate, { certFile: config.tlsCertFile, keyFile: config.tlsKeyFile, intervalMs: config.tlsReloadMs, server: admission, log, metrics, clientCa });
  let listening = false;
  const health = createHealthServer({ metrics, ready: () => listening });

  await listen(health, config.metricsPort);
  await listen(admission, config.port);
  listening = true;
  reloader.start();
  log.info('podiam webhook listening', { port: config.port, metricsPort: config.metricsPort, certificateSubject: certificate.subject, notAfter: certificate.notAfter.toISOString() });

  return {
    async shutdown(signal) {
      log.info('podiam webhook stopping', { signal });
      // Not ready first, and still answering for --shutdown-delay: the API server keeps calling
      // this replica until the Service's endpoints drop it, and a refused call would admit a
      // pod uninjected (failurePolicy: Ignore). Then in-flight admissions finish and the servers close.
      listening = false;
      await new Promise((resolve) => setTimeout(resolve, config.shutdownDelayMs));
      reloader.stop();
      await close(admission, 10_000);
      await close(health, 1_000);
      log.info('podiam webhook stopped');
    },
  };
}

/** The CA the API server's client certificate must chain to: PEM that Node's TLS accepts. */
async function loadClientCa(file: string): Promise<Buffer> {
  try {
    const ca = await readFile(file);
    createSecureContext({ ca });
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate in it');
    return ca;
  } catch (err) {
    throw new Error(`cannot load --client-ca-file ${file}: ${(err as Error).message}`);
  }
}

async function listen(server: Server, port: number): Promise<void> {
  server.listen(port);
  await once(server, 'listening');
}

function close(server: Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.closeAllConnections();
      resolve();
    }, graceMs);
    timer.unref();
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}
