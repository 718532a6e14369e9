/**
 * `npm run demo`: builds the node lab (test/support/lab.ts) with three pods, runs podiam with
 * --iptables, and from inside each pod asks 169.254.169.254 with curl (IMDSv1 and IMDSv2) and the
 * AWS CLI, as an application would, and [fd00:ec2::254] over IPv6. Then restarts podiam (the
 * rules stay: a pod is refused, not given the node's role) and uninstalls with --cleanup. Then
 * broker mode on two nodes: `podiam broker` (two replicas, their own AWS key) is the only caller
 * of STS, which refuses the nodes' own role; each node's agent gets only its own pods' roles.
 * Prints what it built, what each pod asked and what it got, checks every answer, and tears
 * everything down. Exit 0 when every check passed.
 *
 *   node dist/scripts/lab/demo.js          (as root; scripts/demo.sh is the entry point)
 */
import { readFileSync } from 'node:fs';
import type { Lab, LabPod, LabPodiam } from '../../test/support/lab.js';
import { AWS_CLI, BASE_ROLE_ARN, Lab as LabClass, METADATA_IP, METADATA_IP6, NODE_IP, NODE_IP6, labPrerequisites } from '../../test/support/lab.js';
import type { LabBroker } from '../../test/support/lab-broker.js';
import { BROKER_ACCESS_KEY_ID, BROKER_KEYS, NODE_KEYS, brokerAgentArgs, brokerAgentEnv, brokerArgs, brokerTls, startBroker } from '../../test/support/lab-broker.js';

const color = process.stdout.isTTY && process.env.NO_COLOR === undefined;
const paint = (code: string) => (s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
const bold = paint('1');
const dim = paint('2');
const green = paint('32');
const red = paint('31');
const cyan = paint('36');

const IMDS = `http://${METADATA_IP}`;
const CREDS = `${IMDS}/latest/meta-data/iam/security-credentials/`;
const started = Date.now();
let passed = 0;
let failed = 0;
/** Set on Ctrl-C: nothing more is printed but the teardown. */
let interrupted = false;

function out(line = ''): void {
  if (!interrupted) process.stdout.write(`${line}\n`);
}
function section(title: string): void {
  out();
  out(bold(title));
}
function command(cmd: string): void {
  out(`  ${cyan('$')} ${cmd}`);
}
function answer(text: string, note?: string): void {
  const lines = text.replace(/\n+$/, '').split('\n');
  lines.forEach((l, i) => out(`    ${l}${i === lines.length - 1 && note ? `  ${dim(note)}` : ''}`));
}
function check(ok: boolean, what: string): void {
  if (ok) passed++;
  else failed++;
  out(`  ${ok ? green('✓') : red('✗')} ${what}`);
}
function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** Credentials JSON with the secret parts shortened: a demo prints no secrets in full. */
function redact(body: string): string {
  try {
    const c = JSON.parse(body) as Record<string, string>;
    for (const k of ['SecretAccessKey', 'Token']) if (typeof c[k] === 'string') c[k] = `${c[k]!.slice(0, 6)}…(${c[k]!.length} chars)`;
    return JSON.stringify(c);
  } catch {
    return body;
  }
}

/** Runs a shell command line inside the pod with a clean environment; returns stdout, stderr, code. */
async function inPod(lab: Lab, ns: string, script: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return lab.exec(ns, ['sh', '-c', script], { env: lab.cleanClientEnv(), timeoutMs: 30_000 });
}

/** `curl -s URL` as shown; the demo also asks curl for the status code, shown as a note. */
async function curlShown(lab: Lab, ns: string, shown: string, headersScript = ''): Promise<{ status: number; body: string }> {
  command(shown);
  const r = await inPod(lab, ns, `${headersScript}${shown} -w '\\n%{http_code}'`);
  const cut = r.stdout.lastIndexOf('\n');
  const status = Number(r.stdout.slice(cut + 1)) || 0;
  const body = r.stdout.slice(0, Math.max(cut, 0));
  answer(status === 0 ? r.stderr.trim() || '(no answer)' : redact(body.trim()), `(HTTP ${status})`);
  return { status, body };
}

async function awsShown(lab: Lab, ns: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const args = `sts get-caller-identity --endpoint-url ${lab.motoUrl} --region us-east-1 --query Arn --output text`;
  command(`aws ${args}`);
  const r = await inPod(lab, ns, `${AWS_CLI} ${args}`);
  answer((r.stdout.trim() || r.stderr.trim()) || '(nothing)', r.code === 0 ? undefined : `(exit ${r.code})`);
  return r;
}

async function askAsPod(lab: Lab, pod: LabPod, otherRole: string | undefined): Promise<void> {
  out();
  out(`  ${bold(`── pod ${pod.namespace}/${pod.name}`)}  ${dim(`${pod.ip}, ${pod.role ? `annotated iam.amazonaws.com/role: ${pod.role}` : 'no role annotation'}`)}`);
  const ns = pod.netns;
  const list = await curlShown(lab, ns, `curl -s ${CREDS}`);
  if (pod.role === undefined) {
    check(list.status === 404 && /NoRoleForPod/.test(list.body), 'IMDSv1: 404 NoRoleForPod — no role to list');
    const node = await curlShown(lab, ns, `curl -s ${CREDS}node-role`);
    check(node.status === 404 && !node.body.includes('AccessKeyId'), "asking for the node's role by name: 404, no credentials");
    const cli = await awsShown(lab, ns);
    check(cli.code !== 0 && /Unable to locate credentials/.test(cli.stderr) && !cli.stdout.includes('assumed-role'), "AWS CLI: no credentials at all — not the node's role");
    return;
  }
  check(list.status === 200 && list.body.trim() === pod.role, `IMDSv1: the role listing is ${pod.role}`);

  const tokenCmd = `TOKEN=$(curl -s -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' ${IMDS}/latest/api/token)`;
  command(tokenCmd);
  const creds = await curlShown(lab, ns, `curl -s -H "X-aws-ec2-metadata-token: $TOKEN" ${CREDS}${pod.role}`, `${tokenCmd}; `);
  let code = '';
  try {
    code = (JSON.parse(creds.body) as { Code?: string }).Code ?? '';
  } catch {
    // checked below
  }
  check(creds.status === 200 && code === 'Success', `IMDSv2: token (the metadata service's PUT, podiam's token), credentials for ${pod.role} from podiam`);

  if (otherRole !== undefined) {
    const steal = await curlShown(lab, ns, `curl -s ${CREDS}${otherRole}`);
    check(steal.status === 403 && !steal.body.includes('AccessKeyId'), `asking for another pod's role (${otherRole}): 403, no credentials`);
  }

  const cli = await awsShown(lab, ns);
  const want = `assumed-role/${pod.role}/${pod.namespace}.${pod.name}`;
  check(cli.code === 0 && cli.stdout.includes(want), `AWS CLI (no credentials configured): STS says ${want}`);
}

async function main(): Promise<number> {
  const problem = labPrerequisites();
  if (problem) {
    process.stderr.write(`demo: ${problem}\n`);
    return 1;
  }
  out(bold('podiam demo: a Kubernetes node in network namespaces, the real iptables DNAT rule, real AWS clients'));
  out(dim("Everything runs in network namespaces named pdmlab-<pid>-…; this machine's own network is not touched."));

  section('1. Build the node');
  let lab: Lab | undefined;
  let podiam: LabPodiam | undefined;
  const stop = (signal: NodeJS.Signals): void => {
    out(`\n${signal}: tearing the lab down`);
    interrupted = true;
    void (lab?.destroy() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const t0 = Date.now();
    lab = await LabClass.create({
      pods: [
        { name: 'app-a', role: 'app-a-role' },
        { name: 'app-b', role: 'app-b-role', namespace: 'team-b' },
        { name: 'plain' },
      ],
    });
    out(`  node     ${lab.nodeNs}: ${NODE_IP} and ${NODE_IP6} (node IPs) on lo`);
    out(`  imds     ${lab.imdsNs}: fake EC2 metadata service on ${METADATA_IP}:80 and [${METADATA_IP6}]:80 (the node's own role: node-role),`);
    out(`           off the node, reached by routing through veth-imds, as on EC2`);
    out(`           moto_server as STS on ${lab.motoUrl}; Kubernetes test API on ${lab.kubeUrl}`);
    for (const p of lab.pods) {
      out(`  pod      ${`${p.namespace}/${p.name}`.padEnd(14)} ${p.ip.padEnd(11)} ${p.ip6.padEnd(12)} eth0 ── ${p.hostIface.padEnd(11)} ${p.role ? `iam.amazonaws.com/role: ${p.role}` : '(no role annotation)'}`);
    }
    const o = lab.outsider;
    out(`  outsider ${'(not a pod)'.padEnd(14)} ${o.ip.padEnd(11)} eth0 ── ${o.hostIface.padEnd(11)} ${dim('does not match cali+')}`);
    out(dim(`  built in ${seconds(Date.now() - t0)}`));

    section('2. Start podiam in the node namespace');
    command(`podiam ${lab.podiamArgs().join(' ')}`);
    const t1 = Date.now();
    podiam = await lab.startPodiam();
    out(dim(`  ready in ${seconds(Date.now() - t1)}; the rules it installed:`));
    command('iptables-save | grep -i podiam');
    const rules = await lab.podiamRules();
    answer(rules.all.join('\n'));
    check(rules.guards.length === 1 && rules.jumps.length === 1 && rules.dnats.length === 1, 'a guard for cali+ in mangle FORWARD, one jump in nat PREROUTING, one DNAT for cali+ in the PODIAM chain');
    command('ip6tables-save | grep -c podiam');
    const rules6 = await lab.podiamRules('ipv6');
    answer(String(rules6.all.length));
    check(rules6.guards.length === 1 && rules6.jumps.length === 1 && rules6.dnats.length === 1, `the same for IPv6 (${METADATA_IP6}), DNAT to [${NODE_IP6}]:8181`);

    section(`3. Ask ${METADATA_IP} from inside each pod ${dim('(no AWS credentials configured: empty HOME, no AWS_* variables)')}`);
    const [a, b, plain] = lab.pods as [LabPod, LabPod, LabPod];
    await askAsPod(lab, a, undefined);
    await askAsPod(lab, b, a.role);
    await askAsPod(lab, plain, undefined);

    out();
    out(`  ${bold('── outsider')}  ${dim(`${o.ip}, on ${o.hostIface}: not a pod interface, so not intercepted`)}`);
    const outsider = await curlShown(lab, o.netns, `curl -s ${CREDS}`);
    check(outsider.status === 200 && outsider.body.trim() === 'node-role', "answered by the node's metadata service itself (node-role): the rule matches only -i cali+");

    out();
    out(`  ${bold(`── pod ${a.namespace}/${a.name} over IPv6`)}  ${dim(`${a.ip6}, asking [${METADATA_IP6}]`)}`);
    const six = await curlShown(lab, a.netns, `curl -s http://[${METADATA_IP6}]/latest/meta-data/iam/security-credentials/`);
    check(six.status === 200 && six.body.trim() === a.role, `IPv6: the role listing is ${a.role}, from podiam (ip6tables DNAT)`);

    section('4. Restart podiam: SIGTERM, the rules stay, pods are refused (never the node role), a new podiam serves');
    command(`kill -TERM ${podiam.pid}`);
    const exit = await podiam.stop('SIGTERM');
    answer(`podiam exited with code ${exit.code ?? exit.signal}`);
    const kept = await lab.podiamRules();
    check(exit.code === 0 && kept.guards.length === 1 && kept.jumps.length === 1 && kept.dnats.length === 1, 'podiam exited 0 and left its rules in place (as kube-proxy does)');
    const t2 = Date.now();
    const refused = await curlShown(lab, a.netns, `curl -sS ${CREDS}`);
    const refusedMs = Date.now() - t2;
    check(refused.status === 0 && !refused.body.includes('node-role'), `no podiam running: refused in ${refusedMs} ms (the closed port's reset) — not the node's role`);
    command(`podiam ${lab.podiamArgs().join(' ')}`);
    const t3 = Date.now();
    podiam = await lab.startPodiam();
    out(dim(`  ready in ${seconds(Date.now() - t3)}; it adopted the rules:`));
    const adopted = await lab.podiamRules();
    check(adopted.guards.length === 1 && adopted.jumps.length === 1 && adopted.dnats.length === 1, 'still exactly one copy of each rule');
    const again = await curlShown(lab, a.netns, `curl -s ${CREDS}`);
    check(again.status === 200 && again.body.trim() === a.role, `the new podiam serves ${a.role} again`);

    section('5. Uninstall: stop podiam, then podiam --cleanup (as kube-proxy --cleanup)');
    command(`kill -TERM ${podiam.pid}`);
    await podiam.stop('SIGTERM');
    command(`podiam ${lab.podiamArgs().join(' ')} --cleanup`);
    const cleaned = await lab.runCleanup();
    answer(cleaned.stdout.trim() || cleaned.stderr.trim());
    const left = [...(await lab.podiamRules()).all, ...(await lab.podiamRules('ipv6')).all];
    check(cleaned.code === 0 && left.length === 0, 'exit 0; iptables-save and ip6tables-save show no podiam rule');
    const direct = await curlShown(lab, a.netns, `curl -s ${CREDS}`);
    check(direct.status === 200 && direct.body.trim() === 'node-role', "as on a node without podiam, the pod now reaches the node's metadata service itself");
    command(`podiam --cleanup`);
    const twice = await lab.runCleanup();
    answer(twice.stdout.trim());
    check(twice.code === 0, 'a second --cleanup: nothing to remove, exit 0');
  } catch (err) {
    failed++;
    out(red(`\ndemo failed: ${(err as Error).message}`));
    if (podiam) out(dim(`podiam's log:\n${podiam.output()}`));
  } finally {
    await lab?.destroy();
  }
  if (!interrupted && failed === 0) await brokerMode();
  out();
  const summary = `${passed} checks passed, ${failed} failed, in ${seconds(Date.now() - started)}; the lab is torn down.`;
  out(failed === 0 ? green(bold(summary)) : red(bold(summary)));
  return failed === 0 ? 0 : 1;
}

/** Section 6: two nodes, two broker replicas, agents in broker mode, STS refusing the nodes' role. */
async function brokerMode(): Promise<void> {
  section('6. Broker mode: two nodes; `podiam broker` is the only caller of STS; the nodes\' own role can assume no pod role');
  let lab: Lab | undefined;
  const brokers: LabBroker[] = [];
  try {
    const t0 = Date.now();
    lab = await LabClass.create({
      nodes: ['lab-node', 'lab-node-b'],
      pods: [
        { name: 'web-a', role: 'web-a-role' },
        { name: 'web-b', role: 'web-b-role', node: 'lab-node-b' },
      ],
      agentPods: true,
      stsProxy: { refuseAccessKeyIds: NODE_KEYS },
    });
    const [na, nb] = lab.nodes;
    out(`  node     ${na!.name.padEnd(11)} ${na!.netns}: ${na!.ip}; node     ${nb!.name} ${nb!.netns}: ${nb!.ip} (routed through ${na!.name})`);
    for (const p of lab.pods) out(`  pod      ${`${p.namespace}/${p.name}`.padEnd(14)} ${p.ip.padEnd(11)} on ${p.node.padEnd(11)} iam.amazonaws.com/role: ${p.role}`);
    out(`  STS      ${lab.stsUrl}: a proxy in front of moto that refuses every AssumeRole signed with a node's key (${NODE_KEYS.join(', ')})`);
    out(`           — the pod roles' trust policies name the broker's role only`);
    out(dim(`  built in ${seconds(Date.now() - t0)}`));
    command(`AWS_ACCESS_KEY_ID=${BROKER_ACCESS_KEY_ID} podiam ${brokerArgs(lab, 0).join(' ')}   # and replica 1 on :8444`);
    brokers.push(await startBroker(lab, { replica: 0 }), await startBroker(lab, { replica: 1 }));
    for (const node of ['lab-node', 'lab-node-b']) {
      const extra = await brokerAgentArgs(lab, node, brokers);
      command(`podiam ${lab.podiamArgs(extra, node).join(' ')}   ${dim(`# on ${node}, no AWS credentials of its own`)}`);
      await lab.startPodiam({ node, env: brokerAgentEnv(lab), extraArgs: extra });
    }

    for (const p of lab.pods) {
      out();
      out(`  ${bold(`── pod ${p.namespace}/${p.name}`)}  ${dim(`on ${p.node}`)}`);
      const cli = await awsShown(lab, p.netns);
      const want = `assumed-role/${p.role}/${p.namespace}.${p.name}`;
      check(cli.code === 0 && cli.stdout.includes(want), `STS says ${want}, through its node's agent and the broker`);
    }

    out();
    out(`  ${bold('── a hostNetwork process on lab-node-b (or root there): the node role, from the metadata service')}`);
    const args = `sts assume-role --role-arn ${BASE_ROLE_ARN}web-a-role --role-session-name stolen --endpoint-url ${lab.stsUrl} --region us-east-1`;
    command(`aws ${args}`);
    const stolen = await lab.exec(nb!.netns, ['sh', '-c', `${AWS_CLI} ${args}`], { env: lab.cleanClientEnv(), timeoutMs: 30_000 });
    answer((stolen.stderr.trim() || stolen.stdout.trim()).split('\n').pop() ?? '', `(exit ${stolen.code})`);
    check(stolen.code !== 0 && /AccessDenied/.test(stolen.stderr), "the node role cannot assume a pod role: STS refuses it");

    out();
    out(`  ${bold("── lab-node's agent token, asking the broker for lab-node-b's pod")}`);
    const webB = await lab.kube('GET', '/api/v1/namespaces/default/pods/web-b');
    const token = readFileSync(await lab.agentTokenFile('lab-node'), 'utf8');
    const body = JSON.stringify({ namespace: 'default', name: 'web-b', uid: webB.body.metadata.uid, proof: { kind: 'ip' } });
    command(`curl -s --cacert ca.crt -H "Authorization: Bearer $AGENT_A_TOKEN" -d '${body}' ${brokers[0]!.url}/v1/credentials`);
    const r = await lab.exec(na!.netns, ['curl', '-sS', '--cacert', brokerTls(lab).caFile, '-w', '\n%{http_code}', '-H', `Authorization: Bearer ${token}`, '-H', 'Content-Type: application/json', '--data-binary', body, `${brokers[0]!.url}/v1/credentials`]);
    const cut = r.stdout.lastIndexOf('\n');
    answer(r.stdout.slice(0, cut), `(HTTP ${r.stdout.slice(cut + 1)})`);
    check(r.stdout.slice(cut + 1) === '403' && /PodNotOnAgentNode/.test(r.stdout), "node restriction: an agent gets its own node's pods only (403 PodNotOnAgentNode)");

    out();
    out(`  ${bold('── both broker replicas stopped')}`);
    for (const b of brokers) await b.stop('SIGKILL');
    const cached = await curlShown(lab, lab.pod('web-a').netns, `curl -s ${CREDS}web-a-role`);
    check(cached.status === 200, 'a pod whose credentials its agent holds keeps getting them');

    const calls = await lab.stsCalls();
    const assumes = calls.filter((c) => c.action === 'AssumeRole');
    const byBroker = assumes.filter((c) => BROKER_KEYS.includes(c.accessKeyId ?? '') && c.outcome === 'forwarded').length;
    const refused = assumes.filter((c) => c.outcome === 'refused').length;
    answer(`STS saw ${assumes.length} AssumeRole: ${byBroker} signed by the brokers' keys (served; each replica prefetches every pod), ${refused} with a node's key (refused)`);
    check(byBroker + refused === assumes.length && refused === 1, "every pod role was assumed by the broker; the one attempt with a node's key was refused");
  } catch (err) {
    failed++;
    out(red(`\nbroker demo failed: ${(err as Error).message}`));
    for (const b of brokers) out(dim(`broker ${b.replica}'s log:\n${b.output().slice(-2000)}`));
  } finally {
    await lab?.destroy();
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`demo: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
