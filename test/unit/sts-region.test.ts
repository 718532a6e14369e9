/** aws/sts-region.ts: configured region first, else the metadata service's, else a ConfigError naming --sts-region; and sts.ts's endpoint is the region's own. */
import { createStsAssumer } from '../../src/aws/sts.js';
import { isRegionName, resolveStsRegion } from '../../src/aws/sts-region.js';

const TARGET = 'http://169.254.169.254:80';

test('a configured region is used as is; the metadata service is not asked', async () => {
  const asked: string[] = [];
  const got = await resolveStsRegion({ configured: 'eu-west-1', configuredFrom: 'AWS_REGION', fetch: async (p) => (asked.push(p), 'us-west-2'), metadataTarget: TARGET });
  expect(got).toEqual({ region: 'eu-west-1', from: 'AWS_REGION' });
  expect(asked).toEqual([]);
});

test("no region configured: placement/region from the metadata service, retried on failure", async () => {
  let calls = 0;
  const fetch = async (p: string): Promise<string> => {
    expect(p).toBe('/latest/meta-data/placement/region');
    if (++calls < 3) throw new Error('ECONNREFUSED');
    return 'ap-southeast-2\n';
  };
  expect(await resolveStsRegion({ configured: undefined, configuredFrom: undefined, fetch, metadataTarget: TARGET, retryDelayMs: 1 })).toEqual({ region: 'ap-southeast-2', from: `${TARGET}/latest/meta-data/placement/region` });
  expect(calls).toBe(3);
});

test('no region anywhere: a ConfigError that names --sts-region and why', async () => {
  const down = resolveStsRegion({ configured: undefined, configuredFrom: undefined, fetch: () => Promise.reject(new Error('GET /latest/meta-data/placement/region answered 404')), metadataTarget: TARGET, retryDelayMs: 1 });
  await expect(down).rejects.toMatchObject({ code: 'ConfigError' });
  await expect(down).rejects.toThrow(/--sts-region: no region is set .* could not be read from http:\/\/169\.254\.169\.254:80\/latest\/meta-data\/placement\/region: GET \/latest\/meta-data\/placement\/region answered 404; set one, e\.g\. --sts-region=eu-west-1/);
  // An answer that is not a region (a captive portal, an HTML error page) never becomes a host name.
  await expect(resolveStsRegion({ configured: undefined, configuredFrom: undefined, fetch: async () => 'evil.example/x', metadataTarget: TARGET })).rejects.toThrow(/answered "evil.example\/x", not a region name/);
});

test('region names', () => {
  for (const ok of ['us-east-1', 'eu-central-2', 'us-gov-west-1', 'cn-north-1', 'ap-southeast-5', 'lab-region-1', 'eusc-de-east-1']) expect(isRegionName(ok)).toBe(true);
  for (const bad of ['', 'us-east', 'US-EAST-1', 'us-east-1.evil.example', 'us east 1', 'us-east-1/', '-1']) expect(isRegionName(bad)).toBe(false);
});

test("STS's regional endpoint, as the SDK resolves it: us-east-1 included (never the global sts.amazonaws.com)", async () => {
  for (const region of ['us-east-1', 'eu-west-1', 'lab-region-1']) {
    const sts = createStsAssumer({ region, sessionTtlSeconds: 3600, attemptTimeoutMs: 1000 });
    try {
      expect(await sts.endpoint()).toBe(`https://sts.${region}.amazonaws.com/`);
      expect(await sts.endpoint('http://127.0.0.1:4566')).toBe('http://127.0.0.1:4566');
    } finally {
      sts.destroy();
    }
  }
});
