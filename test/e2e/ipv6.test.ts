/**
 * IPv6 interception end to end (test/support/lab.ts): pods with IPv6 addresses ask the metadata
 * service's IPv6 endpoint [fd00:ec2::254] — off the node, reached by routing, as on EC2 — and
 * ip6tables brings them to podiam on the node's IPv6 address (--host-ip=<v4>,<v6>).
 *
 * Needs root (it fails, with the reason, when not root).
 */
import { NODE_CREDENTIAL_STRINGS } from '../support/imds-server.js';
import type { LabPodiam } from '../support/lab.js';
import { ACCOUNT, APP_PORT, Lab, METADATA_IP6, NODE_IP6 } from '../support/lab.js';

const IMDS6 = `http://[${METADATA_IP6}]`;
const CREDS6 = `${IMDS6}/latest/meta-data/iam/security-credentials/`;

let lab: Lab;
let podiam: LabPodiam;

beforeAll(async () => {
  lab = await Lab.create({
    pods: [
      { name: 'six-a', role: 'role-a' },
      { name: 'six-b', role: 'role-b', namespace: 'team-b' },
    ],
  });
  podiam = await lab.startPodiam({ extraArgs: ['--log-format=json'] });
}, 60_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

test('ip6tables holds the same design: guard first in mangle FORWARD, jump first in nat PREROUTING, DNAT to [node IPv6]:8181', async () => {
  const saved = (await lab.saved('ipv6')).split('\n');
  const forward = saved.filter((l) => l.startsWith('-A FORWARD'));
  expect(forward[0]).toBe(
    `-A FORWARD -d ${METADATA_IP6}/128 -i cali+ -p tcp -m tcp --dport 80 -m comment --comment "podiam: guard, pods never reach the real metadata service" -j DROP`,
  );
  expect(saved.filter((l) => l.startsWith('-A PREROUTING'))[0]).toBe(
    `-A PREROUTING -d ${METADATA_IP6}/128 -p tcp -m tcp --dport 80 -m comment --comment "podiam: pod metadata requests" -j PODIAM`,
  );
  expect(saved.filter((l) => l.startsWith('-A PODIAM'))).toEqual([
    `-A PODIAM -d ${METADATA_IP6}/128 -i cali+ -p tcp -m tcp --dport 80 -m comment --comment "podiam: to podiam" -j DNAT --to-destination [${NODE_IP6}]:${APP_PORT}`,
  ]);
  for (const rule of ['dnat', 'guard']) {
    expect(await podiam.metric('podiam_iptables_rule_present', { family: 'ipv6', rule })).toBe(1);
    expect(await podiam.metric('podiam_iptables_rule_present', { family: 'ipv4', rule })).toBe(1);
  }
  const ready = JSON.parse((await podiam.get('/readyz')).body) as { iptables: unknown };
  expect(ready.iptables).toEqual({ ipv4: { dnat: 'present', guard: 'present' }, ipv6: { dnat: 'present', guard: 'present' } });
});

test("curl -6: a pod gets its own role's credentials at [fd00:ec2::254], IMDSv1 and IMDSv2, never the node's", async () => {
  const ns = lab.pod('six-a').netns;
  expect(await lab.curl(ns, CREDS6)).toEqual({ status: 200, body: 'role-a' });
  const v1 = await lab.curl(ns, `${CREDS6}role-a`);
  expect(v1.status).toBe(200);
  for (const s of NODE_CREDENTIAL_STRINGS) expect(v1.body).not.toContain(s);
  const creds = JSON.parse(v1.body) as { AccessKeyId: string; SecretAccessKey: string; Token: string };
  expect(await lab.callerArn(creds)).toBe(`arn:aws:sts::${ACCOUNT}:assumed-role/role-a/default.six-a`);

  const token = await lab.curl(ns, `${IMDS6}/latest/api/token`, { method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': '300' } });
  expect(token.status).toBe(200);
  const headers = { 'X-aws-ec2-metadata-token': token.body };
  expect(await lab.curl(ns, CREDS6, { headers })).toEqual({ status: 200, body: 'role-a' });
  // Passthrough over IPv6 too: other paths reach the metadata service's IPv6 endpoint through podiam.
  expect(await lab.curl(ns, `${IMDS6}/latest/meta-data/instance-id`, { headers })).toEqual({ status: 200, body: 'i-0123456789abcdef0' });
});

test('botocore with AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6 is assumed-role/<its role>', async () => {
  const r = await lab.botocoreWhoami(lab.pod('six-b').netns, { AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE: 'IPv6' });
  expect(JSON.parse(r.stdout) as unknown).toMatchObject({ arn: `arn:aws:sts::${ACCOUNT}:assumed-role/role-b/team-b.six-b`, method: 'iam-role' });
  expect(r.code).toBe(0);
}, 30_000);

test("another pod asking for that role over IPv6 gets 403 and no credentials", async () => {
  const steal = await lab.curl(lab.pod('six-b').netns, `${CREDS6}role-a`);
  expect(steal.status).toBe(403);
  expect(steal.body).not.toContain('AccessKeyId');
});

test('a non-pod interface is not intercepted over IPv6: the outsider reaches the metadata service itself', async () => {
  const before = await podiam.metric('podiam_http_requests_total', { route: 'role-name' });
  expect(await lab.curl(lab.outsider.netns, CREDS6)).toEqual({ status: 200, body: 'node-role' });
  expect(await podiam.metric('podiam_http_requests_total', { route: 'role-name' })).toBe(before);
});
