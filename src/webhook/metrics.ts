/** The webhook's metrics, on its own prom-client registry (it is a process of its own). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type WebhookMetrics = ReturnType<typeof createWebhookMetrics>;

export function createWebhookMetrics(options: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'podiam_webhook_' });
  const r = [registry];
  return {
    registry,
    admissions: new Counter({
      name: 'podiam_webhook_admissions_total',
      help: 'AdmissionReview requests answered, by result (mutated, skipped, error) and reason',
      labelNames: ['result', 'reason'] as const,
      registers: r,
    }),
    admissionSeconds: new Histogram({
      name: 'podiam_webhook_admission_duration_seconds',
      help: 'Time to answer one AdmissionReview',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: r,
    }),
    certificateReloads: new Counter({
      name: 'podiam_webhook_certificate_reloads_total',
      help: 'Serving certificate (re)loads from the files, by outcome (success, failure)',
      labelNames: ['outcome'] as const,
      registers: r,
    }),
    certificateExpiry: new Gauge({
      name: 'podiam_webhook_certificate_expiry_timestamp_seconds',
      help: 'notAfter of the serving certificate in use, in Unix seconds',
      registers: r,
    }),
  };
}
