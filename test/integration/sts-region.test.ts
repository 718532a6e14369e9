/**
 * Regional STS by default: with no region configured (the manifests set none), podiam asks the
 * metadata service for the node's region at start (with an IMDSv2 token) and signs every
 * AssumeRole for that region; --sts-region and AWS_REGION win over it, and a node whose region
 * cannot be learnt does not start. The STS proxy reads the region from the SigV4 credential scope.
 */
import { freePort } from '../support/net.js';
import { runCli } from '../support/podiam-process.js';
import { World } from '../support/world.js';

const CREDS = '/latest/meta-data/iam/security-credentials/';
const REGION_PATH = '/latest/meta-data/placement/region';
let world: World;

beforeAll(async () => {
  // The node's metadata service says lab-region-1 and, like an instance with HttpTokens=required, answers no GET without a token.
  world = await World.start({ imds: { region: 'lab-region-1', requireV2: true } });
});

afterAll(async () => {
  await world?.stop();
});

async function assumeRoleRegionsFor(role: string, extraArgs: string[], env: NodeJS.ProcessEnv): Promise<{ regions: Array<string | undefined>; logs: Array<Record<string, unknown>> }> {
  const ip = world.nextIp();
  world.pod(role, { ip, role });
  const before = world.sts.calls.length;
  const podiam = await world.podiam(extraArgs, { env });
  // The node requires IMDSv2, so podiam requires it of pods too (--imds-tokens=auto): the pod asks with a token, as every SDK does.
  const token = await podiam.request('/latest/api/token', { fromIp: ip, method: 'PUT', headers: { 'x-aws-ec2-metadata-token-ttl-seconds': '60' } });
  expect(token.status).toBe(200);
  const r = await podiam.request(CREDS + role, { fromIp: ip, headers: { 'x-aws-ec2-metadata-token': token.body } });
  expect(r.status).toBe(200);
  const calls = world.sts.calls.slice(before).filter((c) => c.action === 'AssumeRole' && c.roleArn?.endsWith(`/${role}`));
  expect(calls.length).toBeGreaterThan(0);
  await podiam.stop();
  return { regions: calls.map((c) => c.region), logs: podiam.logLines() };
}

test("no region configured: AssumeRole goes to the node's region, read from placement/region with an IMDSv2 token, and the start-up log names it", async () => {
  world.imds.requests.length = 0;
  const { regions, logs } = await assumeRoleRegionsFor('regional', [], { AWS_REGION: undefined, AWS_DEFAULT_REGION: undefined });
  expect(new Set(regions)).toEqual(new Set(['lab-region-1']));

  const asked = world.imds.requestsTo(REGION_PATH);
  expect(asked).toHaveLength(1);
  expect(asked[0]!.headers['x-aws-ec2-metadata-token']).toEqual(expect.any(String));

  const line = logs.find((l) => l['message'] === 'STS endpoint');
  expect(line).toMatchObject({ region: 'lab-region-1', regionFrom: `${world.imds.url}${REGION_PATH}`, endpoint: world.sts.url });
});

test('--sts-region, else AWS_REGION, else AWS_DEFAULT_REGION: the metadata service is not asked', async () => {
  world.imds.requests.length = 0;
  expect((await assumeRoleRegionsFor('by-flag', ['--sts-region=eu-west-1'], { AWS_REGION: 'us-west-2' })).regions).toEqual(['eu-west-1']);
  const byEnv = await assumeRoleRegionsFor('by-env', [], { AWS_REGION: 'us-west-2', AWS_DEFAULT_REGION: 'ap-south-1' });
  expect(byEnv.regions).toEqual(['us-west-2']);
  expect(byEnv.logs.find((l) => l['message'] === 'STS endpoint')).toMatchObject({ region: 'us-west-2', regionFrom: 'AWS_REGION' });
  expect((await assumeRoleRegionsFor('by-default-env', [], { AWS_REGION: undefined, AWS_DEFAULT_REGION: 'ap-south-1' })).regions).toEqual(['ap-south-1']);
  expect(world.imds.requestsTo(REGION_PATH)).toHaveLength(0);
});

test('no region configured and no metadata service answering: podiam does not start, and says to set --sts-region', async () => {
  const r = await runCli(
    [`--app-port=${await freePort()}`, '--host-ip=127.0.0.1', '--metadata-addr=127.0.0.1:9', '--metadata-timeout=200ms', `--api-server=${world.kube.url}`, '--insecure', '--node=node-1', '--log-format=json'],
    { PATH: process.env.PATH, AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing', AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null' },
    30_000,
  );
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/--sts-region: no region is set \(--sts-region, AWS_REGION, AWS_DEFAULT_REGION\) and the node's region could not be read from http:\/\/127\.0\.0\.1:9\/latest\/meta-data\/placement\/region: .*; set one, e\.g\. --sts-region=eu-west-1/);
});
