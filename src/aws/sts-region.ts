/**
 * Which region's STS podiam calls. --sts-region, else AWS_REGION / AWS_DEFAULT_REGION (config.ts),
 * else the node's own region, read once at start from the metadata service
 * (`/latest/meta-data/placement/region`, with an IMDSv2 token when the service gives one), so a
 * DaemonSet with no region set calls its own region's STS and not us-east-1's.
 * The endpoint is always the region's own (`sts.<region>.amazonaws.com`): sts.ts sets the SDK's
 * useGlobalEndpoint to false. https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_region-endpoints.html
 */
import { ConfigError } from '../errors.js';

export const REGION_PATH = '/latest/meta-data/placement/region';

/** A region's spelling (us-east-1, eu-central-2, us-gov-west-1, cn-north-1): it becomes part of a host name. */
export function isRegionName(value: string): boolean {
  return /^[a-z]{2,}(?:-[a-z]+)+-\d{1,2}$/.test(value);
}

export interface StsRegion {
  readonly region: string;
  /** --sts-region, AWS_REGION, AWS_DEFAULT_REGION or the metadata service's placement/region. */
  readonly from: string;
}

export interface RegionSourceOptions {
  readonly configured: string | undefined;
  readonly configuredFrom: string | undefined;
  /** A metadata GET (Passthrough.fetch: IMDSv2 token first, v1 otherwise). */
  readonly fetch: (path: string) => Promise<string>;
  /** Where the metadata service is, for the error. */
  readonly metadataTarget: string;
  /** Attempts at the metadata service before giving up (default 3), `retryDelayMs` apart. */
  readonly attempts?: number;
  readonly retryDelayMs?: number;
}

/**
 * The region, or a ConfigError naming --sts-region when none is configured and the metadata
 * service does not say (podiam then does not start: a silent us-east-1 would send every
 * AssumeRole across the world, or fail where us-east-1 is not enabled).
 */
export async function resolveStsRegion(options: RegionSourceOptions): Promise<StsRegion> {
  if (options.configured !== undefined) return { region: options.configured, from: options.configuredFrom ?? '--sts-region' };
  const attempts = options.attempts ?? 3;
  let why = '';
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      const region = (await options.fetch(REGION_PATH)).trim();
      if (isRegionName(region)) return { region, from: `${options.metadataTarget}${REGION_PATH}` };
      why = `it answered ${JSON.stringify(region.slice(0, 64))}, not a region name`;
      break;
    } catch (err) {
      why = (err as Error).message;
    }
    if (attempt < attempts) await new Promise((resolve) => setTimeout(resolve, options.retryDelayMs ?? 500));
  }
  throw new ConfigError(
    '--sts-region',
    `no region is set (--sts-region, AWS_REGION, AWS_DEFAULT_REGION) and the node's region could not be read from ${options.metadataTarget}${REGION_PATH}: ${why}; set one, e.g. --sts-region=eu-west-1`,
  );
}
