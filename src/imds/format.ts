/** EC2's exact wire formats for credentials (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-categories.html). */
import { createHash } from 'node:crypto';
import type { AwsCredentials } from '../aws/sts.js';

/** EC2 timestamps: second precision, UTC, `Z` (botocore parses `%Y-%m-%dT%H:%M:%SZ`). */
export function ec2Time(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

/** The security-credentials/<role> body, key order as EC2 sends it. Rendered once per credentials. */
export function renderCredentials(creds: AwsCredentials, issuedMs: number): Buffer {
  return Buffer.from(
    JSON.stringify(
      {
        Code: 'Success',
        LastUpdated: ec2Time(issuedMs),
        Type: 'AWS-HMAC',
        AccessKeyId: creds.accessKeyId,
        SecretAccessKey: creds.secretAccessKey,
        Token: creds.sessionToken,
        Expiration: ec2Time(creds.expiration.getTime()),
      },
      null,
      2,
    ),
  );
}

/**
 * iam/info for a pod: its own role, never the node's instance profile (kube2iam leaks it).
 * The pod has no instance profile, so the ARN names its role in instance-profile form and the
 * id is a stable digest of it, shaped like EC2's (AIPA + 17 characters).
 */
export function renderIamInfo(roleArn: string, lastUpdatedMs: number): Buffer {
  const profileArn = roleArn.replace(/:role\/(?:.*\/)?/, ':instance-profile/');
  const id = 'AIPA' + createHash('sha256').update(roleArn).digest('base64').replace(/[^A-Za-z0-9]/g, '').toUpperCase().slice(0, 17);
  return Buffer.from(JSON.stringify({ Code: 'Success', LastUpdated: ec2Time(lastUpdatedMs), InstanceProfileArn: profileArn, InstanceProfileId: id }, null, 2));
}
