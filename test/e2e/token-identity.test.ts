/**
 * Token identity end to end in the node lab (test/support/lab.ts): podiam with --token-identity
 * puts 169.254.170.23 (and fd00:ec2::23) on the node namespace's lo and serves
 * /v1/credentials there; real clients (botocore, the AWS SDK for JavaScript v3) in pod
 * namespaces use the container credentials provider with AWS_CONTAINER_CREDENTIALS_FULL_URI and
 * AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, exactly as EKS Pod Identity sets them. No DNAT is
 * involved on this path. Needs root.
 */
import path from 'node:path';
import type { LabPodiam } from '../support/lab.js';
import { ACCOUNT, Lab, pythonWithBotocore } from '../support/lab.js';
import { ROOT } from '../support/podiam-process.js';

const TOKEN_URI = 'http://169.254.170.23/v1/credentials';

let lab: Lab;
let podiam: LabPodiam;

beforeAll(async () => {
  lab = await Lab.create({
    pods: [
      { name: 'tok-a', role: 'role-tok-a' },
      { name: 'tok-b', role: 'role-tok-b', namespace: 'team-b' },
      { name: 'tok-gone', role: 'role-tok-gone' },
    ],
    hostNetworkPods: [{ name: 'host-agent', role: 'role-host-agent', namespace: 'kube-system' }],
  });
  podiam = await lab.startPodiam({ extraArgs: ['--log-format=json', '--token-identity', '--token-addr=169.254.170.23:80,[fd00:ec2::23]:80', '--token-interface=lo'] });
  await podiam.waitFor(/token identity listening/);
}, 90_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

function arn(role: string, session: string): string {
  return `arn:aws:sts::${ACCOUNT}:assumed-role/${role}/${session}`;
}

/** A client's environment in a pod with token identity: the two variables EKS sets, nothing else of AWS. */
function tokenEnv(tokenFile: string): NodeJS.ProcessEnv {
  return { ...lab.cleanClientEnv(), AWS_CONTAINER_CREDENTIALS_FULL_URI: TOKEN_URI, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: tokenFile };
}

async function botocore(ns: string, tokenFile: string): Promise<Record<string, string>> {
  const r = await lab.exec(ns, [pythonWithBotocore()!, path.join(ROOT, 'scripts/lab/whoami-botocore.py'), lab.motoUrl], { env: tokenEnv(tokenFile), timeoutMs: 30_000 });
  // botocore raises from get_credentials() when the provider is refused: a traceback, no JSON line.
  if (r.stdout.trim() === '') return { error: r.stderr.trim().split('\n').pop() ?? `exit ${r.code}` };
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, string>;
}

async function sdk(ns: string, tokenFile: string): Promise<Record<string, string>> {
  const r = await lab.exec(ns, [process.execPath, path.join(ROOT, 'dist/scripts/lab/whoami-sdk.js'), lab.motoUrl], { env: tokenEnv(tokenFile), timeoutMs: 30_000 });
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Record<string, string>;
}

test('podiam puts the token addresses on the node namespace\'s lo (--token-interface=lo)', async () => {
  const link = await lab.exec(lab.nodeNs, ['ip', 'addr', 'show', 'dev', 'lo']);
  expect(link.stdout).toContain('inet 169.254.170.23/32');
  expect(link.stdout).toContain('inet6 fd00:ec2::23/128');
});

test('botocore in a pod: the container provider with its token gets its role', async () => {
  const who = await botocore(lab.pod('tok-a').netns, await lab.podTokenFile('tok-a'));
  expect(who).toMatchObject({ arn: arn('role-tok-a', 'default.tok-a'), method: 'container-role' });
});

test('the AWS SDK for JavaScript v3 default chain in a pod gets its role', async () => {
  const who = await sdk(lab.pod('tok-b').netns, await lab.podTokenFile('tok-b', { namespace: 'team-b' }));
  expect(who.arn).toBe(arn('role-tok-b', 'team-b.tok-b'));
});

test("a pod holding another pod's token is that other pod: the IP is not the identity", async () => {
  const who = await botocore(lab.pod('tok-a').netns, await lab.podTokenFile('tok-b', { namespace: 'team-b' }));
  expect(who.arn).toBe(arn('role-tok-b', 'team-b.tok-b'));
});

test("a hostNetwork pod (the node's own namespace) with its pod's token gets that pod's role", async () => {
  const file = await lab.podTokenFile('host-agent', { namespace: 'kube-system' });
  expect((await botocore(lab.nodeNs, file)).arn).toBe(arn('role-host-agent', 'kube-system.host-agent'));
  expect((await sdk(lab.nodeNs, file)).arn).toBe(arn('role-host-agent', 'kube-system.host-agent'));
  // And over IPv6, at [fd00:ec2::23].
  const token = (await lab.exec(lab.nodeNs, ['cat', file])).stdout;
  const v6 = await lab.curl(lab.nodeNs, 'http://[fd00:ec2::23]/v1/credentials', { headers: { Authorization: token } });
  expect(v6.status).toBe(200);
  expect(await lab.callerArn(JSON.parse(v6.body) as { AccessKeyId: string; SecretAccessKey: string; Token: string })).toBe(arn('role-host-agent', 'kube-system.host-agent'));
});

test("a deleted pod's token gets nothing", async () => {
  const ns = lab.pod('tok-gone').netns;
  const file = await lab.podTokenFile('tok-gone');
  expect((await botocore(ns, file)).arn).toBe(arn('role-tok-gone', 'default.tok-gone'));
  const del = await lab.exec(lab.nodeNs, ['curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'DELETE', `${lab.kubeUrl}/api/v1/namespaces/default/pods/tok-gone`]);
  expect(del.stdout).toBe('200');
  const token = (await lab.exec(ns, ['cat', file])).stdout;
  for (let i = 0; i < 100 && (await lab.curl(ns, TOKEN_URI, { headers: { Authorization: token } })).status === 200; i++) await new Promise((r) => setTimeout(r, 50));
  const answer = await lab.curl(ns, TOKEN_URI, { headers: { Authorization: token } });
  expect(answer.status).toBe(403);
  expect(JSON.parse(answer.body)).toMatchObject({ code: 'PodNotOnNode' });
  const who = await botocore(ns, file);
  expect(who.arn).toBeUndefined();
  expect(who.error).toMatch(/CredentialRetrievalError|403|PodNotOnNode/);
});
