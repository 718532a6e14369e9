/**
 * The node lab: a Kubernetes node simulated in network namespaces, so podiam's DNAT rule can be
 * tested for real, with real AWS clients, without touching the machine's own network.
 *
 *   node ns (<id>-node)                                  pod ns (<id>-<pod>), one per pod
 *   lo: 192.0.2.1/32, fd00:ab::1/128                     eth0: 192.0.2.1x/32, fd00:ab::1x/128
 *   ├─ moto_server (STS) 192.0.2.1:5000                  default via 192.0.2.1 dev eth0 onlink
 *   ├─ kube test server  127.0.0.1:8080                  default via fe80::1 dev eth0
 *   ├─ podiam            192.0.2.1:8181, [fd00:ab::1]:8181 (--iptables)
 *   ├─ cali-<pod> ── veth ── eth0 in each pod ns         outsider ns (<id>-outsider)
 *   ├─ veth-out0  ── veth ── eth0 in the outsider ns     eth0: 192.0.2.200/32, fd00:ab::200/128, same
 *   └─ veth-imds  ── veth ── eth0 in the metadata ns     routes, on a non-matching node interface
 *
 *   metadata ns (<id>-imds): eth0: 169.254.169.254/32, fd00:ec2::254/128; the fake IMDS on both.
 *
 *   More nodes (LabOptions.nodes, e.g. two nodes and a broker): node k (k = 2, 3, ...) is its own
 *   namespace <id>-node<k>, with 192.0.2.(239+k) and fd00:ab::(ef+k) on lo, linked to the first
 *   node by a veth (veth-n<k> there, eth0 in node k): the first node stands for the cluster
 *   network too (it routes between the nodes, to the metadata service, to moto). Node k's pods
 *   hang off node k exactly as the first node's hang off it (their addresses come from the same
 *   192.0.2.10+ range, routed by the first node to node k). The Kubernetes test API then also
 *   listens on the first node's address (http://192.0.2.1:8080), for the other nodes' agents.
 *   With one node (the default) nothing of this exists and nothing changes.
 *   As on EC2, the metadata service is not on the node: the node routes to it (routes via
 *   veth-imds), so a pod's request to it is forwarded (filter/mangle FORWARD), and only a DNAT
 *   to the node's own address lands in INPUT. Every node-side veth has fe80::1 (the pods' IPv6
 *   gateway, as Calico's fe80::ecee:eeff:feee:eeee).
 *
 * Rules this module keeps (the machine is a cloud VM):
 *  - nothing runs in, and no command changes, the root network namespace: every command goes
 *    through `ip netns exec <lab ns>` or `ip -n <lab ns>`; interfaces are created directly in lab
 *    namespaces, never in the root one;
 *  - 169.254.169.254 exists only on the lab node's `lo`, so nothing here can reach the host's
 *    real metadata service;
 *  - namespaces are named `pdmlab-<pid>-<n>-…` and everything is removed by destroy(), by an
 *    exit hook if destroy() never ran, and, for labs whose process is gone, by the next lab
 *    (removeLeftovers()).
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, podiamArgv, shebangEnv } from './podiam-process.js';
import { metricSum } from './metrics-text.js';
import type { StsCall } from './sts-proxy.js';

export const LAB_PREFIX = 'pdmlab';
export const NODE_IP = '192.0.2.1';
export const METADATA_IP = '169.254.169.254';
export const NODE_NAME = 'lab-node';
export const ACCOUNT = '123456789012';
export const BASE_ROLE_ARN = `arn:aws:iam::${ACCOUNT}:role/`;
export const MOTO_PORT = 5000;
export const KUBE_PORT = 8080;
/** The STS proxy (LabOptions.stsProxy) on the first node, and its control port (GET /calls). */
export const STS_PROXY_PORT = 5001;
export const STS_PROXY_CONTROL_PORT = 5002;
export const APP_PORT = 8181;
export const OUTSIDER_IP = '192.0.2.200';
export const NODE_IP6 = 'fd00:ab::1';
export const METADATA_IP6 = 'fd00:ec2::254';
export const OUTSIDER_IP6 = 'fd00:ab::200';
export const IMDS_IFACE = 'veth-imds';
/** The name the agent's pods have in the fixture with LabOptions.agentPods: kube-system/podiam-<node>. */
export const AGENT_NAMESPACE = 'kube-system';
export const AGENT_SERVICE_ACCOUNT = 'podiam';
/** The audience of the agents' tokens for the broker (the DaemonSet's projected volume in broker mode). */
export const BROKER_AUDIENCE = 'podiam-broker';
export const OUTSIDER_IFACE = 'veth-out0';
/** A PATH with the usual system directories, for commands run inside the lab. */
/** The lab node's region, as its metadata service says (placement/region). */
export const LAB_REGION = 'lab-region-1';
export const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** iproute2's `ip`, by absolute path: commands in the lab may run with any PATH (even none). */
const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => existsSync(p)) ?? 'ip';
/** AWS CLI v2 (Debian's awscli). Not the `aws` first on PATH, which may be a pip v1. */
export const AWS_CLI = '/usr/bin/aws';

export interface LabPodSpec {
  /** Pod name (also the Kubernetes pod name): lower-case letters, digits and '-'. */
  readonly name: string;
  /** The `iam.amazonaws.com/role` annotation; none when undefined. */
  readonly role?: string;
  /** Kubernetes namespace. Default `default`. */
  readonly namespace?: string;
  /**
   * false: the network namespace only, no pod in the test API server: the test creates the pod
   * through the API (kube()) and plays the kubelet (test/support/lab-kubelet.ts). Default true.
   */
  readonly fixture?: boolean;
  /** The node it runs on (one of LabOptions.nodes). Default the first node, NODE_NAME. */
  readonly node?: string;
  /** spec.serviceAccountName. Default `default`. */
  readonly serviceAccount?: string;
}

/** A simulated node: its network namespace and addresses. */
export interface LabNode {
  readonly name: string;
  readonly netns: string;
  readonly ip: string;
  readonly ip6: string;
  /** The Kubernetes test API server as this node reaches it. */
  readonly kubeUrl: string;
  /** On the first node: the veth to this node (undefined for the first node itself). */
  readonly linkIface: string | undefined;
}

export interface LabPod extends Required<Pick<LabPodSpec, 'name' | 'namespace' | 'fixture' | 'node'>> {
  readonly role: string | undefined;
  /** The pod's network namespace. */
  readonly netns: string;
  readonly ip: string;
  /** The pod's IPv6 address (also in status.podIPs). */
  readonly ip6: string;
  /** The node-side end of the pod's veth (matches `--host-interface=cali+`). */
  readonly hostIface: string;
  readonly serviceAccount: string;
}

export interface LabPeer {
  readonly name: string;
  readonly netns: string;
  readonly ip: string;
  readonly ip6: string;
  readonly hostIface: string;
}

export interface LabOptions {
  readonly pods: readonly LabPodSpec[];
  /** hostNetwork pods: in the Kubernetes fixture only (they share the node namespace and its IP). */
  readonly hostNetworkPods?: readonly LabPodSpec[];
  /** Labels of Kubernetes namespaces (every pod's namespace exists, unlabelled unless named here). */
  readonly namespaceLabels?: Readonly<Record<string, Record<string, string>>>;
  /** ServiceAccounts besides every namespace's `default`, with their annotations. */
  readonly serviceAccounts?: ReadonlyArray<{ readonly namespace: string; readonly name: string; readonly annotations?: Record<string, string> }>;
  /**
   * The nodes' names, the first being the one every pod runs on by default. Default
   * [NODE_NAME]: one node. More than one: see the top of this file.
   */
  readonly nodes?: readonly string[];
  /**
   * The node agents as the DaemonSet makes them, in the fixture: a hostNetwork pod
   * kube-system/podiam-<node> of ServiceAccount kube-system/podiam on every node (what a broker's
   * node restriction looks up from an agent's token: agentTokenFile()).
   */
  readonly agentPods?: boolean;
  /**
   * An STS proxy (test/support/sts-proxy.ts) in front of moto, on the first node
   * (http://192.0.2.1:5001, lab.stsUrl): AssumeRole signed with one of refuseAccessKeyIds is
   * refused (403 AccessDenied) and counted (lab.stsCalls()). answerRoles (a RegExp source): the
   * proxy answers AssumeRole of matching role ARNs itself, for loads moto cannot take.
   */
  readonly stsProxy?: { readonly refuseAccessKeyIds?: readonly string[]; readonly answerRoles?: string };
  /** Progress lines (what is being built). */
  readonly log?: (line: string) => void;
  /** Taints of the lab's Node object (the node itself is always in the Kubernetes fixture). */
  readonly nodeTaints?: ReadonlyArray<{ readonly key: string; readonly value?: string; readonly effect: string }>;
}

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ExecOptions {
  /** The whole environment of the command (nothing is inherited). Default: PATH only. */
  readonly env?: NodeJS.ProcessEnv;
  readonly timeoutMs?: number;
  readonly cwd?: string;
}

export interface HttpAnswer {
  readonly status: number;
  readonly body: string;
}

/** Commands the lab needs, and where they come from. */
const REQUIRED_TOOLS: ReadonlyArray<[string, string]> = [
  ['ip', 'apt-get install -y iproute2'],
  ['iptables', 'apt-get install -y iptables'],
  ['iptables-save', 'apt-get install -y iptables'],
  ['ip6tables', 'apt-get install -y iptables'],
  ['conntrack', 'apt-get install -y conntrack'],
  ['curl', 'apt-get install -y curl'],
  ['moto_server', 'pip install "moto[server]" (moto 5.x)'],
  [AWS_CLI, 'apt-get install -y awscli (the AWS CLI v2 the pods use)'],
];

/** Where `name` is on PATH (or the system directories), or undefined. */
export function which(name: string): string | undefined {
  const dirs = `${process.env.PATH ?? ''}:${SYSTEM_PATH}`.split(':').filter(Boolean);
  for (const dir of dirs) {
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

/**
 * Why this machine cannot run the lab, or undefined if it can. The message says what to do:
 * tests call it and fail with it (they never skip silently).
 */
export function labPrerequisites(extra: ReadonlyArray<[string, string]> = []): string | undefined {
  const problems: string[] = [];
  if (process.platform !== 'linux') problems.push(`the lab needs Linux network namespaces (this is ${process.platform})`);
  if (process.getuid?.() !== 0) {
    problems.push(
      'the lab needs root (it creates network namespaces, veth pairs and iptables rules inside them): ' +
        'run `sudo npm test` / `sudo npm run demo`, or only the tests that need no root: `npm run test:unit`',
    );
  }
  for (const [tool, install] of [...REQUIRED_TOOLS, ...extra]) {
    if ((tool.startsWith('/') ? existsSync(tool) : which(tool)) === undefined) problems.push(`${tool} is missing: ${install}`);
  }
  if (pythonWithBotocore() === undefined) problems.push('no python3 with botocore on PATH: pip install botocore');
  for (const f of ['dist/podiam.js', 'dist/test/support/imds-server-cli.js', 'dist/test/support/kube-api-server-cli.js', 'dist/scripts/lab/whoami-sdk.js']) {
    if (!existsSync(path.join(ROOT, f))) problems.push(`${f} is missing: run \`npm run build\` first`);
  }
  return problems.length === 0 ? undefined : `cannot build the node lab:\n  - ${problems.join('\n  - ')}`;
}

/** Runs a command to completion; never throws for a non-zero exit. */
export function run(file: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      env: opts.env ?? { PATH: SYSTEM_PATH },
      cwd: opts.cwd ?? ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal === 'SIGKILL' ? 137 : 128), stdout, stderr });
    });
  });
}

/** Runs a command and throws, with its stderr, when it fails. */
async function must(file: string, args: readonly string[]): Promise<string> {
  const r = await run(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

function listNetns(): string[] {
  const r = spawnSync(IP, ['netns', 'list'], { encoding: 'utf8', env: { PATH: SYSTEM_PATH } });
  return (r.stdout ?? '')
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Lab ids of this process (this module instance) that are still in use (destroy() not run yet). */
const liveLabs = new Set<string>();
let labCounter = 0;

/** Kills every process in a lab namespace (they are all the lab's own) and deletes it. Synchronous. */
function deleteNetnsSync(ns: string): void {
  const env = { PATH: SYSTEM_PATH };
  for (let round = 0; round < 20; round++) {
    const pids = (spawnSync(IP, ['netns', 'pids', ns], { encoding: 'utf8', env }).stdout ?? '')
      .split('\n')
      .map(Number)
      .filter((p) => Number.isInteger(p) && p > 0 && p !== process.pid);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, round === 0 ? 'SIGTERM' : 'SIGKILL');
      } catch {
        // already gone
      }
    }
    spawnSync('sleep', [round === 0 ? '0.2' : '0.05'], { env });
  }
  spawnSync(IP, ['netns', 'del', ns], { env, stdio: 'ignore' });
}

/**
 * Removes what earlier labs left behind: namespaces named `pdmlab-<pid>-…` whose process is gone
 * (or is this process, but whose lab is no longer live). Never touches a lab another live process owns.
 * Returns the namespaces removed.
 */
export function removeLeftovers(): string[] {
  const removed: string[] = [];
  for (const ns of listNetns()) {
    const m = new RegExp(`^${LAB_PREFIX}-(\\d+)-([a-z0-9]+)-`).exec(ns);
    if (!m) continue;
    const pid = Number(m[1]);
    const id = `${LAB_PREFIX}-${m[1]}-${m[2]}`;
    const leftover = pid === process.pid ? !liveLabs.has(id) : !alive(pid);
    if (!leftover) continue;
    deleteNetnsSync(ns);
    removed.push(ns);
  }
  return removed;
}

function hostIfaceFor(pod: string, taken: Set<string>): string {
  let name = `cali-${pod}`.slice(0, 15);
  for (let i = 0; taken.has(name); i++) name = `cali${i}-${pod}`.slice(0, 15);
  taken.add(name);
  return name;
}

/** A process running inside a lab namespace. */
export class LabProcess {
  private out = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private done = false;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    child.stdout?.on('data', (d: Buffer) => (this.out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.out += d.toString()));
    this.exited = new Promise((resolve) => {
      child.on('error', (err) => {
        this.out += `\n${name}: ${err.message}\n`;
        this.done = true;
        resolve({ code: 127, signal: null });
      });
      child.on('exit', (code, signal) => {
        this.done = true;
        resolve({ code, signal });
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return !this.done;
  }

  /** Everything the process wrote (stdout and stderr, interleaved). */
  output(): string {
    return this.out;
  }

  /** Resolves when `re` matches the output; rejects when the process exits first or after timeoutMs. */
  async waitFor(re: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.out);
      if (m) return m;
      if (this.done) throw new Error(`${this.name} exited before printing ${re}:\n${this.out}`);
      if (Date.now() > deadline) throw new Error(`${this.name} did not print ${re} within ${timeoutMs} ms:\n${this.out}`);
      await sleep(25);
    }
  }

  /** Waits for the process to exit on its own; rejects (leaving it running) after timeoutMs. */
  async waitExit(timeoutMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name} did not exit within ${timeoutMs} ms:\n${this.out}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends `signal`, waits for the exit (SIGKILL after timeoutMs). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 5_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.done) return this.exited;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const r = await this.exited;
    clearTimeout(timer);
    return r;
  }
}

/** podiam running in the lab's node namespace. */
export class LabPodiam extends LabProcess {
  constructor(
    child: ChildProcess,
    private readonly lab: Lab,
    readonly args: readonly string[],
    /** The node it runs on. */
    readonly node: LabNode = lab.nodes[0]!,
  ) {
    super(node.name === NODE_NAME ? 'podiam' : `podiam@${node.name}`, child);
  }

  /** GET a path on podiam itself (from its node's namespace). */
  get(urlPath: string): Promise<HttpAnswer> {
    return this.lab.curl(this.node.netns, `http://${this.node.ip}:${APP_PORT}${urlPath}`);
  }

  /** Waits until /readyz answers 200 (informers synced and the rule installed). */
  async waitReady(timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running) throw new Error(`podiam exited before it was ready:\n${this.output()}`);
      const r = await this.get('/readyz').catch(() => undefined);
      if (r?.status === 200) return;
      if (Date.now() > deadline) throw new Error(`podiam was not ready within ${timeoutMs} ms:\n${this.output()}`);
      await sleep(100);
    }
  }

  /** The sum of a Prometheus metric's samples whose labels include `labels`. */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    return metricSum((await this.get('/metrics')).body, name, labels);
  }
}

export class Lab {
  /** The first node's namespace (every node: `nodes`). */
  readonly nodeNs: string;
  /** Every node, the first one first (nodeNs, NODE_IP, NODE_NAME). */
  readonly nodes: readonly LabNode[];
  /** The metadata service's namespace (off the node, reached by routing). */
  readonly imdsNs: string;
  readonly pods: readonly LabPod[];
  readonly outsider: LabPeer;
  /** STS (moto), reachable from the node and from every pod. */
  readonly motoUrl = `http://${NODE_IP}:${MOTO_PORT}`;
  /** The Kubernetes test API server, as the first node reaches it (the others: LabNode.kubeUrl). */
  readonly kubeUrl = `http://127.0.0.1:${KUBE_PORT}`;
  /** Where STS is for the lab's own processes: the STS proxy when there is one, else moto. */
  readonly stsUrl: string;
  /** A scratch directory (fixture, empty HOME for clients); removed by destroy(). */
  readonly dir: string;
  private readonly processes: LabProcess[] = [];
  private hostNetworkPods: readonly LabPodSpec[] = [];
  private fixtureExtras: Pick<LabOptions, 'namespaceLabels' | 'serviceAccounts' | 'nodeTaints'> = {};
  private destroyed = false;
  private readonly exitHook = (): void => this.destroySync();

  private constructor(
    readonly id: string,
    pods: readonly LabPodSpec[],
    private readonly say: (line: string) => void,
    nodeNames: readonly string[] = [NODE_NAME],
    private readonly stsProxy: LabOptions['stsProxy'] = undefined,
  ) {
    this.nodeNs = `${id}-node`;
    this.imdsNs = `${id}-imds`;
    this.nodes = nodeNames.map((name, k) =>
      k === 0
        ? { name, netns: this.nodeNs, ip: NODE_IP, ip6: NODE_IP6, kubeUrl: this.kubeUrl, linkIface: undefined }
        : { name, netns: `${id}-node${k + 1}`, ip: `192.0.2.${240 + k}`, ip6: `fd00:ab::${(0xf0 + k).toString(16)}`, kubeUrl: `http://${NODE_IP}:${KUBE_PORT}`, linkIface: `veth-n${k + 1}` },
    );
    this.stsUrl = stsProxy === undefined ? this.motoUrl : `http://${NODE_IP}:${STS_PROXY_PORT}`;
    const taken = new Set<string>();
    this.pods = pods.map((p, i) => ({
      name: p.name,
      namespace: p.namespace ?? 'default',
      role: p.role,
      fixture: p.fixture ?? true,
      node: p.node ?? nodeNames[0]!,
      serviceAccount: p.serviceAccount ?? 'default',
      netns: `${id}-${p.name}`,
      ip: `192.0.2.${10 + i}`,
      ip6: `fd00:ab::${10 + i}`,
      hostIface: hostIfaceFor(p.name, taken),
    }));
    this.outsider = { name: 'outsider', netns: `${id}-outsider`, ip: OUTSIDER_IP, ip6: OUTSIDER_IP6, hostIface: OUTSIDER_IFACE };
    this.dir = mkdtempSync(path.join(os.tmpdir(), `${id}-`));
  }

  /** Every namespace of this lab. */
  get namespaces(): string[] {
    return [...this.nodes.map((n) => n.netns), ...this.pods.map((p) => p.netns), this.outsider.netns, this.imdsNs];
  }

  /** A node by name (default the first). */
  node(name: string = this.nodes[0]!.name): LabNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no lab node ${name} (nodes: ${this.nodes.map((x) => x.name).join(', ')})`);
    return n;
  }

  /**
   * Builds the lab: namespaces, veths, routes, then the fake IMDS, moto and the Kubernetes test
   * server in the node namespace (podiam is started separately: startPodiam()). Tears down
   * whatever it built if anything fails.
   */
  static async create(opts: LabOptions): Promise<Lab> {
    const problem = labPrerequisites();
    if (problem) throw new Error(problem);
    const nodeNames = opts.nodes ?? [NODE_NAME];
    if (nodeNames.length < 1 || nodeNames.length > 9 || new Set(nodeNames).size !== nodeNames.length) throw new Error('lab nodes: 1 to 9 distinct names');
    for (const p of opts.pods) {
      if (!/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(p.name) || /^node\d*$/.test(p.name) || p.name === 'outsider' || p.name === 'imds') {
        throw new Error(`lab pod name ${JSON.stringify(p.name)}: use lower-case letters, digits and '-' (not "node", "node<n>", "outsider" or "imds")`);
      }
    }
    for (const p of [...opts.pods, ...(opts.hostNetworkPods ?? [])]) {
      if (p.node !== undefined && !nodeNames.includes(p.node)) throw new Error(`lab pod ${p.name}: node ${p.node} is not one of the lab's nodes (${nodeNames.join(', ')})`);
    }
    if (new Set(opts.pods.map((p) => p.name)).size !== opts.pods.length) throw new Error('lab pod names must be unique');
    if (opts.pods.length > 180) throw new Error('at most 180 pods');
    const removed = removeLeftovers();
    const say = opts.log ?? ((): void => undefined);
    if (removed.length > 0) say(`removed ${removed.length} namespace(s) left by an earlier lab: ${removed.join(', ')}`);

    // pid (for leftover detection) plus a per-instance part that is unique even across jest's
    // per-file module registries, which each have their own labCounter.
    const id = `${LAB_PREFIX}-${process.pid}-${(Date.now() % 1_679_616).toString(36)}${++labCounter}`;
    liveLabs.add(id);
    const lab = new Lab(id, opts.pods, say, nodeNames, opts.stsProxy);
    lab.hostNetworkPods = [
      ...(opts.hostNetworkPods ?? []),
      ...(opts.agentPods ? nodeNames.map((node) => ({ name: agentPodName(node), namespace: AGENT_NAMESPACE, node, serviceAccount: AGENT_SERVICE_ACCOUNT })) : []),
    ];
    lab.fixtureExtras = {
      namespaceLabels: opts.namespaceLabels,
      serviceAccounts: [...(opts.serviceAccounts ?? []), ...(opts.agentPods ? [{ namespace: AGENT_NAMESPACE, name: AGENT_SERVICE_ACCOUNT }] : [])],
      nodeTaints: opts.nodeTaints,
    };
    process.on('exit', lab.exitHook);
    try {
      await lab.build();
      return lab;
    } catch (err) {
      await lab.destroy();
      throw err;
    }
  }

  pod(name: string): LabPod {
    const p = this.pods.find((x) => x.name === name);
    if (!p) throw new Error(`no lab pod ${name}`);
    return p;
  }

  private async build(): Promise<void> {
    const ipn = (ns: string, ...args: string[]): Promise<string> => must(IP, ['-n', ns, ...args]);
    const sysctl = (ns: string, ...settings: string[]): Promise<string> => must(IP, ['netns', 'exec', ns, 'sysctl', '-qw', ...settings]);

    // No duplicate address detection in the lab: addresses are usable at once.
    const noDad = ['net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0'];
    // The node: its addresses live on lo (no dummy links).
    await must(IP, ['netns', 'add', this.nodeNs]);
    await sysctl(this.nodeNs, ...noDad);
    await ipn(this.nodeNs, 'link', 'set', 'lo', 'up');
    await ipn(this.nodeNs, 'addr', 'add', `${NODE_IP}/32`, 'dev', 'lo');
    await ipn(this.nodeNs, 'addr', 'add', `${NODE_IP6}/128`, 'dev', 'lo', 'nodad');
    await sysctl(this.nodeNs, 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1');

    // The metadata service, off the node: its own namespace, reached through veth-imds by routing.
    await must(IP, ['netns', 'add', this.imdsNs]);
    await sysctl(this.imdsNs, ...noDad);
    await ipn(this.imdsNs, 'link', 'set', 'lo', 'up');
    await ipn(this.nodeNs, 'link', 'add', IMDS_IFACE, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.imdsNs);
    await ipn(this.nodeNs, 'link', 'set', IMDS_IFACE, 'up');
    await ipn(this.nodeNs, 'addr', 'add', 'fe80::1/64', 'dev', IMDS_IFACE, 'nodad');
    await ipn(this.nodeNs, 'route', 'add', `${METADATA_IP}/32`, 'dev', IMDS_IFACE, 'scope', 'link');
    await ipn(this.nodeNs, 'route', 'add', `${METADATA_IP6}/128`, 'dev', IMDS_IFACE);
    await ipn(this.imdsNs, 'addr', 'add', `${METADATA_IP}/32`, 'dev', 'eth0');
    await ipn(this.imdsNs, 'addr', 'add', `${METADATA_IP6}/128`, 'dev', 'eth0', 'nodad');
    await ipn(this.imdsNs, 'link', 'set', 'eth0', 'up');
    await ipn(this.imdsNs, 'route', 'add', `${NODE_IP}/32`, 'dev', 'eth0', 'scope', 'link');
    await ipn(this.imdsNs, 'route', 'add', 'default', 'via', NODE_IP, 'dev', 'eth0', 'onlink');
    await ipn(this.imdsNs, 'route', 'add', 'default', 'via', 'fe80::1', 'dev', 'eth0');

    // The other nodes: each linked to the first, which routes between them (the cluster network).
    for (const n of this.nodes.slice(1)) {
      await must(IP, ['netns', 'add', n.netns]);
      await sysctl(n.netns, ...noDad);
      await ipn(n.netns, 'link', 'set', 'lo', 'up');
      await ipn(n.netns, 'addr', 'add', `${n.ip}/32`, 'dev', 'lo');
      await ipn(n.netns, 'addr', 'add', `${n.ip6}/128`, 'dev', 'lo', 'nodad');
      await sysctl(n.netns, 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1');
      await ipn(this.nodeNs, 'link', 'add', n.linkIface!, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.netns);
      await sysctl(this.nodeNs, `net/ipv4/conf/${n.linkIface!}/proxy_arp=1`, `net/ipv4/conf/${n.linkIface!}/rp_filter=0`);
      await ipn(this.nodeNs, 'link', 'set', n.linkIface!, 'up');
      await ipn(this.nodeNs, 'addr', 'add', 'fe80::1/64', 'dev', n.linkIface!, 'nodad');
      await ipn(this.nodeNs, 'route', 'add', `${n.ip}/32`, 'dev', n.linkIface!, 'scope', 'link');
      await ipn(this.nodeNs, 'route', 'add', `${n.ip6}/128`, 'via', 'fe80::2', 'dev', n.linkIface!);
      await sysctl(n.netns, 'net/ipv4/conf/eth0/proxy_arp=1', 'net/ipv4/conf/eth0/rp_filter=0');
      await ipn(n.netns, 'addr', 'add', 'fe80::2/64', 'dev', 'eth0', 'nodad');
      await ipn(n.netns, 'link', 'set', 'eth0', 'up');
      await ipn(n.netns, 'route', 'add', `${NODE_IP}/32`, 'dev', 'eth0', 'scope', 'link');
      await ipn(n.netns, 'route', 'add', 'default', 'via', NODE_IP, 'dev', 'eth0', 'onlink');
      await ipn(n.netns, 'route', 'add', 'default', 'via', 'fe80::1', 'dev', 'eth0');
    }

    // Pods, Calico style: /32 (/128) on eth0, default via the node "onlink" (via fe80::1), proxy ARP on the node side.
    const peers: Array<LabPeer & { node?: string }> = [...this.pods, this.outsider];
    await Promise.all(
      peers.map(async (p) => {
        await must(IP, ['netns', 'add', p.netns]);
        await sysctl(p.netns, ...noDad);
        await ipn(p.netns, 'link', 'set', 'lo', 'up');
      }),
    );
    const nodeOf = (p: { node?: string }): LabNode => this.node(p.node ?? this.nodes[0]!.name);
    for (const p of peers) {
      // Created inside the node namespace with the peer moved straight into the pod's: the root
      // namespace never sees either end.
      await ipn(nodeOf(p).netns, 'link', 'add', p.hostIface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p.netns);
    }
    await Promise.all(
      peers.map(async (p) => {
        const n = nodeOf(p);
        await sysctl(n.netns, `net/ipv4/conf/${p.hostIface}/proxy_arp=1`, `net/ipv4/conf/${p.hostIface}/rp_filter=0`);
        await ipn(n.netns, 'link', 'set', p.hostIface, 'up');
        await ipn(n.netns, 'addr', 'add', 'fe80::1/64', 'dev', p.hostIface, 'nodad');
        await ipn(n.netns, 'route', 'add', `${p.ip}/32`, 'dev', p.hostIface, 'scope', 'link');
        await ipn(n.netns, 'route', 'add', `${p.ip6}/128`, 'dev', p.hostIface);
        if (n.linkIface !== undefined) {
          // The first node routes to another node's pods through that node.
          await ipn(this.nodeNs, 'route', 'add', `${p.ip}/32`, 'via', n.ip, 'dev', n.linkIface, 'onlink');
          await ipn(this.nodeNs, 'route', 'add', `${p.ip6}/128`, 'via', 'fe80::2', 'dev', n.linkIface);
        }
        await ipn(p.netns, 'addr', 'add', `${p.ip}/32`, 'dev', 'eth0');
        await ipn(p.netns, 'addr', 'add', `${p.ip6}/128`, 'dev', 'eth0', 'nodad');
        await ipn(p.netns, 'link', 'set', 'eth0', 'up');
        await ipn(p.netns, 'route', 'add', `${n.ip}/32`, 'dev', 'eth0', 'scope', 'link');
        await ipn(p.netns, 'route', 'add', 'default', 'via', n.ip, 'dev', 'eth0', 'onlink');
        await ipn(p.netns, 'route', 'add', 'default', 'via', 'fe80::1', 'dev', 'eth0');
      }),
    );
    this.say(`node namespace ${this.nodeNs}: ${NODE_IP} and ${NODE_IP6} on lo`);
    this.say(`metadata service namespace ${this.imdsNs}: ${METADATA_IP} and ${METADATA_IP6}, routed from the node through ${IMDS_IFACE} (off the node, as on EC2)`);
    for (const n of this.nodes.slice(1)) {
      this.say(`node ${n.name}: namespace ${n.netns}, ${n.ip} and ${n.ip6} on lo, eth0 <-> ${n.linkIface} on ${this.nodes[0]!.name} (which routes between the nodes)`);
    }
    for (const p of this.pods) {
      const on = this.nodes.length > 1 ? p.node : 'the node';
      this.say(`pod ${p.namespace}/${p.name}: namespace ${p.netns}, ${p.ip} and ${p.ip6} on eth0 <-> ${p.hostIface} on ${on}, role ${p.role ?? '(no annotation)'}`);
    }
    this.say(`outsider: namespace ${this.outsider.netns}, ${this.outsider.ip} and ${this.outsider.ip6} on eth0 <-> ${this.outsider.hostIface} on the node (does not match cali+)`);

    // Services on the node.
    const fixture = path.join(this.dir, 'kube-fixture.json');
    writeFileSync(fixture, JSON.stringify(this.kubeFixture(), null, 2));
    const node = process.execPath;
    // '::' in the metadata namespace: both its addresses (169.254.169.254 and fd00:ec2::254), nothing else.
    const imds = this.spawnIn(this.imdsNs, 'fake-imds', [node, path.join(ROOT, 'dist/test/support/imds-server-cli.js'), '--host', '::', '--port', '80', '--keep-alive-ms', '60000', '--region', LAB_REGION], { PATH: SYSTEM_PATH });
    // With more than one node, the other nodes' agents reach it at the first node's address.
    const kubeHost = this.nodes.length > 1 ? '0.0.0.0' : '127.0.0.1';
    const kube = this.spawnIn(this.nodeNs, 'kube-api', [node, path.join(ROOT, 'dist/test/support/kube-api-server-cli.js'), '--host', kubeHost, '--port', String(KUBE_PORT), '--fixture', fixture], { PATH: SYSTEM_PATH });
    const moto = this.spawnIn(this.nodeNs, 'moto_server', [which('moto_server')!, '-H', NODE_IP, '-p', String(MOTO_PORT)], {
      PATH: `${process.env.PATH ?? ''}:${SYSTEM_PATH}`,
      HOME: process.env.HOME ?? '/root',
      ...(process.env.PYENV_ROOT ? { PYENV_ROOT: process.env.PYENV_ROOT } : {}),
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_DEFAULT_REGION: 'us-east-1',
      PYTHONUNBUFFERED: '1',
    });
    const proxy =
      this.stsProxy === undefined
        ? undefined
        : this.spawnIn(
            this.nodeNs,
            'sts-proxy',
            [node, path.join(ROOT, 'dist/test/support/sts-proxy-cli.js'), '--host', NODE_IP, '--port', String(STS_PROXY_PORT), '--control-port', String(STS_PROXY_CONTROL_PORT), '--target', this.motoUrl, ...(this.stsProxy.refuseAccessKeyIds ?? []).flatMap((k) => ['--refuse-key', k]), ...(this.stsProxy.answerRoles === undefined ? [] : ['--answer-roles', this.stsProxy.answerRoles])],
            { PATH: SYSTEM_PATH },
          );
    await Promise.all([imds.waitFor(/^ready /m), kube.waitFor(/^ready /m), proxy?.waitFor(/^ready /m), this.waitForHttp(this.nodeNs, `${this.motoUrl}/moto-api/`, moto, 30_000)]);
    if (proxy !== undefined) this.say(`STS proxy on ${this.stsUrl} in front of moto, refusing AssumeRole signed with ${(this.stsProxy?.refuseAccessKeyIds ?? []).join(', ') || '(no key)'}`);
    this.say(`fake EC2 metadata service on ${METADATA_IP}:80 and [${METADATA_IP6}]:80 (node role: node-role), moto STS on ${this.motoUrl}, Kubernetes test API on ${this.kubeUrl} (node ${NODE_NAME})`);
  }

  private kubeFixture(): { nodes: object[]; namespaces: object[]; pods: object[]; serviceAccounts: object[] } {
    const { namespaceLabels = {}, serviceAccounts: extraServiceAccounts = [], nodeTaints = [] } = this.fixtureExtras;
    const nodes = [{ metadata: { name: NODE_NAME, labels: { 'kubernetes.io/hostname': NODE_NAME } }, spec: nodeTaints.length > 0 ? { taints: nodeTaints } : {}, status: { addresses: [{ type: 'InternalIP', address: NODE_IP }, { type: 'InternalIP', address: NODE_IP6 }] } }];
    const names = [...new Set(['default', ...this.pods.map((p) => p.namespace), ...this.hostNetworkPods.map((p) => p.namespace ?? 'default'), ...Object.keys(namespaceLabels)])];
    const namespaces = names.map((name) => ({ metadata: { name, labels: namespaceLabels[name] ?? {} } }));
    // spec.serviceAccountName only where it is not `default` (the fixture of one-node labs is unchanged).
    const sa = (name: string | undefined): object => (name === undefined || name === 'default' ? {} : { serviceAccountName: name });
    const pods = this.pods.filter((p) => p.fixture).map((p) => ({
      metadata: { name: p.name, namespace: p.namespace, annotations: p.role === undefined ? {} : { 'iam.amazonaws.com/role': p.role } },
      spec: { nodeName: p.node, ...sa(p.serviceAccount), containers: [{ name: 'app', image: 'app' }] },
      status: { phase: 'Running', podIP: p.ip, podIPs: [{ ip: p.ip }, { ip: p.ip6 }] },
    }));
    for (const p of this.hostNetworkPods) {
      const n = this.node(p.node);
      pods.push({
        metadata: { name: p.name, namespace: p.namespace ?? 'default', annotations: p.role === undefined ? {} : { 'iam.amazonaws.com/role': p.role } },
        spec: { nodeName: n.name, hostNetwork: true, ...sa(p.serviceAccount), containers: [{ name: 'app', image: 'app' }] } as never,
        status: { phase: 'Running', podIP: n.ip, podIPs: [{ ip: n.ip }] },
      });
    }
    // Every namespace's default ServiceAccount, as the ServiceAccount controller creates it.
    const serviceAccounts: object[] = names.map((namespace) => ({ metadata: { name: 'default', namespace } }));
    for (const sa of extraServiceAccounts) serviceAccounts.push({ metadata: { name: sa.name, namespace: sa.namespace, annotations: sa.annotations ?? {} } });
    return { nodes, namespaces, pods, serviceAccounts };
  }

  /**
   * The token a pod's projected volume would hold (TokenRequest bound to the pod, asked from the
   * node namespace), written to a file in the lab directory; returns the file's path.
   */
  async podTokenFile(pod: string, opts: { namespace?: string; audience?: string; serviceAccount?: string; expirationSeconds?: number } = {}): Promise<string> {
    const namespace = opts.namespace ?? 'default';
    const body = JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences: [opts.audience ?? 'pods.eks.amazonaws.com'], expirationSeconds: opts.expirationSeconds ?? 86400, boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: pod } } });
    const r = await this.exec(this.nodeNs, ['curl', '-sS', '-X', 'POST', '-H', 'Content-Type: application/json', '-d', body, `${this.kubeUrl}/api/v1/namespaces/${namespace}/serviceaccounts/${opts.serviceAccount ?? 'default'}/token`]);
    const token = (JSON.parse(r.stdout) as { status?: { token?: string } }).status?.token;
    if (token === undefined) throw new Error(`TokenRequest for ${namespace}/${pod} failed: ${r.stdout} ${r.stderr}`);
    const file = path.join(mkdtempSync(path.join(this.dir, 'token-')), 'eks-pod-identity-token');
    writeFileSync(file, token);
    return file;
  }

  /**
   * The token the agent of `node` holds in broker mode (LabOptions.agentPods): the DaemonSet's
   * projected volume, ServiceAccount kube-system/podiam, audience podiam-broker, bound to the
   * agent's pod kube-system/podiam-<node>. Returns the file's path.
   */
  agentTokenFile(node: string = this.nodes[0]!.name, opts: { audience?: string } = {}): Promise<string> {
    return this.podTokenFile(agentPodName(this.node(node).name), { namespace: AGENT_NAMESPACE, serviceAccount: AGENT_SERVICE_ACCOUNT, audience: opts.audience ?? BROKER_AUDIENCE, expirationSeconds: 3600 });
  }

  /** What the STS proxy (LabOptions.stsProxy) saw so far: every call, with its outcome ('refused' for a refused key). */
  async stsCalls(): Promise<StsCall[]> {
    if (this.stsProxy === undefined) throw new Error('this lab has no STS proxy: LabOptions.stsProxy');
    const r = await this.curl(this.nodeNs, `http://${NODE_IP}:${STS_PROXY_CONTROL_PORT}/calls`);
    if (r.status !== 200) throw new Error(`STS proxy control: HTTP ${r.status}: ${r.body}`);
    return JSON.parse(r.body) as StsCall[];
  }

  /**
   * One request to the Kubernetes test API server (from the node namespace, where it listens);
   * the answer's body parsed as JSON.
   */
  async kube(method: string, urlPath: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; body: Record<string, any> }> {
    const args = ['curl', '-sS', '--max-time', '10', '-o', '-', '-w', '\n%{http_code}', '-X', method];
    if (body !== undefined) args.push('-H', `Content-Type: ${contentType}`, '--data-binary', JSON.stringify(body));
    const r = await this.exec(this.nodeNs, [...args, `${this.kubeUrl}${urlPath}`]);
    const cut = r.stdout.lastIndexOf('\n');
    const status = Number(r.stdout.slice(cut + 1)) || 0;
    if (status === 0) throw new Error(`${method} ${urlPath}: no answer from the test API server: ${r.stderr.trim()}`);
    return { status, body: JSON.parse(r.stdout.slice(0, cut)) as Record<string, any> };
  }

  /** The lab node's PATCHes the test API server applied (when, the patch, the new resourceVersion). */
  async nodePatches(): Promise<Array<{ time: number; name: string; resourceVersion: string; contentType: string; patch: unknown }>> {
    const r = await this.kube('GET', '/_test/node-patches');
    if (r.status !== 200) throw new Error(`GET /_test/node-patches: ${r.status}`);
    return r.body as unknown as Array<{ time: number; name: string; resourceVersion: string; contentType: string; patch: unknown }>;
  }

  private async waitForHttp(ns: string, url: string, proc: LabProcess, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.curl(ns, url, { timeoutS: 1 }).catch(() => undefined);
      if (r && r.status > 0 && r.status < 500) return;
      if (!proc.running) throw new Error(`${proc.name} exited during startup:\n${proc.output()}`);
      if (Date.now() > deadline) throw new Error(`${proc.name} did not answer ${url} within ${timeoutMs} ms:\n${proc.output()}`);
      await sleep(100);
    }
  }

  /** Starts a long-running process inside a lab namespace; destroy() stops it. */
  spawnIn(ns: string, name: string, argv: readonly string[], env: NodeJS.ProcessEnv): LabProcess {
    this.assertMine(ns);
    // Own process group: a Ctrl-C at the terminal reaches the lab's owner, which tears down in order.
    const child = spawn(IP, ['netns', 'exec', ns, ...argv], { env, cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const p = new LabProcess(name, child);
    this.processes.push(p);
    return p;
  }

  /**
   * The environment podiam gets in the lab: static node credentials for STS (moto), and the SDK's
   * own IMDS lookups off, so podiam never uses the node role itself.
   */
  podiamEnv(): NodeJS.ProcessEnv {
    return {
      PATH: SYSTEM_PATH,
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      // No AWS_REGION, as in the DaemonSet: podiam reads the node's region (LAB_REGION) from the metadata service.
      AWS_ENDPOINT_URL_STS: this.motoUrl,
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      AWS_CONFIG_FILE: '/dev/null',
      AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
    };
  }

  /** podiam's arguments in the lab (the DaemonSet's, for a Calico node), on `node` (default the first). */
  podiamArgs(extra: readonly string[] = [], node: string = this.nodes[0]!.name): string[] {
    const n = this.node(node);
    return [
      '--iptables',
      `--host-ip=${n.ip},${n.ip6}`,
      '--host-interface=cali+',
      `--metadata-addr=${METADATA_IP}`,
      `--node=${n.name}`,
      `--api-server=${n.kubeUrl}`,
      '--insecure',
      // In broker mode the role policy is the broker's (the agent refuses its flags).
      ...(extra.some((a) => a.startsWith('--broker=')) ? [] : [`--base-role-arn=${BASE_ROLE_ARN}`]),
      ...extra,
    ];
  }

  /**
   * Starts podiam in the node namespace. `wait`: 'ready' (default) waits for /readyz, 'none'
   * returns at once (e.g. to watch it fail).
   */
  async startPodiam(opts: { extraArgs?: readonly string[]; args?: readonly string[]; env?: NodeJS.ProcessEnv; wait?: 'ready' | 'none'; wrapper?: readonly string[]; node?: string } = {}): Promise<LabPodiam> {
    const node = this.node(opts.node);
    // args: exactly these (e.g. a rendered DaemonSet's), instead of the lab's own plus extraArgs.
    const args = opts.args === undefined ? this.podiamArgs(opts.extraArgs, node.name) : [...opts.args];
    const argv = [...(opts.wrapper ?? []), process.execPath, ...podiamArgv(args)];
    const child = spawn(IP, ['netns', 'exec', node.netns, ...argv], { env: { ...(opts.env ?? this.podiamEnv()), ...shebangEnv() }, cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const p = new LabPodiam(child, this, args, node);
    this.processes.push(p);
    if ((opts.wait ?? 'ready') === 'ready') await p.waitReady();
    return p;
  }

  /** Runs a command inside one of the lab's namespaces. */
  exec(ns: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.assertMine(ns);
    return run(IP, ['netns', 'exec', ns, ...argv], opts);
  }

  /**
   * A pod's environment for AWS clients: no AWS_* variables at all, HOME an empty directory
   * (so no ~/.aws), a system PATH. Whatever credentials a client finds, it found over IMDS.
   */
  cleanClientEnv(): NodeJS.ProcessEnv {
    const home = mkdtempSync(path.join(this.dir, 'home-'));
    return { PATH: SYSTEM_PATH, HOME: home, LANG: 'C.UTF-8' };
  }

  /** One HTTP request with curl inside `ns`; status 0 when the connection failed. */
  async curl(ns: string, url: string, opts: { method?: string; headers?: Record<string, string>; timeoutS?: number } = {}): Promise<HttpAnswer> {
    const args = ['curl', '-sS', '--max-time', String(opts.timeoutS ?? 5), '-o', '-', '-w', '\n%{http_code}', '-X', opts.method ?? 'GET'];
    for (const [k, v] of Object.entries(opts.headers ?? {})) args.push('-H', `${k}: ${v}`);
    args.push(url);
    const r = await this.exec(ns, args);
    const cut = r.stdout.lastIndexOf('\n');
    const status = Number(r.stdout.slice(cut + 1)) || 0;
    return { status, body: status === 0 ? r.stderr.trim() : r.stdout.slice(0, cut) };
  }

  /**
   * `/usr/bin/aws <args>` (AWS CLI v2) inside `ns` with a clean environment (cleanClientEnv());
   * the region is given on the command line, so the environment has no AWS_* variable at all.
   */
  awsCli(ns: string, args: readonly string[]): Promise<ExecResult> {
    return this.exec(ns, [AWS_CLI, ...args, '--region', 'us-east-1', '--output', 'json'], { env: this.cleanClientEnv(), timeoutMs: 30_000 });
  }

  /** scripts/lab/whoami-botocore.py inside `ns` (clean environment): botocore's default chain, then GetCallerIdentity. */
  botocoreWhoami(ns: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<ExecResult> {
    const py = pythonWithBotocore();
    if (py === undefined) throw new Error('no python3 with botocore on PATH (pip install botocore)');
    return this.exec(ns, [py, path.join(ROOT, 'scripts/lab/whoami-botocore.py'), this.motoUrl], { env: { ...this.cleanClientEnv(), ...extraEnv }, timeoutMs: 30_000 });
  }

  /** dist/scripts/lab/whoami-sdk.js inside `ns` (clean environment): the AWS SDK for JavaScript v3 default chain. */
  sdkWhoami(ns: string): Promise<ExecResult> {
    return this.exec(ns, [process.execPath, path.join(ROOT, 'dist/scripts/lab/whoami-sdk.js'), this.motoUrl], { env: this.cleanClientEnv(), timeoutMs: 30_000 });
  }

  /**
   * GetCallerIdentity at moto with credentials a pod was served (from the node namespace, with the
   * credentials in env): proves they are real STS credentials for the expected role.
   */
  async callerArn(creds: { AccessKeyId: string; SecretAccessKey: string; Token: string }): Promise<string> {
    const py = pythonWithBotocore();
    if (py === undefined) throw new Error('no python3 with botocore on PATH (pip install botocore)');
    const env = {
      ...this.cleanClientEnv(),
      AWS_ACCESS_KEY_ID: creds.AccessKeyId,
      AWS_SECRET_ACCESS_KEY: creds.SecretAccessKey,
      AWS_SESSION_TOKEN: creds.Token,
      AWS_EC2_METADATA_DISABLED: 'true',
    };
    const r = await this.exec(this.nodeNs, [py, path.join(ROOT, 'scripts/lab/whoami-botocore.py'), this.motoUrl], { env, timeoutMs: 30_000 });
    const out = JSON.parse(r.stdout.trim() || '{}') as { arn?: string; error?: string; message?: string };
    if (out.arn === undefined) throw new Error(`GetCallerIdentity failed: ${out.error ?? r.code}: ${out.message ?? r.stderr}`);
    return out.arn;
  }

  /** The node namespace's nat table, as `iptables-save -t nat` prints it. */
  async natTable(): Promise<string> {
    const r = await this.exec(this.nodeNs, ['iptables-save', '-t', 'nat']);
    if (r.code !== 0) throw new Error(`iptables-save failed: ${r.stderr}`);
    return r.stdout;
  }

  /** The node namespace's rules of one family (every table), as `iptables-save`/`ip6tables-save` print them. */
  async saved(family: 'ipv4' | 'ipv6' = 'ipv4', table?: string): Promise<string> {
    const r = await this.exec(this.nodeNs, [family === 'ipv4' ? 'iptables-save' : 'ip6tables-save', ...(table ? ['-t', table] : [])]);
    if (r.code !== 0) throw new Error(`iptables-save failed: ${r.stderr}`);
    return r.stdout;
  }

  /** podiam's lines in the node's tables: jumps to PODIAM, DNAT rules and guards (mangle FORWARD). */
  async podiamRules(family: 'ipv4' | 'ipv6' = 'ipv4'): Promise<{ chain: boolean; jumps: string[]; dnats: string[]; guards: string[]; all: string[] }> {
    const lines = (await this.saved(family)).split('\n');
    const all = lines.filter((l) => l.includes('PODIAM') || l.includes('podiam'));
    return {
      chain: lines.some((l) => l.startsWith(':PODIAM ')),
      jumps: lines.filter((l) => l.startsWith('-A PREROUTING') && l.includes('-j PODIAM')),
      dnats: lines.filter((l) => l.startsWith('-A PODIAM') && l.includes('-j DNAT')),
      guards: lines.filter((l) => l.startsWith('-A FORWARD') && l.includes('podiam: guard')),
      all,
    };
  }

  /** Runs iptables in the node namespace. */
  iptables(args: readonly string[]): Promise<ExecResult> {
    return this.exec(this.nodeNs, ['iptables', '-w', '5', ...args]);
  }

  /** Runs ip6tables in the node namespace. */
  ip6tables(args: readonly string[]): Promise<ExecResult> {
    return this.exec(this.nodeNs, ['ip6tables', '-w', '5', ...args]);
  }

  /** `podiam --cleanup` (with the DaemonSet's args, as an operator would run it) in the node namespace. */
  runCleanup(opts: { env?: NodeJS.ProcessEnv; wrapper?: readonly string[]; extraArgs?: readonly string[] } = {}): Promise<ExecResult> {
    return this.exec(this.nodeNs, [...(opts.wrapper ?? []), process.execPath, ...podiamArgv([...this.podiamArgs(opts.extraArgs), '--cleanup'])], { env: opts.env ?? { PATH: SYSTEM_PATH }, timeoutMs: 60_000 });
  }

  private assertMine(ns: string): void {
    if (!this.namespaces.includes(ns)) throw new Error(`${ns} is not a namespace of lab ${this.id}`);
  }

  /** Stops every process (SIGTERM, then SIGKILL), deletes every namespace and the scratch directory. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    await Promise.all(this.processes.map((p) => p.stop('SIGTERM', 3_000).catch(() => undefined)));
    this.destroySync();
  }

  /** The synchronous part of destroy(), also run from process 'exit' if destroy() never was. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const p of this.processes) {
      if (p.running) p.child.kill('SIGKILL');
    }
    for (const ns of this.namespaces.reverse()) deleteNetnsSync(ns);
    rmSync(this.dir, { recursive: true, force: true });
    liveLabs.delete(this.id);
    process.off('exit', this.exitHook);
  }
}

/** The agent's pod on `node` in the fixture (LabOptions.agentPods), as the DaemonSet names its pods (roughly). */
export function agentPodName(node: string): string {
  return `podiam-${node}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** For callers without a lab: `ip netns list` of this prefix (to assert teardown). */
export function labNamespaces(): string[] {
  return listNetns().filter((n) => n.startsWith(`${LAB_PREFIX}-`));
}

let python: string | null | undefined;
/** The absolute path of a python3 (from PATH) that can import botocore, or undefined. */
export function pythonWithBotocore(): string | undefined {
  if (python === undefined) {
    const r = spawnSync('python3', ['-c', 'import sys, botocore; print(sys.executable)'], { encoding: 'utf8', env: { ...process.env, PATH: `${process.env.PATH ?? ''}:${SYSTEM_PATH}` } });
    python = r.status === 0 && r.stdout.trim().startsWith('/') ? r.stdout.trim() : null;
  }
  return python ?? undefined;
}
