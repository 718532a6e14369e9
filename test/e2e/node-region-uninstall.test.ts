/**
 * In the node lab (test/support/lab.ts), as on an EC2 node: podiam with no region configured
 * (the DaemonSet sets none) reads the node's region from the metadata service at
 * 169.254.169.254 and names it at start; and uninstalling leaves nothing behind: with the
 * DaemonSet's flags, `podiam --cleanup` removes the rules and the --token-interface addresses (and a
 * dummy link it created). Needs root.
 */
import type { LabPodiam } from '../support/lab.js';
import { LAB_REGION, Lab } from '../support/lab.js';

// lo: this machine's kernel has no dummy links (a node's pod-id-link0 is one; its deletion is the same `ip` call).
const LINK = 'lo';
const TOKEN_ARGS = ['--token-identity', '--token-addr=169.254.170.23:80,[fd00:ec2::23]:80', `--token-interface=${LINK}`];

let lab: Lab;
let podiam: LabPodiam;

beforeAll(async () => {
  lab = await Lab.create({ pods: [{ name: 'app', role: 'role-app' }] });
  podiam = await lab.startPodiam({ extraArgs: ['--log-format=json', ...TOKEN_ARGS] });
}, 90_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

test("no region configured: podiam takes the node's region from the metadata service and names STS's endpoint for it", async () => {
  const line = await podiam.waitFor(/^\{.*"message":"STS endpoint".*\}$/m, 30_000);
  expect(JSON.parse(line[0])).toMatchObject({ region: LAB_REGION, regionFrom: 'http://169.254.169.254:80/latest/meta-data/placement/region', endpoint: lab.motoUrl });
  // And credentials still flow (moto behind AWS_ENDPOINT_URL_STS, signed for lab-region-1).
  const pod = lab.pods[0]!;
  const r = await lab.curl(pod.netns, 'http://169.254.169.254/latest/meta-data/iam/security-credentials/role-app');
  expect(r.status).toBe(200);
  expect(JSON.parse(r.body)).toMatchObject({ Code: 'Success' });
});

test('uninstall: SIGTERM leaves the token addresses (like the rules); podiam --cleanup with the same flags removes them, and the rules', async () => {
  const show = () => lab.exec(lab.nodeNs, ['ip', 'addr', 'show', 'dev', LINK]);
  const up = await show();
  expect(up.stdout).toContain('inet 169.254.170.23/32');
  expect(up.stdout).toContain('inet6 fd00:ec2::23/128');

  await podiam.stop('SIGTERM');
  expect((await show()).stdout).toContain('inet 169.254.170.23/32');

  const cleanup = await lab.runCleanup({ extraArgs: TOKEN_ARGS });
  expect({ code: cleanup.code, stderr: cleanup.stderr }).toEqual({ code: 0, stderr: "" });
  expect(cleanup.stdout).toContain(`removed: token addresses 169.254.170.23, fd00:ec2::23 from ${LINK}\n`);
  const addrs = await lab.exec(lab.nodeNs, ['ip', 'addr', 'show']);
  expect(addrs.stdout).not.toContain('169.254.170.23');
  expect(addrs.stdout).not.toContain('fd00:ec2::23');
  expect((await lab.iptables(['-t', 'nat', '-S'])).stdout).not.toMatch(/podiam|PODIAM/);

  // Run again: nothing left, still exit 0.
  const again = await lab.runCleanup({ extraArgs: TOKEN_ARGS });
  expect({ code: again.code, stderr: again.stderr }).toEqual({ code: 0, stderr: "" });
});
