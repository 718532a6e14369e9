/**
 * Interception end to end, in network namespaces (test/support/lab.ts): podiam runs with
 * --iptables in a simulated node, pods on cali* veths ask 169.254.169.254 exactly as they would on
 * EC2, and the kernel's DNAT rule brings them to podiam. Clients are the real ones: curl, the AWS
 * CLI v2, botocore and the AWS SDK for JavaScript v3, each with no credentials configured.
 *
 * Needs root (it fails, with the reason, when not root).
 */
import { NODE_CREDENTIAL_STRINGS } from '../support/imds-server.js';
import type { LabPodiam } from '../support/lab.js';
import { ACCOUNT, APP_PORT, Lab, METADATA_IP, NODE_IP } from '../support/lab.js';

const IMDS = `http://${METADATA_IP}`;
const CREDS = `${IMDS}/latest/meta-data/iam/security-credentials/`;

interface Ec2Creds {
  Code: string;
  Type: string;
  AccessKeyId: string;
  SecretAccessKey: string;
  Token: string;
  Expiration: string;
}

let lab: Lab;
let podiam: LabPodiam;

beforeAll(async () => {
  lab = await Lab.create({
    pods: [
      { name: 'app-a', role: 'role-a' },
      { name: 'app-b', role: 'role-b', namespace: 'team-b' },
      { name: 'plain' },
    ],
  });
  podiam = await lab.startPodiam({ extraArgs: ['--log-format=json'] });
}, 60_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

function arn(role: string, session: string): string {
  return `arn:aws:sts::${ACCOUNT}:assumed-role/${role}/${session}`;
}

function json<T>(text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`not JSON: ${text}`);
  }
}

test('podiam installs the documented rule: a jump first in PREROUTING, a DNAT for cali+ in PODIAM', async () => {
  const nat = await lab.natTable();
  const preRouting = nat.split('\n').filter((l) => l.startsWith('-A PREROUTING'));
  expect(preRouting[0]).toBe(
    `-A PREROUTING -d ${METADATA_IP}/32 -p tcp -m tcp --dport 80 -m comment --comment "podiam: pod metadata requests" -j PODIAM`,
  );
  expect(nat.split('\n').filter((l) => l.startsWith('-A PODIAM'))).toEqual([
    `-A PODIAM -d ${METADATA_IP}/32 -i cali+ -p tcp -m tcp --dport 80 -m comment --comment "podiam: to podiam" -j DNAT --to-destination ${NODE_IP}:${APP_PORT}`,
  ]);
});

test("curl, IMDSv1: a pod's role listing and credentials are its own role's, real STS credentials", async () => {
  const ns = lab.pod('app-a').netns;
  const list = await lab.curl(ns, CREDS);
  expect(list).toEqual({ status: 200, body: 'role-a' });
  const r = await lab.curl(ns, CREDS + 'role-a');
  expect(r.status).toBe(200);
  const creds = json<Ec2Creds>(r.body);
  expect(creds.Code).toBe('Success');
  expect(creds.Type).toBe('AWS-HMAC');
  for (const s of NODE_CREDENTIAL_STRINGS) expect(r.body).not.toContain(s);
  expect(await lab.callerArn(creds)).toBe(arn('role-a', 'default.app-a'));
});

test('curl, IMDSv2: token PUT (forwarded to the metadata service), then GETs with the token', async () => {
  const ns = lab.pod('app-a').netns;
  const token = await lab.curl(ns, `${IMDS}/latest/api/token`, { method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': '300' } });
  expect(token.status).toBe(200);
  expect(token.body.length).toBeGreaterThan(10);
  const headers = { 'X-aws-ec2-metadata-token': token.body };
  expect(await lab.curl(ns, CREDS, { headers })).toEqual({ status: 200, body: 'role-a' });
  const r = await lab.curl(ns, CREDS + 'role-a', { headers });
  expect(r.status).toBe(200);
  const creds = json<Ec2Creds>(r.body);
  expect(await lab.callerArn(creds)).toBe(arn('role-a', 'default.app-a'));
  // Other metadata paths reach the node's metadata service through podiam, token and all.
  expect(await lab.curl(ns, `${IMDS}/latest/meta-data/instance-id`, { headers })).toEqual({ status: 200, body: 'i-0123456789abcdef0' });
  expect((await lab.curl(ns, `${IMDS}/latest/meta-data/instance-id`, { headers: { 'X-aws-ec2-metadata-token': 'not-a-token' } })).status).toBe(401);
  // The pod's token is podiam's, not the metadata service's: where podiam does not intercept
  // (here, from the outsider's interface), it opens nothing, the node's credentials least of all.
  const direct = await lab.curl(lab.outsider.netns, `${IMDS}/latest/meta-data/iam/security-credentials/node-role`, { headers });
  expect(direct.status).toBe(401);
  for (const s of NODE_CREDENTIAL_STRINGS) expect(direct.body).not.toContain(s);
});

test('the AWS CLI v2 with no credentials configured gets the annotated role over IMDS', async () => {
  const env = lab.cleanClientEnv();
  expect(Object.keys(env).filter((k) => k.startsWith('AWS_'))).toEqual([]);
  const r = await lab.awsCli(lab.pod('app-a').netns, ['sts', 'get-caller-identity', '--endpoint-url', lab.motoUrl]);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  expect(json<{ Arn: string }>(r.stdout).Arn).toBe(arn('role-a', 'default.app-a'));
}, 30_000);

test("botocore's default chain gets the pod's role (method iam-role), in a second pod with another role", async () => {
  const r = await lab.botocoreWhoami(lab.pod('app-b').netns);
  expect(r.code).toBe(0);
  expect(json<{ arn: string; method: string }>(r.stdout)).toMatchObject({ arn: arn('role-b', 'team-b.app-b'), method: 'iam-role' });
}, 30_000);

test("the AWS SDK for JavaScript v3 default chain gets each pod's own role", async () => {
  const [a, b] = await Promise.all([lab.sdkWhoami(lab.pod('app-a').netns), lab.sdkWhoami(lab.pod('app-b').netns)]);
  expect(json<{ arn: string }>(a.stdout).arn).toBe(arn('role-a', 'default.app-a'));
  expect(json<{ arn: string }>(b.stdout).arn).toBe(arn('role-b', 'team-b.app-b'));
  expect(a.code).toBe(0);
  expect(b.code).toBe(0);
}, 30_000);

test("a second pod gets its own role and never the first pod's", async () => {
  const a = lab.pod('app-a').netns;
  const b = lab.pod('app-b').netns;
  expect(await lab.curl(b, CREDS)).toEqual({ status: 200, body: 'role-b' });
  const aCreds = json<Ec2Creds>((await lab.curl(a, CREDS + 'role-a')).body);
  const bCreds = json<Ec2Creds>((await lab.curl(b, CREDS + 'role-b')).body);
  expect(bCreds.AccessKeyId).not.toBe(aCreds.AccessKeyId);
  const steal = await lab.curl(b, CREDS + 'role-a');
  expect(steal.status).toBe(403);
  expect(steal.body).toContain('RoleMismatch');
  expect(steal.body).not.toContain(aCreds.AccessKeyId);
  expect(steal.body).not.toContain('SecretAccessKey');
});

test("the unannotated pod gets 404 and no client finds credentials — never the node's role", async () => {
  const ns = lab.pod('plain').netns;
  const list = await lab.curl(ns, CREDS);
  expect(list.status).toBe(404);
  expect(list.body).toContain('NoRoleForPod');
  const node = await lab.curl(ns, CREDS + 'node-role');
  expect(node.status).toBe(404);
  for (const s of NODE_CREDENTIAL_STRINGS) expect(node.body).not.toContain(s);

  const [cli, boto, sdk] = await Promise.all([
    lab.awsCli(ns, ['sts', 'get-caller-identity', '--endpoint-url', lab.motoUrl]),
    lab.botocoreWhoami(ns),
    lab.sdkWhoami(ns),
  ]);
  expect(cli.code).not.toBe(0);
  expect(cli.stderr).toContain('Unable to locate credentials');
  expect(boto.code).toBe(1);
  expect(json<{ error: string }>(boto.stdout).error).toBe('NoCredentials');
  expect(sdk.code).toBe(1);
  expect(json<{ error: string }>(sdk.stdout).error).toBe('CredentialsProviderError');
  for (const out of [cli.stdout, boto.stdout, sdk.stdout]) {
    expect(out).not.toContain('node-role');
    expect(out).not.toContain('assumed-role');
  }
}, 30_000);

test('traffic from a non-matching interface is not intercepted: the outsider reaches the metadata service itself', async () => {
  const roleListings = (): Promise<number> => podiam.metric('podiam_http_requests_total', { route: 'role-name' });
  const before = await roleListings();
  const list = await lab.curl(lab.outsider.netns, CREDS);
  expect(list).toEqual({ status: 200, body: 'node-role' });
  // The answer came from the metadata service directly: podiam saw no request.
  expect(await roleListings()).toBe(before);
  // While the same request from a pod is podiam's.
  await lab.curl(lab.pod('app-a').netns, CREDS);
  expect(await roleListings()).toBe(before + 1);
});
