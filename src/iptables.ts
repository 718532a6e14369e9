/**
 * The only module that runs processes (iptables, ip6tables, their -save, conntrack). It owns the
 * interception rules of both address families for their whole life: install (idempotent),
 * reconcile (restore what someone deleted, kube2iam #9), keep on exit, and remove only on
 * `podiam --cleanup` — kube-proxy's convention for node agents that own dataplane rules.
 *
 * Per family (iptables for IPv4, ip6tables for IPv6; <md> is 169.254.169.254/32 or fd00:ec2::254/128):
 *   mangle FORWARD (first): -i <iface> -p tcp -d <md> --dport 80 -m comment --comment "podiam: guard ..." -j DROP
 *   nat PREROUTING (first): -p tcp -d <md> --dport 80 -m comment --comment "podiam: pod metadata requests" -j PODIAM
 *   nat PODIAM:             -i <iface> -p tcp -d <md> --dport 80 -m comment --comment "podiam: to podiam" -j DNAT --to-destination <host-ip>:<port>
 *
 * Why the guard lives in mangle FORWARD and DROPs (rather than a REJECT in filter FORWARD): a pod's
 * packet goes raw PREROUTING -> mangle PREROUTING -> nat PREROUTING (DNAT) -> routing -> mangle
 * FORWARD -> filter FORWARD. Traffic podiam serves was DNAT'd to the node's own address and so takes
 * INPUT, never FORWARD: the guard only ever sees what would reach the real metadata service,
 * i.e. pod traffic while the DNAT is missing. In filter FORWARD a REJECT could answer faster
 * (tcp-reset), but Calico keeps its cali-FORWARD jump first there and ACCEPTs policy-allowed
 * workload traffic, so a guard after it may never see the packet; filter is also the table CNIs
 * and firewalls flush. A DROP in mangle FORWARD runs before filter and is final. The price: during
 * a gap a pod's connection attempt times out (the SDKs give up after 1 s) instead of being reset —
 * and it never gets the node's credentials. While podiam restarts the DNAT stays, so pods are
 * refused at once by the closed port (a RST), and the guard is not involved.
 */
import type { Config } from './config.js';
import { FULL_CHECK_EVERY } from './config.js';
import type { ExecOptions, ExecResult, ExecRunner, LineProcess, LineSpawner } from './exec.js';
import { execaLines, execaRunner } from './exec.js';
import { PodiamError } from './errors.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

export type Family = 'ipv4' | 'ipv6';
/** The rules as metrics and /readyz name them: `dnat` is the PREROUTING jump and the DNAT together. */
export type RuleName = 'dnat' | 'guard';
export type RuleState = 'present' | 'missing' | 'error';

export class IptablesError extends PodiamError {
  constructor(message: string) {
    super('IptablesError', 500, message);
  }
}

export const CHAIN = 'PODIAM';
export const COMMENT_JUMP = 'podiam: pod metadata requests';
export const COMMENT_DNAT = 'podiam: to podiam';
export const COMMENT_GUARD = 'podiam: guard, pods never reach the real metadata service';

interface Rule {
  readonly name: 'jump' | 'dnat' | 'guard';
  readonly table: 'nat' | 'mangle';
  readonly chain: string;
  /** Inserted at position 1 (else appended to its own chain). */
  readonly first: boolean;
  readonly args: readonly string[];
}

export interface FamilyOptions {
  readonly family: Family;
  /** 169.254.169.254 or fd00:ec2::254. */
  readonly metadataAddr: string;
  readonly hostInterface: string;
  /** The node's address of this family to DNAT to; none: the guard alone (pods refused, never the node's role). */
  readonly hostIp: string | undefined;
  readonly appPort: number;
  readonly guard: boolean;
}

export interface FamilySpec {
  readonly family: Family;
  /** iptables or ip6tables. */
  readonly bin: string;
  readonly metadataAddr: string;
  readonly rules: readonly Rule[];
}

export function binaryOf(family: Family): string {
  return family === 'ipv4' ? 'iptables' : 'ip6tables';
}

/** Every rule of one family, in the order they are installed (guard first: no moment without one or the other). */
export function familySpec(o: FamilyOptions): FamilySpec {
  const prefix = o.family === 'ipv4' ? 32 : 128;
  const match = ['-p', 'tcp', '-d', `${o.metadataAddr}/${prefix}`, '--dport', '80'];
  const iface = o.hostInterface.startsWith('!') ? ['!', '-i', o.hostInterface.slice(1)] : ['-i', o.hostInterface];
  const rules: Rule[] = [];
  if (o.guard) {
    rules.push({ name: 'guard', table: 'mangle', chain: 'FORWARD', first: true, args: [...iface, ...match, '-m', 'comment', '--comment', COMMENT_GUARD, '-j', 'DROP'] });
  }
  if (o.hostIp !== undefined) {
    const to = o.family === 'ipv4' ? `${o.hostIp}:${o.appPort}` : `[${o.hostIp}]:${o.appPort}`;
    rules.push({ name: 'dnat', table: 'nat', chain: CHAIN, first: false, args: [...iface, ...match, '-m', 'comment', '--comment', COMMENT_DNAT, '-j', 'DNAT', '--to-destination', to] });
    rules.push({ name: 'jump', table: 'nat', chain: 'PREROUTING', first: true, args: [...match, '-m', 'comment', '--comment', COMMENT_JUMP, '-j', CHAIN] });
  }
  return { family: o.family, bin: binaryOf(o.family), metadataAddr: o.metadataAddr, rules };
}

/** A rule as an operator would type it (for logs, the README and --cleanup's report). */
export function commandLine(bin: string, rule: Rule): string {
  const op = rule.first ? `-I ${rule.chain} 1` : `-A ${rule.chain}`;
  return `${bin} -t ${rule.table} ${op} ${rule.args.map(quote).join(' ')}`;
}

function quote(arg: string): string {
  return /[\s"]/.test(arg) ? `"${arg.replace(/"/g, '\\"')}"` : arg;
}

/** The families podiam intercepts for this config: IPv4 always, IPv6 when --metadata-addr-ipv6 is set. */
export function familyOptions(config: Config): FamilyOptions[] {
  const families: FamilyOptions[] = [
    { family: 'ipv4', metadataAddr: config.metadataHost, hostInterface: config.hostInterface, hostIp: config.hostIp4, appPort: config.appPort, guard: config.iptablesGuard },
  ];
  if (config.metadataHost6 !== undefined) {
    families.push({ family: 'ipv6', metadataAddr: config.metadataHost6, hostInterface: config.hostInterface, hostIp: config.hostIp6, appPort: config.appPort, guard: config.iptablesGuard });
  }
  return families;
}

/** What one family can do on this node. */
async function preflight(exec: ExecRunner, bin: string): Promise<{ ok: true } | { ok: false; reason: string; missing: boolean }> {
  let r: ExecResult;
  try {
    r = await exec(bin, ['-w', '5', '-t', 'nat', '-S', 'PREROUTING']);
  } catch (err) {
    const missing = (err as { code?: string }).code === 'ENOENT';
    return { ok: false, missing, reason: missing ? `the ${bin} binary was not found on PATH (install iptables)` : `could not run ${bin}: ${(err as Error).message}` };
  }
  if (r.exitCode === 0) return { ok: true };
  const denied = /permission denied|must be root|Operation not permitted/i.test(r.stderr);
  return {
    ok: false,
    missing: false,
    reason: denied ? `no permission to change ${bin} rules (needs root or the NET_ADMIN capability): ${r.stderr.trim()}` : `${bin} -t nat -S PREROUTING failed: ${r.stderr.trim()}`,
  };
}

/** `iptables -V` ends in "(nf_tables)" or "(legacy)"; anything else (an old iptables) is legacy. */
async function backendOf(exec: ExecRunner, bin: string): Promise<'nf_tables' | 'legacy'> {
  const r = await exec(bin, ['-V']).catch(() => undefined);
  return r?.exitCode === 0 && /\(nf_tables\)/.test(r.stdout) ? 'nf_tables' : 'legacy';
}

/** The rules of one family: install, check, restore. */
class FamilyRules {
  private readonly states = new Map<RuleName, RuleState>();

  constructor(
    readonly spec: FamilySpec,
    private readonly exec: ExecRunner,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly conntrack: Conntrack,
  ) {
    for (const rule of spec.rules) this.set(labelOf(rule), 'missing');
  }

  stateOf(): Partial<Record<RuleName, RuleState>> {
    return Object.fromEntries(this.states);
  }

  present(): boolean {
    return [...this.states.values()].every((s) => s === 'present');
  }

  /** Installs whatever is missing; returns the rules it had to add. */
  async install(): Promise<Rule[]> {
    const added: Rule[] = [];
    for (const rule of this.spec.rules) {
      if (rule.chain === CHAIN && (await this.run(['-t', 'nat', '-S', CHAIN])).exitCode !== 0) await this.must(['-t', 'nat', '-N', CHAIN]);
      if ((await this.run(['-t', rule.table, '-C', rule.chain, ...rule.args])).exitCode === 0) continue;
      if (rule.chain === CHAIN) {
        // The chain holds exactly one rule: a changed --host-ip or port replaces the old one.
        await this.must(['-t', 'nat', '-F', CHAIN]);
        await this.must(['-t', 'nat', '-A', CHAIN, ...rule.args]);
      } else {
        await this.must(['-t', rule.table, '-I', rule.chain, '1', ...rule.args]);
      }
      added.push(rule);
    }
    for (const rule of this.spec.rules) this.set(labelOf(rule), 'present');
    // NAT is decided on a connection's first packet: one a pod opened to the real service while
    // a rule was missing would keep reaching it. Drop those entries now the rules are back.
    if (added.length > 0) await this.conntrack.flush(this.spec.family, this.spec.metadataAddr);
    return added;
  }

  /**
   * The cheap check of a reconcile round: one process, the rule a flush of either table would
   * take first (the PREROUTING jump; the guard when there is no DNAT). True when it is in place.
   */
  async sentinelPresent(): Promise<boolean> {
    const rule = this.spec.rules.find((r) => r.name === 'jump') ?? this.spec.rules[0]!;
    // Only the exit code: no pipes (the full check that follows a miss reports what went wrong).
    return (await this.run(['-t', rule.table, '-C', rule.chain, ...rule.args], { output: false })).exitCode === 0;
  }

  /**
   * The full check: each chain podiam writes to listed once (`-S`), each rule counted. Restores
   * missing rules (warn + counted) and deletes extra copies (two podiams restoring the same rule
   * at once during a rollout's overlap, or an older version's leftovers).
   */
  async reconcile(): Promise<void> {
    const listed = new Map<string, string[]>();
    const copies = new Map<Rule, number>();
    for (const rule of this.spec.rules) {
      const key = `${rule.table} ${rule.chain}`;
      if (!listed.has(key)) {
        const r = await this.run(['-t', rule.table, '-S', rule.chain]);
        // A missing chain (PODIAM deleted by hand) lists nothing: its rule is missing.
        listed.set(key, r.exitCode === 0 ? r.stdout.split('\n') : []);
      }
      copies.set(rule, countRule(listed.get(key)!, rule));
    }
    for (const [rule, n] of copies) {
      for (let extra = n; extra > 1; extra--) await this.must(['-t', rule.table, '-D', rule.chain, ...rule.args]);
      if (n > 1) this.log.warn('iptables rule found more than once, removed the extra copies', { family: this.spec.family, rule: commandLine(this.spec.bin, rule), copies: n });
    }
    if ([...copies.values()].every((n) => n > 0)) {
      for (const rule of this.spec.rules) this.set(labelOf(rule), 'present');
      return;
    }
    const added = await this.install();
    const restored = new Set(added.map(labelOf));
    for (const name of restored) {
      this.metrics.iptablesRestores.inc({ family: this.spec.family, rule: name });
      this.log.warn('iptables rule missing, restored it', { family: this.spec.family, rule: name, restored: added.filter((r) => labelOf(r) === name).map((r) => commandLine(this.spec.bin, r)) });
    }
  }

  markError(): void {
    for (const name of this.states.keys()) this.set(name, 'error');
  }

  private async run(args: readonly string[], options?: ExecOptions): Promise<ExecResult> {
    return this.exec(this.spec.bin, ['-w', '5', ...args], options);
  }

  private async must(args: readonly string[]): Promise<void> {
    const r = await this.run(args);
    if (r.exitCode !== 0) throw new IptablesError(`${this.spec.bin} ${args.join(' ')} failed: ${r.stderr.trim()}`);
  }

  private set(rule: RuleName, state: RuleState): void {
    this.states.set(rule, state);
    this.metrics.iptablesRule.set({ family: this.spec.family, rule }, state === 'present' ? 1 : 0);
  }
}

function labelOf(rule: Rule): RuleName {
  return rule.name === 'guard' ? 'guard' : 'dnat';
}

/** Deletes conntrack entries of connections that reached the real metadata service un-NAT'd. */
export class Conntrack {
  private warned = false;

  constructor(
    private readonly exec: ExecRunner,
    private readonly log: Logger,
  ) {}

  async flush(family: Family, metadataAddr: string): Promise<void> {
    // --reply-src <md>: only connections that were NOT DNAT'd (those to podiam answer from the
    // node's address), so pods' keep-alive connections to podiam itself are left alone.
    const args = ['-D', '-f', family, '-p', 'tcp', '--orig-dst', metadataAddr, '--orig-port-dst', '80', '--reply-src', metadataAddr];
    let r: ExecResult;
    try {
      r = await this.exec('conntrack', args);
    } catch (err) {
      return this.warnOnce(`conntrack could not run (${(err as Error).message}): connections pods opened to the metadata service before the rules were in place are not cut; install the conntrack package`);
    }
    // conntrack -D exits 1 when it deleted nothing ("0 flow entries have been deleted").
    const deleted = /(\d+) flow entr(?:y|ies) ha(?:s|ve) been deleted/.exec(r.stderr);
    if (deleted) {
      if (Number(deleted[1]) > 0) this.log.warn('cut connections that reached the real metadata service', { family, connections: Number(deleted[1]) });
      return;
    }
    if (r.exitCode !== 0) this.warnOnce(`conntrack ${args.join(' ')} failed: ${r.stderr.trim()}`);
  }

  private warnOnce(message: string): void {
    if (this.warned) return;
    this.warned = true;
    this.log.warn(message);
  }
}

export interface Interception {
  /** Installs every family's rules; a node without IPv6 keeps IPv4 (logged once). */
  ensure(): Promise<void>;
  startReconcile(intervalMs: number): void;
  /** Stops reconciling and waits for a running iptables call. The rules stay (see --cleanup). */
  stop(): Promise<void>;
  ready(): boolean;
  /** family -> rule -> state, for /readyz. */
  state(): Partial<Record<Family, Partial<Record<RuleName, RuleState>>>>;
  /** The families intercepted (after ensure()). */
  families(): Family[];
}

export function createInterception(config: Config, deps: { log: Logger; metrics: Metrics; exec?: ExecRunner; lines?: LineSpawner }): Interception {
  const watch = config.iptablesWatch ? (deps.lines ?? execaLines) : undefined;
  return new Rules(familyOptions(config).map(familySpec), deps.log, deps.metrics, deps.exec ?? execaRunner, watch);
}

export { FULL_CHECK_EVERY };

/**
 * After a deletion in one of podiam's chains, the check waits this long (to take a whole
 * `iptables-restore` or flush in one go) plus up to EVENT_JITTER_MS (so that two podiams on one
 * node during a rollout do not restore the same rule at the same instant), and no sooner than
 * EVENT_MIN_GAP_MS after the previous event-driven check (two agents fighting over the rules,
 * e.g. with different --host-ip, cost a check a second, not a busy loop).
 */
export const EVENT_DELAY_MS = 20;
export const EVENT_JITTER_MS = 100;
export const EVENT_MIN_GAP_MS = 1_000;
/** A watch that exited is started again after this long; meanwhile every round checks. */
export const WATCH_RESTART_MS = 30_000;
/** After the watch (re)starts, one full check covers deletions made before it subscribed. */
export const WATCH_SETTLE_MS = 1_000;

/**
 * The chains podiam writes to, as nftables names them (`ip nat PREROUTING`), and the tables
 * (`ip nat`): a deletion of either may have taken one of its rules.
 */
export function watchedNames(specs: readonly FamilySpec[]): Map<string, Family> {
  const names = new Map<string, Family>();
  for (const spec of specs) {
    const nft = spec.family === 'ipv4' ? 'ip' : 'ip6';
    for (const rule of spec.rules) {
      names.set(`${nft} ${rule.table}`, spec.family);
      names.set(`${nft} ${rule.table} ${rule.chain}`, spec.family);
    }
  }
  return names;
}

/**
 * The family whose rules a line of `nft -j monitor destroy` may have deleted, if any: a rule or a
 * chain deleted in one of podiam's chains, or one of its tables deleted. Anything else (another
 * table's churn, a line that is not JSON) is not podiam's business.
 */
export function deletionOf(line: string, watched: ReadonlyMap<string, Family>): Family | undefined {
  if (!line.startsWith('{"delete"') && !line.startsWith('{"destroy"')) return undefined;
  let event: Record<string, Record<string, { family?: string; table?: string; chain?: string; name?: string }>>;
  try {
    event = JSON.parse(line) as typeof event;
  } catch {
    return undefined;
  }
  const body = event.delete ?? event.destroy;
  if (body === undefined || typeof body !== 'object') return undefined;
  if (body.rule) return watched.get(`${body.rule.family} ${body.rule.table} ${body.rule.chain}`);
  if (body.chain) return watched.get(`${body.chain.family} ${body.chain.table} ${body.chain.name}`);
  if (body.table) return watched.get(`${body.table.family} ${body.table.name}`);
  return undefined;
}

/**
 * The kernel's word on deletions: one `nft -j monitor destroy` for the agent's life (it sleeps on a
 * netlink socket: no CPU while nothing changes). iptables-nft rules are nftables rules, so every
 * deletion in podiam's chains, whoever made it, arrives as a line. Not on an iptables-legacy node
 * (its rules are not nftables'), and not without the nft binary: there, and whenever the monitor
 * has exited, the rounds check as before.
 */
class RulesetWatch {
  private proc: LineProcess | undefined;
  private restart: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly spawn: LineSpawner,
    private readonly watched: ReadonlyMap<string, Family>,
    private readonly onDeletion: (family: Family) => void,
    private readonly onStart: () => void,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  /** True while the monitor runs: the rounds may skip their cheap checks. */
  get watching(): boolean {
    return this.proc !== undefined;
  }

  async start(): Promise<void> {
    if (this.stopped) return;
    let proc: LineProcess;
    try {
      proc = await this.spawn('nft', ['-j', 'monitor', 'destroy'], (line) => {
        const family = deletionOf(line, this.watched);
        if (family !== undefined) this.onDeletion(family);
        // The netlink socket overflowed (a burst of changes, e.g. a large iptables-restore):
        // events were dropped, so every family is checked.
        else if (line.includes('lost some netlink events')) for (const f of new Set(this.watched.values())) this.onDeletion(f);
      });
    } catch (err) {
      this.log.warn('iptables: the ruleset watch could not start; rules are checked every --iptables-reconcile-interval', { error: (err as Error).message });
      return;
    }
    if (this.stopped) return proc.stop();
    this.proc = proc;
    this.metrics.iptablesWatch.set(1);
    this.onStart();
    void proc.exited.then((r) => {
      if (this.proc === proc) this.proc = undefined;
      this.metrics.iptablesWatch.set(0);
      if (this.stopped) return;
      if (r.error !== undefined) {
        // Not installed (ENOENT) or not runnable: nothing to retry.
        this.log.warn('iptables: no ruleset watch (`nft` could not run; install nftables); rules are checked every --iptables-reconcile-interval', { error: r.error });
        return;
      }
      this.log.warn('iptables: the ruleset watch (nft monitor) exited; rules are checked every --iptables-reconcile-interval until it is back', { code: r.code, signal: r.signal, stderr: r.stderr, restartInMs: WATCH_RESTART_MS });
      this.restart = setTimeout(() => void this.start(), WATCH_RESTART_MS);
      this.restart.unref();
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restart) clearTimeout(this.restart);
    const proc = this.proc;
    this.proc = undefined;
    if (proc) {
      proc.stop();
      await proc.exited;
    }
  }
}

/** Copies of `rule` among `-S` lines of its chain (iptables prints options in its own order). */
export function countRule(lines: readonly string[], rule: Rule): number {
  const want = ruleKey(rule.args);
  let n = 0;
  for (const line of lines) {
    if (!line.startsWith(`-A ${rule.chain} `)) continue;
    if (ruleKey(splitWords(line).slice(2)) === want) n++;
  }
  return n;
}

/** A rule's options, order-free: `[!]opt value` pairs sorted, match-module loads (`-m tcp`) dropped. */
function ruleKey(words: readonly string[]): string {
  const pairs: string[] = [];
  let negate = false;
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (w === '!') {
      negate = true;
      continue;
    }
    if (w === '-m') {
      i++;
      continue;
    }
    const next = words[i + 1];
    const value = next !== undefined && !next.startsWith('-') && next !== '!' ? next : '';
    if (value !== '') i++;
    pairs.push(`${negate ? '!' : ''}${w}=${value}`);
    negate = false;
  }
  return pairs.sort().join(' ');
}

export class Rules implements Interception {
  private active: FamilyRules[] = [];
  private timer: NodeJS.Timeout | undefined;
  private busy: Promise<unknown> = Promise.resolve();
  private readonly conntrack: Conntrack;
  /** Families every rule of which is an nftables rule (iptables-nft): the watch sees their deletions. */
  private readonly nftFamilies = new Set<Family>();
  private watch: RulesetWatch | undefined;
  /** Families a deletion event hit, waiting for their check. */
  private readonly dirty = new Set<Family>();
  private eventTimer: NodeJS.Timeout | undefined;
  private lastEventCheck = 0;
  private stopping = false;
  private settleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly specs: readonly FamilySpec[],
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly exec: ExecRunner,
    private readonly lines?: LineSpawner,
  ) {
    this.conntrack = new Conntrack(exec, log);
  }

  async ensure(): Promise<void> {
    await this.serial(async () => {
      for (const spec of this.specs) {
        const pre = await preflight(this.exec, spec.bin);
        if (!pre.ok) {
          // IPv4 is the point of podiam: without it, no start. IPv6 is optional on the node.
          if (spec.family === 'ipv4') throw new IptablesError(`--iptables: ${pre.reason}`);
          this.log.warn('IPv6 metadata interception is off: no usable ip6tables on this node; IPv4 interception works', { reason: pre.reason });
          continue;
        }
        if (spec.rules.length === 0) continue;
        if (this.lines !== undefined && (await backendOf(this.exec, spec.bin)) === 'nf_tables') this.nftFamilies.add(spec.family);
        const family = new FamilyRules(spec, this.exec, this.log, this.metrics, this.conntrack);
        const added = await family.install();
        this.active.push(family);
        this.log.info('iptables rules in place', { family: spec.family, rules: spec.rules.map((r) => commandLine(spec.bin, r)), added: added.length });
      }
    });
  }

  startReconcile(intervalMs: number): void {
    // At most one reconcile queued or running: when iptables is slower than the interval (a huge
    // nat table, a contended xtables lock), skip ticks rather than pile up a backlog.
    let pending = false;
    let round = 0;
    const watchable = this.lines !== undefined && this.active.length > 0 && this.active.every((f) => this.nftFamilies.has(f.spec.family));
    if (this.lines !== undefined && this.active.length > 0 && !watchable) {
      this.log.info('iptables: rules are checked every --iptables-reconcile-interval (an iptables-legacy backend: no ruleset watch)');
    }
    if (watchable) {
      const watched = watchedNames(this.active.map((f) => f.spec));
      this.watch = new RulesetWatch(this.lines!, watched, (family) => this.deleted(family), () => this.afterWatchStart(), this.log, this.metrics);
      void this.watch.start();
    }
    this.timer = setInterval(() => {
      if (pending) return;
      const full = ++round % FULL_CHECK_EVERY === 0;
      // The watch reports every deletion: only the tenth round's full check remains, as a safety
      // net. A family in error or with a rule missing (an event-driven restore that failed) is
      // checked every round until whole again.
      if (!full && this.watch?.watching && this.active.every((f) => f.present())) return;
      pending = true;
      this.serial(() => this.check(this.active, full)).finally(() => {
        pending = false;
      });
    }, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.eventTimer) clearTimeout(this.eventTimer);
    this.eventTimer = undefined;
    if (this.settleTimer) clearTimeout(this.settleTimer);
    await this.watch?.stop();
    await this.busy;
  }

  /** One round: each family's cheap check (or the full one), restoring what is missing. */
  private async check(families: readonly FamilyRules[], full: boolean): Promise<void> {
    for (const family of families) {
      await (async () => {
        // A family in error or with a rule missing gets the full check every round until whole again.
        if (!full && family.present() && (await family.sentinelPresent())) return;
        await family.reconcile();
      })().catch((err: Error) => {
        family.markError();
        this.log.error('iptables reconcile failed', { family: family.spec.family, error: err.message });
      });
    }
  }

  /** A deletion in one of podiam's chains: that family's full check, soon. */
  private deleted(family: Family): void {
    this.dirty.add(family);
    this.scheduleEventCheck(EVENT_DELAY_MS + Math.random() * EVENT_JITTER_MS);
  }

  /**
   * Deletions made before the monitor subscribed are not reported: check everything after
   * WATCH_SETTLE_MS, and once more after ten times that (nft loads the ruleset before it listens,
   * which takes longer on a node with a large one).
   */
  private afterWatchStart(): void {
    const all = (): void => {
      for (const f of this.active) this.dirty.add(f.spec.family);
    };
    all();
    this.scheduleEventCheck(WATCH_SETTLE_MS);
    if (this.settleTimer) clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined;
      all();
      this.scheduleEventCheck(0);
    }, 10 * WATCH_SETTLE_MS);
    this.settleTimer.unref();
  }

  private scheduleEventCheck(delayMs: number): void {
    if (this.eventTimer !== undefined || this.stopping) return;
    const wait = Math.max(delayMs, this.lastEventCheck + EVENT_MIN_GAP_MS - Date.now());
    this.eventTimer = setTimeout(() => {
      this.eventTimer = undefined;
      this.lastEventCheck = Date.now();
      const families = this.active.filter((f) => this.dirty.has(f.spec.family));
      this.dirty.clear();
      // Restoring takes and re-adds rules (PODIAM is flushed before its rule is re-added): those
      // deletions come back as events and cost one more check, which finds everything in place.
      void this.serial(() => this.check(families, true)).finally(() => {
        if (this.dirty.size > 0) this.scheduleEventCheck(EVENT_DELAY_MS + Math.random() * EVENT_JITTER_MS);
      });
    }, wait);
    this.eventTimer.unref();
  }

  ready(): boolean {
    return this.active.length > 0 && this.active.every((f) => f.present());
  }

  state(): Partial<Record<Family, Partial<Record<RuleName, RuleState>>>> {
    return Object.fromEntries(this.active.map((f) => [f.spec.family, f.stateOf()]));
  }

  families(): Family[] {
    return this.active.map((f) => f.spec.family);
  }

  /** One iptables change at a time: reconcile never races ensure. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.busy.then(fn, fn);
    this.busy = next.catch(() => undefined);
    return next;
  }
}

// ---------------------------------------------------------------------------------------------
// podiam --cleanup

export interface CleanupReport {
  /** Every rule deleted, as `<bin> -t <table> -D ...`, and every chain deleted. */
  readonly removed: string[];
  /** Families skipped, and why (e.g. no ip6tables on this node). */
  readonly skipped: string[];
}

const TABLES = ['nat', 'mangle', 'filter'] as const;

/**
 * Removes every rule podiam ever installed, in both families and every table, whatever flags it
 * ran with: rules are found by their "podiam" comment or their PODIAM chain in `-save` output, so
 * a changed --host-interface or --host-ip between install and cleanup does not leave any behind.
 * Idempotent: a second run removes nothing and succeeds.
 */
export async function cleanup(exec: ExecRunner = execaRunner): Promise<CleanupReport> {
  const removed: string[] = [];
  const skipped: string[] = [];
  for (const family of ['ipv4', 'ipv6'] as const) {
    const bin = binaryOf(family);
    const pre = await preflight(exec, bin);
    if (!pre.ok) {
      if (family === 'ipv4' || !pre.missing && /permission|NET_ADMIN/i.test(pre.reason)) throw new IptablesError(`--cleanup: ${pre.reason}`);
      skipped.push(`${family}: ${pre.reason}`);
      continue;
    }
    for (const table of TABLES) {
      const saved = await exec(`${bin}-save`, ['-t', table]);
      if (saved.exitCode !== 0) {
        if (table === 'nat') throw new IptablesError(`--cleanup: ${bin}-save -t ${table} failed: ${saved.stderr.trim()}`);
        continue;
      }
      const lines = saved.stdout.split('\n');
      const chains = lines.filter((l) => /^:PODIAM\S* /.test(l)).map((l) => l.slice(1).split(' ')[0]!);
      for (const line of lines) {
        if (!line.startsWith('-A ')) continue;
        const [, chain, ...args] = splitWords(line);
        if (chain === undefined || chains.includes(chain) || !isPodiamRule(line)) continue;
        // Delete every copy (a crash-looping old version may have left more than one).
        const r = await exec(bin, ['-w', '5', '-t', table, '-D', chain, ...args]);
        if (r.exitCode !== 0) throw new IptablesError(`--cleanup: ${bin} -t ${table} -D ${chain} ${args.map(quote).join(' ')} failed: ${r.stderr.trim()}`);
        removed.push(`${bin} -t ${table} -D ${chain} ${args.map(quote).join(' ')}`);
      }
      for (const chain of chains) {
        for (const line of lines.filter((l) => l.startsWith(`-A ${chain} `))) removed.push(`${bin} -t ${table} -D ${chain} ${splitWords(line).slice(2).map(quote).join(' ')}`);
        for (const op of ['-F', '-X']) {
          const r = await exec(bin, ['-w', '5', '-t', table, op, chain]);
          if (r.exitCode !== 0) throw new IptablesError(`--cleanup: ${bin} -t ${table} ${op} ${chain} failed: ${r.stderr.trim()}`);
        }
        removed.push(`${bin} -t ${table} -X ${chain} (flushed and deleted)`);
      }
    }
  }
  return { removed, skipped };
}

function isPodiamRule(line: string): boolean {
  return /--comment "?podiam[: ]/.test(line) || /\s-j PODIAM\S*(\s|$)/.test(line);
}

/** iptables-save's quoting: words separated by spaces, "..." with \" inside. */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const m of line.matchAll(re)) words.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return words;
}
