import type { AwsCredentials } from '../../src/aws/sts.js';
import { ec2Time, renderCredentials, renderIamInfo } from '../../src/imds/format.js';
import { baseArnFromIamInfo } from '../../src/imds/passthrough.js';

const EC2_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

describe('ec2Time', () => {
  it('has second precision and a Z', () => {
    expect(ec2Time(Date.UTC(2024, 4, 6, 7, 8, 9, 999))).toBe('2024-05-06T07:08:09Z');
    expect(ec2Time(Date.UTC(2024, 4, 6, 7, 8, 9, 0))).toBe('2024-05-06T07:08:09Z');
    expect(ec2Time(Date.UTC(2030, 11, 31, 23, 59, 59, 500))).toMatch(EC2_TIME);
  });

  it('truncates, never rounds up', () => {
    expect(ec2Time(Date.UTC(2024, 0, 1, 0, 0, 59, 999))).toBe('2024-01-01T00:00:59Z');
  });
});

describe('renderCredentials', () => {
  const creds: AwsCredentials = {
    accessKeyId: 'ASIAEXAMPLE000000001',
    secretAccessKey: 'secret/with+chars=',
    sessionToken: 'token"with\\quotes',
    expiration: new Date(Date.UTC(2024, 0, 1, 1, 0, 0, 123)),
  };
  const body = renderCredentials(creds, Date.UTC(2024, 0, 1, 0, 0, 0, 456));
  const json = JSON.parse(body.toString('utf8')) as Record<string, string>;

  it('is a Buffer of JSON with exactly the EC2 keys, in EC2 order', () => {
    expect(Buffer.isBuffer(body)).toBe(true);
    expect(Object.keys(json)).toEqual(['Code', 'LastUpdated', 'Type', 'AccessKeyId', 'SecretAccessKey', 'Token', 'Expiration']);
  });

  it('has the values EC2 sends', () => {
    expect(json).toEqual({
      Code: 'Success',
      LastUpdated: '2024-01-01T00:00:00Z',
      Type: 'AWS-HMAC',
      AccessKeyId: 'ASIAEXAMPLE000000001',
      SecretAccessKey: 'secret/with+chars=',
      Token: 'token"with\\quotes',
      Expiration: '2024-01-01T01:00:00Z',
    });
    expect(json.LastUpdated).toMatch(EC2_TIME);
    expect(json.Expiration).toMatch(EC2_TIME);
  });
});

describe('renderIamInfo', () => {
  const last = Date.UTC(2024, 0, 1, 12, 0, 0);

  it('derives InstanceProfileArn from the role, and has the EC2 keys', () => {
    const info = JSON.parse(renderIamInfo('arn:aws:iam::123456789012:role/app-a', last).toString()) as Record<string, string>;
    expect(Object.keys(info)).toEqual(['Code', 'LastUpdated', 'InstanceProfileArn', 'InstanceProfileId']);
    expect(info.Code).toBe('Success');
    expect(info.LastUpdated).toBe('2024-01-01T12:00:00Z');
    expect(info.InstanceProfileArn).toBe('arn:aws:iam::123456789012:instance-profile/app-a');
    expect(info.InstanceProfileId).toMatch(/^AIPA[A-Z0-9]{17}$/);
  });

  it('drops the role path and keeps the partition', () => {
    const info = JSON.parse(renderIamInfo('arn:aws-cn:iam::123456789012:role/team/sub/app-a', last).toString()) as Record<string, string>;
    expect(info.InstanceProfileArn).toBe('arn:aws-cn:iam::123456789012:instance-profile/app-a');
  });

  it('the id is stable per role and differs between roles', () => {
    const id = (arn: string) => (JSON.parse(renderIamInfo(arn, last).toString()) as { InstanceProfileId: string }).InstanceProfileId;
    expect(id('arn:aws:iam::123456789012:role/a')).toBe(id('arn:aws:iam::123456789012:role/a'));
    expect(id('arn:aws:iam::123456789012:role/a')).not.toBe(id('arn:aws:iam::123456789012:role/b'));
  });

  it('never contains the node instance profile', () => {
    const text = renderIamInfo('arn:aws:iam::123456789012:role/app-a', last).toString();
    expect(text).not.toContain('node');
    expect(text).not.toContain(':role/');
    expect(text.match(/instance-profile\//g)).toHaveLength(1);
    expect(text).toContain('instance-profile/app-a"');
  });
});

describe('baseArnFromIamInfo', () => {
  const info = (arn: unknown) => JSON.stringify({ Code: 'Success', LastUpdated: '2024-01-01T00:00:00Z', InstanceProfileArn: arn, InstanceProfileId: 'AIPAEXAMPLE' });

  it('turns the instance-profile ARN into the role prefix, dropping the path', () => {
    expect(baseArnFromIamInfo(info('arn:aws:iam::123456789012:instance-profile/path/to/node-profile'))).toBe('arn:aws:iam::123456789012:role/');
    expect(baseArnFromIamInfo(info('arn:aws:iam::123456789012:instance-profile/node-profile'))).toBe('arn:aws:iam::123456789012:role/');
    expect(baseArnFromIamInfo(info('arn:aws-us-gov:iam::123456789012:instance-profile/p'))).toBe('arn:aws-us-gov:iam::123456789012:role/');
  });

  it.each([
    ['bad JSON', '{not json'],
    ['empty', ''],
    ['null', 'null'],
    ['no ARN', JSON.stringify({ Code: 'Success' })],
    ['ARN not a string', info(42)],
    ['role ARN, not instance profile', info('arn:aws:iam::123456789012:role/x')],
    ['short account', info('arn:aws:iam::1234:instance-profile/p')],
  ])('%s -> undefined', (_what, text) => {
    expect(baseArnFromIamInfo(text)).toBeUndefined();
  });
});
