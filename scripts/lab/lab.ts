/**
 * The node lab by hand, for debugging (see README "The node lab and the demo").
 *
 *   node dist/scripts/lab/lab.js up [--pods app-a=role-a,team-b/app-b=role-b,plain] [--no-podiam] [-- <podiam flags>]
 *   node dist/scripts/lab/lab.js cleanup [--quiet]
 *   node dist/scripts/lab/lab.js list
 *
 * `up` builds the lab, starts podiam (unless --no-podiam) with its log streaming here, prints the
 * commands to poke at it, and keeps it all until Ctrl-C, then tears it down.
 * `cleanup` removes namespaces left by labs whose process is gone. `list` shows lab namespaces.
 */
import type { LabPodSpec } from '../../test/support/lab.js';
import { AWS_CLI, Lab, METADATA_IP, METADATA_IP6, NODE_IP, APP_PORT, labNamespaces, removeLeftovers } from '../../test/support/lab.js';
import { podiamArgv } from '../../test/support/podiam-process.js';

const USAGE = `usage:
  lab.js up [--pods SPEC] [--no-podiam] [-- <extra podiam flags>]
      SPEC: comma-separated [namespace/]name[=role]; default app-a=app-a-role,team-b/app-b=app-b-role,plain
  lab.js cleanup [--quiet]   remove namespaces left by labs whose process is gone
  lab.js list                list lab namespaces
`;

function parsePods(spec: string): LabPodSpec[] {
  return spec
    .split(',')
    .filter(Boolean)
    .map((item) => {
      const [who, role] = item.split('=', 2) as [string, string | undefined];
      const [namespace, name] = who.includes('/') ? (who.split('/', 2) as [string, string]) : [undefined, who];
      return { name, ...(role ? { role } : {}), ...(namespace ? { namespace } : {}) };
    });
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

async function up(argv: string[]): Promise<number> {
  const dash = argv.indexOf('--');
  const own = dash < 0 ? argv : argv.slice(0, dash);
  const extra = dash < 0 ? [] : argv.slice(dash + 1);
  let pods = parsePods('app-a=app-a-role,team-b/app-b=app-b-role,plain');
  let withPodiam = true;
  for (let i = 0; i < own.length; i++) {
    const a = own[i]!;
    if (a === '--no-podiam') withPodiam = false;
    else if (a === '--pods') pods = parsePods(own[++i] ?? '');
    else if (a.startsWith('--pods=')) pods = parsePods(a.slice('--pods='.length));
    else {
      process.stderr.write(`lab: unknown argument ${a}\n${USAGE}`);
      return 2;
    }
  }

  const lab = await Lab.create({ pods, log: (l) => process.stdout.write(`lab: ${l}\n`) });
  let stopping = false;
  const done = new Promise<void>((resolve) => {
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      process.stdout.write('\nlab: tearing down\n');
      void lab.destroy().finally(resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });

  const envLine = Object.entries(lab.podiamEnv())
    .map(([k, v]) => `${k}=${shellQuote(String(v))}`)
    .join(' ');
  const podiamCmd = `ip netns exec ${lab.nodeNs} env -i ${envLine} node ${podiamArgv(lab.podiamArgs(extra)).map(shellQuote).join(' ')}`;
  if (withPodiam) {
    try {
      const podiam = await lab.startPodiam({ extraArgs: ['--debug', ...extra] });
      process.stdout.write(podiam.output().replace(/^/gm, 'podiam| '));
      const relay = (d: Buffer): void => void process.stdout.write(d.toString().replace(/^(?=.)/gm, 'podiam| '));
      podiam.child.stdout?.on('data', relay);
      podiam.child.stderr?.on('data', relay);
      void podiam.exited.then((e) => {
        if (!stopping) process.stdout.write(`lab: podiam exited (${e.code ?? e.signal}); the lab stays up until Ctrl-C\n`);
      });
    } catch (err) {
      process.stdout.write(`lab: podiam did not start: ${(err as Error).message}\n`);
    }
  }

  const [first] = lab.pods;
  const n = lab.nodeNs;
  const lines = [
    '',
    'The lab is up. In another terminal (as root):',
    '',
    ...(withPodiam ? [] : ['  # run podiam yourself in the node namespace (add --inspect after node to debug it):', `  ${podiamCmd}`, '']),
    ...(first
      ? [
          `  # be pod ${first.namespace}/${first.name} (${first.ip}, ${first.ip6})`,
          `  ip netns exec ${first.netns} curl -s http://${METADATA_IP}/latest/meta-data/iam/security-credentials/`,
          `  ip netns exec ${first.netns} curl -s http://[${METADATA_IP6}]/latest/meta-data/iam/security-credentials/`,
          `  ip netns exec ${first.netns} env -i HOME=$(mktemp -d) PATH=/usr/bin:/bin ${AWS_CLI} sts get-caller-identity --endpoint-url ${lab.motoUrl} --region us-east-1`,
          `  ip netns exec ${first.netns} bash     # a shell in the pod`,
          '',
        ]
      : []),
    '  # the node',
    `  ip netns exec ${n} iptables-save; ip netns exec ${n} ip6tables-save`,
    `  ip netns exec ${n} iptables -t nat -F                    # flush nat; the guard holds, podiam restores it within --iptables-reconcile-interval`,
    `  ip netns exec ${n} env PATH=/usr/sbin:/usr/bin:/sbin:/bin node ${podiamArgv(["--cleanup"]).map(shellQuote).join(" ")}   # uninstall (after stopping podiam)`,
    `  ip netns exec ${n} curl -s http://${NODE_IP}:${APP_PORT}/debug/store   # pods, roles, cached credentials (no secrets)`,
    `  ip netns exec ${n} curl -s http://${NODE_IP}:${APP_PORT}/metrics | grep ^podiam_`,
    `  ip netns exec ${n} tcpdump -ni any port 80 or port ${APP_PORT}`,
    '',
    `  namespaces: ${lab.namespaces.join(' ')}`,
    '',
    'Ctrl-C tears everything down.',
    '',
  ];
  process.stdout.write(lines.join('\n'));
  await done;
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'up':
      return up(rest);
    case 'cleanup': {
      const removed = removeLeftovers();
      if (!rest.includes('--quiet') || removed.length > 0) process.stdout.write(`lab: removed ${removed.length} leftover namespace(s)${removed.length ? `: ${removed.join(' ')}` : ''}\n`);
      return 0;
    }
    case 'list':
      process.stdout.write(labNamespaces().map((n) => `${n}\n`).join(''));
      return 0;
    default:
      process.stderr.write(USAGE);
      return cmd === undefined || cmd === '--help' || cmd === '-h' ? 0 : 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`lab: ${err.message}\n`);
    process.exit(1);
  },
);
