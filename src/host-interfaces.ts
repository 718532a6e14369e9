/**
 * Does --host-interface match the interfaces this node's pods use? A wrong pattern (docker0 on a
 * Calico node, whose pods sit behind cali*) intercepts nothing, and nothing else would say so.
 *
 * Read from files, no process per round: the node's interfaces from /sys/class/net, the routes of
 * the main table from /proc/net/route and /proc/net/ipv6_route (with hostNetwork, the node's),
 * and for each of this node's pod IPs the interface its longest-prefix route leaves by (the way
 * the node reaches the pod, so the way the pod's packets come in: Calico's and the AWS VPC CNI's
 * per-pod routes, a bridge's subnet route).
 */
import { readFile, readdir } from 'node:fs/promises';
import { isIP } from 'node:net';

export interface Route {
  readonly iface: string;
  readonly family: 4 | 6;
  readonly network: bigint;
  readonly prefixLength: number;
  readonly metric: number;
}

export interface HostInterfaceReport {
  /** The --host-interface pattern. */
  readonly pattern: string;
  /** Interfaces on the node that the pattern matches. */
  readonly matching: number;
  /** This node's pod IPs whose route leaves by a matching interface, and by another one (or none). */
  readonly podIps: { readonly matching: number; readonly other: number };
  /** Up to 5 pod IPs not behind a matching interface, with the interface they are behind. */
  readonly examples: ReadonlyArray<{ readonly ip: string; readonly iface: string | null }>;
}

/** iptables' -i semantics: `+` at the end matches any suffix; a leading `!` inverts. */
export function interfaceMatcher(pattern: string): (iface: string) => boolean {
  const negate = pattern.startsWith('!');
  const body = negate ? pattern.slice(1) : pattern;
  const match = body.endsWith('+') ? (i: string) => i.startsWith(body.slice(0, -1)) : (i: string) => i === body;
  return negate ? (i) => !match(i) : match;
}

/** /proc/net/route: hex, little-endian IPv4 destination and mask. Up routes (flag 0x1) only. */
export function parseRoutes4(text: string): Route[] {
  const routes: Route[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || (parseInt(f[3]!, 16) & 1) === 0) continue;
    const dest = leToBig(f[1]!);
    const mask = leToBig(f[7]!);
    routes.push({ iface: f[0]!, family: 4, network: dest, prefixLength: popcount(mask), metric: Number(f[6]) });
  }
  return routes;
}

/** /proc/net/ipv6_route: destination (32 hex), prefix length (hex), …, metric (hex), …, flags, iface. */
export function parseRoutes6(text: string): Route[] {
  const routes: Route[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || (parseInt(f[8]!, 16) & 1) === 0) continue;
    // RTF_REJECT (0x200): unreachable routes (the kernel's catch-all on lo) lead nowhere.
    if ((parseInt(f[8]!, 16) & 0x200) !== 0) continue;
    routes.push({ iface: f[9]!, family: 6, network: BigInt(`0x${f[0]}`), prefixLength: parseInt(f[1]!, 16), metric: parseInt(f[5]!, 16) });
  }
  return routes;
}

/** The interface of the longest-prefix route to `ip` (lowest metric among equals), or null. */
export function routeOf(ip: string, routes: readonly Route[]): string | null {
  const family = isIP(ip);
  if (family === 0) return null;
  const bits = family === 4 ? 32 : 128;
  const addr = family === 4 ? ipv4ToBig(ip) : ipv6ToBig(ip);
  let best: Route | undefined;
  for (const r of routes) {
    if (r.family !== family) continue;
    const shift = BigInt(bits - r.prefixLength);
    if (r.prefixLength > 0 && addr >> shift !== r.network >> shift) continue;
    if (best === undefined || r.prefixLength > best.prefixLength || (r.prefixLength === best.prefixLength && r.metric < best.metric)) best = r;
  }
  return best?.iface ?? null;
}

export interface NodeFiles {
  readonly interfaces: () => Promise<string[]>;
  readonly routes4: () => Promise<string>;
  readonly routes6: () => Promise<string>;
}

export const nodeFiles: NodeFiles = {
  interfaces: () => readdir('/sys/class/net'),
  routes4: () => readFile('/proc/net/route', 'utf8').catch(() => ''),
  routes6: () => readFile('/proc/net/ipv6_route', 'utf8').catch(() => ''),
};

export async function checkHostInterface(pattern: string, podIps: Iterable<string>, files: NodeFiles = nodeFiles): Promise<HostInterfaceReport> {
  const [interfaces, r4, r6] = await Promise.all([files.interfaces(), files.routes4(), files.routes6()]);
  return report(pattern, [...podIps], interfaces, r4, r6);
}

/**
 * checkHostInterface, computed again only when something it reads changed (the files' text, the
 * interfaces, the pod IPs): an idle node's round is three small reads and a comparison.
 */
export function memoizedCheck(pattern: string, files: NodeFiles): (podIps: Iterable<string>) => Promise<HostInterfaceReport> {
  let lastKey: string | undefined;
  let last: HostInterfaceReport | undefined;
  return async (podIps) => {
    const [interfaces, r4, r6] = await Promise.all([files.interfaces(), files.routes4(), files.routes6()]);
    const ips = [...podIps];
    const key = `${interfaces.join(' ')}\n${ips.join(' ')}\n${r4}\n${r6}`;
    if (key !== lastKey || last === undefined) {
      last = report(pattern, ips, interfaces, r4, r6);
      lastKey = key;
    }
    return last;
  };
}

function report(pattern: string, podIps: readonly string[], interfaces: readonly string[], r4: string, r6: string): HostInterfaceReport {
  const matches = interfaceMatcher(pattern);
  const routes = [...parseRoutes4(r4), ...parseRoutes6(r6)];
  let matching = 0;
  let other = 0;
  const examples: Array<{ ip: string; iface: string | null }> = [];
  for (const ip of podIps) {
    const iface = routeOf(ip, routes);
    if (iface !== null && matches(iface)) {
      matching++;
    } else {
      other++;
      if (examples.length < 5) examples.push({ ip, iface });
    }
  }
  return { pattern, matching: interfaces.filter((i) => i !== 'lo' && matches(i)).length, podIps: { matching, other }, examples };
}

function leToBig(hex: string): bigint {
  // 8 hex digits, the address's bytes in little-endian order.
  const bytes = hex.match(/../g) ?? [];
  return BigInt(`0x${bytes.reverse().join('') || '0'}`);
}

function popcount(n: bigint): number {
  let c = 0;
  for (let v = n; v > 0n; v >>= 1n) c += Number(v & 1n);
  return c;
}

function ipv4ToBig(ip: string): bigint {
  return ip.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function ipv6ToBig(ip: string): bigint {
  const [head = '', tail = ''] = ip.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = ip.includes('::') ? (tail === '' ? [] : tail.split(':')) : [];
  const groups = ip.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g || '0', 16)), 0n);
}

export interface HostInterfaceMonitorDeps {
  readonly pattern: string;
  /** This node's pods' IPs (hostNetwork pods excluded: they use the node's own address). */
  readonly podIps: () => Iterable<string>;
  readonly log: { warn(message: string, fields?: Record<string, unknown>): void; info(message: string, fields?: Record<string, unknown>): void };
  readonly report: (r: HostInterfaceReport) => void;
  /** A warning Event on the node (EventRecorder.nodeWarning); undefined without --events or --node. */
  readonly nodeWarning?: (reason: string, message: string) => void;
  readonly files?: NodeFiles;
  /** An Event again at most this often while nothing matches. */
  readonly repeatEventMs?: number;
}

/** A pod change is checked this long after it (a burst of pod events is one check). */
export const SOON_MS = 1_000;

/**
 * Runs checkHostInterface at start, within SOON_MS of a change of this node's pods, and every
 * interval (routes and interfaces that change without a pod): the last report for /readyz and the
 * metrics; a warning (log and an Event on the node) when this node has pods and none of their IPs
 * is behind a matching interface: podiam intercepts none of them.
 */
export class HostInterfaceMonitor {
  private last: HostInterfaceReport | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private failingSinceEvent: number | undefined;
  private soonTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly checker: (podIps: Iterable<string>) => Promise<HostInterfaceReport>;

  constructor(private readonly deps: HostInterfaceMonitorDeps) {
    this.checker = memoizedCheck(deps.pattern, deps.files ?? nodeFiles);
  }

  state(): HostInterfaceReport | undefined {
    return this.last;
  }

  check(): Promise<void> {
    this.running = this.running.then(async () => {
      const r = await this.checker(this.deps.podIps());
      const previous = this.last;
      this.last = r;
      this.deps.report(r);
      const none = r.podIps.other > 0 && r.podIps.matching === 0;
      if (none) {
        const now = Date.now();
        if (this.failingSinceEvent === undefined || now - this.failingSinceEvent >= (this.deps.repeatEventMs ?? 600_000)) {
          this.failingSinceEvent = now;
          const message = `--host-interface=${r.pattern} matches ${r.matching} interface(s) on this node, and none of this node's ${r.podIps.other} pod IP(s) is routed through one (e.g. ${r.examples.map((e) => `${e.ip} via ${e.iface ?? 'no route'}`).join(', ')}): podiam intercepts none of their metadata requests. Set --host-interface to the CNI's pod interfaces (calico: cali+, AWS VPC CNI: eni+, Cilium: lxc+, bridge/flannel: cni0).`;
          this.deps.log.warn('--host-interface matches no pod', { hostInterface: r.pattern, interfacesMatching: r.matching, podIps: r.podIps, examples: r.examples });
          this.deps.nodeWarning?.('HostInterfaceMatchesNoPod', message);
        }
      } else {
        if (this.failingSinceEvent !== undefined) this.deps.log.info('--host-interface matches this node\'s pods again', { hostInterface: r.pattern, podIps: r.podIps });
        this.failingSinceEvent = undefined;
        if (r.podIps.other > 0 && (previous === undefined || previous.podIps.other === 0)) {
          this.deps.log.warn('some pods are not behind --host-interface: their metadata requests are not intercepted', { hostInterface: r.pattern, podIps: r.podIps, examples: r.examples });
        }
      }
    }).catch((err: Error) => this.deps.log.warn('could not check --host-interface against the node\'s routes', { error: err.message }));
    return this.running;
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => void this.check(), intervalMs);
    this.timer.unref();
  }

  /**
   * This node's pods changed (one came, changed or went): check within SOON_MS, once for a
   * burst. What the check reads changes with the pods, so this, and not a short period, is what
   * keeps the report current.
   */
  soon(): void {
    if (this.soonTimer !== undefined || this.stopped) return;
    this.soonTimer = setTimeout(() => {
      this.soonTimer = undefined;
      void this.check();
    }, SOON_MS);
    this.soonTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.soonTimer) clearTimeout(this.soonTimer);
    await this.running;
  }
}
