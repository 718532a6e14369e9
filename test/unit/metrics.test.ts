import { createMetrics } from '../../src/metrics.js';

/** One sample's value from the exposition text, or undefined when the series is not there. */
async function sample(text: Promise<string>, name: string): Promise<string | undefined> {
  return new RegExp(`^${name} (\\S+)$`, 'm').exec(await text)?.[1];
}

describe('the gauges read at scrape time for alerting', () => {
  it('podiam_credentials_min_remaining_seconds: whole seconds left, NaN when nothing is served', async () => {
    let remainingMs: number | undefined;
    const metrics = createMetrics({ defaultMetrics: false, credentialsMinRemainingMs: () => remainingMs });
    expect(await sample(metrics.registry.metrics(), 'podiam_credentials_min_remaining_seconds')).toBe('Nan');
    remainingMs = 1_234_567;
    expect(await sample(metrics.registry.metrics(), 'podiam_credentials_min_remaining_seconds')).toBe('1235');
    remainingMs = 240_000;
    expect(await sample(metrics.registry.metrics(), 'podiam_credentials_min_remaining_seconds')).toBe('240');
  });

  it('podiam_ready follows what /readyz answers, at each scrape', async () => {
    let ready = false;
    const metrics = createMetrics({ defaultMetrics: false, ready: () => ready });
    expect(await sample(metrics.registry.metrics(), 'podiam_ready')).toBe('0');
    ready = true;
    expect(await sample(metrics.registry.metrics(), 'podiam_ready')).toBe('1');
    ready = false;
    expect(await sample(metrics.registry.metrics(), 'podiam_ready')).toBe('0');
  });
});
