import { Writable } from 'node:stream';
import type { ExecResult, ExecRunner, LineProcess, LineSpawner } from '../../src/exec.js';
import { COMMENT_GUARD, IptablesError, cleanup, commandLine, createInterception, deletionOf, familyOptions, familySpec, splitWords, watchedNames } from '../../src/iptables.js';
import { parseConfig } from '../../src/config.js';
import type { Config } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';

const OK: ExecResult = { exitCode: 0, stdout: '', stderr: '' };
const MUTATING = new Set(['-N', '-A', '-I', '-D', '-F', '-X']);
const BUILTIN: Record<string, string[]> = { nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'], mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'], filter: ['INPUT', 'FORWARD', 'OUTPUT'] };

/**
 * A fake iptables/ip6tables (and their -save, and conntrack): records every argv and keeps, per
 * binary, tables of chains of rules (each rule its argument list joined by spaces), answering
 * -S, -N, -C, -A, -I, -D, -F, -X and -save like iptables does.
 */
/** A comment with spaces quoted, as iptables -S and iptables-save print it. */
function quoteComment(rule: string): string {
  return rule.replace(/--comment (podiam: [^-]*?) (-j|-m)/g, (_, c: string, next: string) => `--comment "${c}" ${next}`);
}

class FakeNode {
  readonly calls: Array<{ file: string; args: readonly string[] }> = [];
  readonly tables = new Map<string, Map<string, string[]>>();
  /** Binaries that are not installed. */
  readonly missing = new Set<string>();
  /** When set, every iptables command fails with this result (e.g. no permission). */
  failWith: ExecResult | undefined;
  /** conntrack -D's answer. */
  conntrackDeleted = 0;
  /** What `iptables -V` says it is built on. */
  backend: 'nf_tables' | 'legacy' = 'legacy';

  readonly exec: ExecRunner = async (file, args) => {
    this.calls.push({ file, args: [...args] });
    if (this.missing.has(file.replace(/-save$/, ''))) throw Object.assign(new Error(`spawn ${file} ENOENT`), { code: 'ENOENT' });
    if (args[0] === '-V') return { exitCode: 0, stdout: `${file} v1.8.9 (${this.backend})\n`, stderr: '' };
    if (file === 'conntrack') return { exitCode: this.conntrackDeleted > 0 ? 0 : 1, stdout: '', stderr: `conntrack v1.4.7 (conntrack-tools): ${this.conntrackDeleted} flow entries have been deleted.\n` };
    if (this.failWith) return this.failWith;
    if (file.endsWith('-save')) return this.save(file.replace(/-save$/, ''), args[1]!);
    return this.apply(file, args);
  };

  chains(bin: string, table: string): Map<string, string[]> {
    const key = `${bin}/${table}`;
    let t = this.tables.get(key);
    if (!t) {
      t = new Map(BUILTIN[table]!.map((c) => [c, [] as string[]]));
      this.tables.set(key, t);
    }
    return t;
  }

  rules(bin: string, table: string, chain: string): string[] | undefined {
    return this.chains(bin, table).get(chain);
  }

  /** The table-changing commands issued, as "bin table op chain". */
  mutations(from = 0): string[] {
    return this.calls.slice(from).flatMap(({ file, args }) => {
      const op = parse(args);
      return op && MUTATING.has(op.op) ? [`${file} ${op.table} ${op.op} ${op.chain}`] : [];
    });
  }

  /** Deletes a rule by position, as an operator would. */
  deleteAt(bin: string, table: string, chain: string, pos: number): void {
    this.rules(bin, table, chain)!.splice(pos - 1, 1);
  }

  private save(bin: string, table: string): ExecResult {
    const chains = this.chains(bin, table);
    const quote = quoteComment;
    const lines = [`*${table}`, ...[...chains.keys()].map((c) => `:${c} ${BUILTIN[table]!.includes(c) ? 'ACCEPT' : '-'} [0:0]`)];
    for (const [c, rules] of chains) for (const r of rules) lines.push(`-A ${c} ${quote(r)}`);
    lines.push('COMMIT');
    return { exitCode: 0, stdout: lines.join('\n') + '\n', stderr: '' };
  }

  private apply(bin: string, args: readonly string[]): ExecResult {
    const parsed = parse(args);
    if (!parsed) return { exitCode: 2, stdout: '', stderr: 'iptables: bad arguments' };
    const { table, op, chain, rest } = parsed;
    const chains = this.chains(bin, table);
    const rules = chains.get(chain);
    const noChain: ExecResult = { exitCode: 1, stdout: '', stderr: 'iptables: No chain/target/match by that name.' };
    const badRule: ExecResult = { exitCode: 1, stdout: '', stderr: 'iptables: Bad rule (does a matching rule exist in that chain?).' };
    switch (op) {
      case '-S':
        if (!rules) return noChain;
        return { exitCode: 0, stdout: [`-N ${chain}`, ...rules.map((r) => `-A ${chain} ${quoteComment(r)}`)].join('\n'), stderr: '' };
      case '-N':
        if (rules) return { exitCode: 1, stdout: '', stderr: 'iptables: Chain already exists.' };
        chains.set(chain, []);
        return OK;
      case '-C':
        if (!rules) return noChain;
        return rules.includes(rest.join(' ')) ? OK : badRule;
      case '-A':
        if (!rules) return noChain;
        rules.push(rest.join(' '));
        return OK;
      case '-I':
        if (!rules) return noChain;
        rules.splice(Number(rest[0]) - 1, 0, rest.slice(1).join(' '));
        return OK;
      case '-D': {
        if (!rules) return noChain;
        const i = rules.indexOf(rest.join(' '));
        if (i === -1) return badRule;
        rules.splice(i, 1);
        return OK;
      }
      case '-F':
        if (!rules) return noChain;
        rules.length = 0;
        return OK;
      case '-X': {
        if (!rules) return noChain;
        if (rules.length > 0) return { exitCode: 1, stdout: '', stderr: 'iptables: Directory not empty.' };
        if ([...chains.values()].some((rs) => rs.some((r) => r.endsWith(`-j ${chain}`)))) return { exitCode: 1, stdout: '', stderr: 'iptables: Too many links.' };
        chains.delete(chain);
        return OK;
      }
      default:
        return { exitCode: 2, stdout: '', stderr: `iptables: unknown option ${op}` };
    }
  }
}

function parse(args: readonly string[]): { table: string; op: string; chain: string; rest: string[] } | undefined {
  const a = [...args];
  if (a[0] === '-w') a.splice(0, 2);
  if (a[0] !== '-t') return undefined;
  const [table, op, chain, ...rest] = a.slice(1);
  return table === undefined || op === undefined || chain === undefined ? undefined : { table, op, chain, rest };
}

function config(extra: string[] = []): Config {
  const r = parseConfig(['--iptables', '--host-ip=10.0.1.23,fd00:10::23', '--host-interface=cali+', ...extra], {});
  if (r.kind !== 'run') throw new Error('expected a run config');
  return r.config;
}

/** A fake `nft monitor`: the test writes its lines and ends it. */
class FakeMonitor {
  readonly spawned: Array<{ file: string; args: readonly string[] }> = [];
  private onLine: ((line: string) => void) | undefined;
  private end: ((r: { code: number | undefined; signal: string | undefined; stderr: string }) => void) | undefined;
  stopped = 0;

  readonly spawn: LineSpawner = async (file, args, onLine) => {
    this.spawned.push({ file, args });
    this.onLine = onLine;
    const exited = new Promise<{ code: number | undefined; signal: string | undefined; stderr: string }>((resolve) => (this.end = resolve));
    const proc: LineProcess = {
      exited,
      stop: () => {
        this.stopped++;
        this.end?.({ code: undefined, signal: 'SIGTERM', stderr: '' });
      },
    };
    return proc;
  };

  line(line: string): void {
    this.onLine!(line);
  }

  exit(code: number, stderr: string): void {
    this.end!({ code, signal: undefined, stderr });
  }
}

function setup(extra: string[] = [], fake = new FakeNode(), monitor = new FakeMonitor()) {
  const metrics = createMetrics({ defaultMetrics: false });
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      const info = JSON.parse(chunk.toString()) as { message: string; level: string };
      lines.push(`${info.level} ${info.message}`);
      done();
    },
  });
  const log = createLogger({ format: 'json', level: 'info', stream });
  const rules = createInterception(config(extra), { log, metrics, exec: fake.exec, lines: monitor.spawn });
  return { fake, metrics, rules, lines, monitor };
}

async function metric(metrics: ReturnType<typeof createMetrics>, which: 'iptablesRule' | 'iptablesRestores', family: string, rule: string): Promise<number | undefined> {
  return (await metrics[which].get()).values.find((v) => v.labels.family === family && v.labels.rule === rule)?.value;
}

const JUMP4 = '-p tcp -d 169.254.169.254/32 --dport 80 -m comment --comment podiam: pod metadata requests -j PODIAM';
const DNAT4 = '-i cali+ -p tcp -d 169.254.169.254/32 --dport 80 -m comment --comment podiam: to podiam -j DNAT --to-destination 10.0.1.23:8181';
const GUARD4 = `-i cali+ -p tcp -d 169.254.169.254/32 --dport 80 -m comment --comment ${COMMENT_GUARD} -j DROP`;
const JUMP6 = '-p tcp -d fd00:ec2::254/128 --dport 80 -m comment --comment podiam: pod metadata requests -j PODIAM';
const DNAT6 = '-i cali+ -p tcp -d fd00:ec2::254/128 --dport 80 -m comment --comment podiam: to podiam -j DNAT --to-destination [fd00:10::23]:8181';
const GUARD6 = `-i cali+ -p tcp -d fd00:ec2::254/128 --dport 80 -m comment --comment ${COMMENT_GUARD} -j DROP`;

describe('familySpec: the rules of each family', () => {
  it('IPv4: guard (mangle FORWARD, first), DNAT (nat PODIAM), jump (nat PREROUTING, first), in that order', () => {
    const spec = familySpec({ family: 'ipv4', metadataAddr: '169.254.169.254', hostInterface: 'cali+', hostIp: '10.0.1.23', appPort: 8181, guard: true });
    expect(spec.bin).toBe('iptables');
    expect(spec.rules.map((r) => commandLine(spec.bin, r))).toEqual([
      `iptables -t mangle -I FORWARD 1 ${GUARD4.replace(COMMENT_GUARD, `"${COMMENT_GUARD}"`)}`,
      'iptables -t nat -A PODIAM -i cali+ -p tcp -d 169.254.169.254/32 --dport 80 -m comment --comment "podiam: to podiam" -j DNAT --to-destination 10.0.1.23:8181',
      'iptables -t nat -I PREROUTING 1 -p tcp -d 169.254.169.254/32 --dport 80 -m comment --comment "podiam: pod metadata requests" -j PODIAM',
    ]);
  });

  it('IPv6: the same design with ip6tables, /128 and a bracketed DNAT target', () => {
    const spec = familySpec({ family: 'ipv6', metadataAddr: 'fd00:ec2::254', hostInterface: 'cali+', hostIp: 'fd00:10::23', appPort: 8181, guard: true });
    expect(spec.bin).toBe('ip6tables');
    expect(spec.rules.map((r) => [r.table, r.chain, r.args.join(' ')])).toEqual([
      ['mangle', 'FORWARD', GUARD6],
      ['nat', 'PODIAM', DNAT6],
      ['nat', 'PREROUTING', JUMP6],
    ]);
  });

  it('--iptables-guard=false: no guard; no host address of the family: the guard alone', () => {
    const noGuard = familySpec({ family: 'ipv4', metadataAddr: '169.254.169.254', hostInterface: 'eni+', hostIp: '10.0.0.1', appPort: 9000, guard: false });
    expect(noGuard.rules.map((r) => r.name)).toEqual(['dnat', 'jump']);
    expect(noGuard.rules[0]!.args).toContain('10.0.0.1:9000');
    const guardOnly = familySpec({ family: 'ipv6', metadataAddr: 'fd00:ec2::254', hostInterface: 'cali+', hostIp: undefined, appPort: 8181, guard: true });
    expect(guardOnly.rules.map((r) => r.name)).toEqual(['guard']);
  });

  it('an inverted interface (!eth0) becomes "! -i eth0" in the guard and the DNAT', () => {
    const spec = familySpec({ family: 'ipv4', metadataAddr: '169.254.169.254', hostInterface: '!eth0', hostIp: '10.0.0.1', appPort: 8181, guard: true });
    for (const r of spec.rules.filter((x) => x.name !== 'jump')) expect(r.args.slice(0, 3)).toEqual(['!', '-i', 'eth0']);
  });
});

describe('ensure', () => {
  it('installs every rule of both families, guard first, and flushes conntrack for both', async () => {
    const { fake, rules, metrics } = setup();
    await rules.ensure();
    expect(fake.rules('iptables', 'mangle', 'FORWARD')).toEqual([GUARD4]);
    expect(fake.rules('iptables', 'nat', 'PODIAM')).toEqual([DNAT4]);
    expect(fake.rules('iptables', 'nat', 'PREROUTING')).toEqual([JUMP4]);
    expect(fake.rules('ip6tables', 'mangle', 'FORWARD')).toEqual([GUARD6]);
    expect(fake.rules('ip6tables', 'nat', 'PODIAM')).toEqual([DNAT6]);
    expect(fake.rules('ip6tables', 'nat', 'PREROUTING')).toEqual([JUMP6]);
    // The guard goes in before the DNAT: there is never a moment with neither.
    const m = fake.mutations();
    expect(m.indexOf('iptables mangle -I FORWARD')).toBeLessThan(m.indexOf('iptables nat -A PODIAM'));
    expect(fake.calls.filter((c) => c.file === 'conntrack').map((c) => c.args.join(' '))).toEqual([
      '-D -f ipv4 -p tcp --orig-dst 169.254.169.254 --orig-port-dst 80 --reply-src 169.254.169.254',
      '-D -f ipv6 -p tcp --orig-dst fd00:ec2::254 --orig-port-dst 80 --reply-src fd00:ec2::254',
    ]);
    expect(rules.ready()).toBe(true);
    expect(rules.state()).toEqual({ ipv4: { dnat: 'present', guard: 'present' }, ipv6: { dnat: 'present', guard: 'present' } });
    for (const family of ['ipv4', 'ipv6']) for (const rule of ['dnat', 'guard']) expect(await metric(metrics, 'iptablesRule', family, rule)).toBe(1);
  });

  it('adopts rules already in place (a restart) without duplicates and without touching anything', async () => {
    const fake = new FakeNode();
    await setup([], fake).rules.ensure();
    const from = fake.calls.length;
    const again = setup([], fake);
    await again.rules.ensure();
    expect(fake.mutations(from)).toEqual([]);
    expect(fake.calls.slice(from).some((c) => c.file === 'conntrack')).toBe(false);
    expect(fake.rules('iptables', 'nat', 'PREROUTING')).toEqual([JUMP4]);
    expect(fake.rules('iptables', 'mangle', 'FORWARD')).toEqual([GUARD4]);
    expect(again.rules.ready()).toBe(true);
  });

  it('a changed --host-ip replaces the DNAT rule in the chain (one rule, the new target)', async () => {
    const fake = new FakeNode();
    await setup([], fake).rules.ensure();
    await setup(['--host-ip=10.0.1.99'], fake).rules.ensure();
    expect(fake.rules('iptables', 'nat', 'PODIAM')).toEqual([DNAT4.replace('10.0.1.23', '10.0.1.99')]);
  });

  it('no iptables: IptablesError naming the binary; nothing else tried', async () => {
    const fake = new FakeNode();
    fake.missing.add('iptables');
    const { rules } = setup([], fake);
    await expect(rules.ensure()).rejects.toThrow(new IptablesError('--iptables: the iptables binary was not found on PATH (install iptables)'));
    expect(fake.calls).toHaveLength(1);
  });

  it('no NET_ADMIN: IptablesError saying so', async () => {
    const fake = new FakeNode();
    fake.failWith = { exitCode: 4, stdout: '', stderr: 'iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)' };
    await expect(setup([], fake).rules.ensure()).rejects.toThrow(/--iptables: no permission to change iptables rules \(needs root or the NET_ADMIN capability\)/);
  });

  it('no ip6tables: IPv6 off, said once; IPv4 installed and ready', async () => {
    const fake = new FakeNode();
    fake.missing.add('ip6tables');
    const { rules, lines } = setup([], fake);
    await rules.ensure();
    expect(lines.filter((l) => l.includes('IPv6 metadata interception is off'))).toHaveLength(1);
    expect(rules.families()).toEqual(['ipv4']);
    expect(rules.ready()).toBe(true);
    expect(fake.rules('iptables', 'nat', 'PREROUTING')).toEqual([JUMP4]);
  });

  it('--iptables-guard=false: no mangle rule in either family', async () => {
    const { fake, rules } = setup(['--iptables-guard=false']);
    await rules.ensure();
    expect(fake.rules('iptables', 'mangle', 'FORWARD')).toEqual([]);
    expect(fake.rules('ip6tables', 'mangle', 'FORWARD')).toEqual([]);
    expect(rules.state()).toEqual({ ipv4: { dnat: 'present' }, ipv6: { dnat: 'present' } });
  });

  it('no IPv6 host address: the IPv6 guard alone (IPv6 pods refused, never the node role)', async () => {
    const fake = new FakeNode();
    const metrics = createMetrics({ defaultMetrics: false });
    const r = parseConfig(['--iptables', '--host-ip=10.0.1.23', '--host-interface=cali+'], {});
    if (r.kind !== 'run') throw new Error('run');
    const rules = createInterception(r.config, { log: createLogger({ format: 'json', level: 'error', stream: new Writable({ write: (_c, _e, done) => done() }) }), metrics, exec: fake.exec });
    await rules.ensure();
    expect(fake.rules('ip6tables', 'mangle', 'FORWARD')).toEqual([GUARD6]);
    expect(fake.rules('ip6tables', 'nat', 'PREROUTING')).toEqual([]);
    expect(rules.state().ipv6).toEqual({ guard: 'present' });
  });
});

describe('reconcile', () => {
  /**
   * Reconciles every 5 ms until a round has listed the chains (`-S`: the full check, every tenth
   * round, or a round that found a rule missing or in error), then stops once that round is done.
   * Waits for the round itself, not a fixed time: a loaded machine (CI) may be slower than ten rounds in 150 ms.
   */
  async function tick(rules: { startReconcile(ms: number): void; stop(): Promise<void> }, fake: FakeNode): Promise<void> {
    const from = fake.calls.length;
    rules.startReconcile(5);
    const deadline = Date.now() + 5_000;
    while (!fake.calls.slice(from).some((c) => c.file === 'iptables' && c.args.includes('-S')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    await rules.stop();
  }

  it('a round checks one rule per family (one process each); every tenth round counts every rule', async () => {
    const { fake, rules } = setup();
    await rules.ensure();
    const from = fake.calls.length;
    rules.startReconcile(5);
    while (fake.calls.slice(from).filter((c) => c.args.includes('-S')).length < 6) await new Promise((r) => setTimeout(r, 5));
    await rules.stop();
    const calls = fake.calls.slice(from).map((c) => `${c.file} ${c.args.slice(2, 5).join(' ')}`);
    const firstFull = calls.findIndex((c) => c.includes('-S'));
    // Nine cheap rounds (the jump of each family), then the full check of both families.
    expect(calls.slice(0, firstFull)).toEqual(Array.from({ length: 9 }, () => ['iptables -t nat -C', 'ip6tables -t nat -C']).flat());
    expect(calls.slice(firstFull, firstFull + 6)).toEqual(['iptables -t mangle -S', 'iptables -t nat -S', 'iptables -t nat -S', 'ip6tables -t mangle -S', 'ip6tables -t nat -S', 'ip6tables -t nat -S']);
    expect(fake.mutations(from)).toEqual([]);
  });

  it('the full check removes extra copies of a rule (two podiams restoring it at once) and keeps one', async () => {
    const { fake, rules, lines } = setup();
    await rules.ensure();
    fake.rules('iptables', 'nat', 'PREROUTING')!.unshift(JUMP4);
    fake.rules('iptables', 'mangle', 'FORWARD')!.push(GUARD4, GUARD4);
    await tick(rules, fake);
    expect(fake.rules('iptables', 'nat', 'PREROUTING')).toEqual([JUMP4]);
    expect(fake.rules('iptables', 'mangle', 'FORWARD')).toEqual([GUARD4]);
    expect(lines.filter((l) => l.startsWith('warn iptables rule found more than once'))).toHaveLength(2);
  });

  it('restores a deleted guard and a flushed nat table, counting each by family and rule, at warn', async () => {
    const { fake, rules, metrics, lines } = setup();
    await rules.ensure();
    fake.deleteAt('iptables', 'mangle', 'FORWARD', 1);
    fake.rules('ip6tables', 'nat', 'PREROUTING')!.length = 0;
    fake.rules('ip6tables', 'nat', 'PODIAM')!.length = 0;
    fake.conntrackDeleted = 1;
    // The guard alone is found by the full check (every tenth round): the jump is what a round checks.
    await tick(rules, fake);
    expect(fake.rules('iptables', 'mangle', 'FORWARD')).toEqual([GUARD4]);
    expect(fake.rules('ip6tables', 'nat', 'PREROUTING')).toEqual([JUMP6]);
    expect(fake.rules('ip6tables', 'nat', 'PODIAM')).toEqual([DNAT6]);
    expect(await metric(metrics, 'iptablesRestores', 'ipv4', 'guard')).toBe(1);
    expect(await metric(metrics, 'iptablesRestores', 'ipv6', 'dnat')).toBe(1);
    expect(await metric(metrics, 'iptablesRestores', 'ipv4', 'dnat')).toBeUndefined();
    expect(lines.filter((l) => l.startsWith('warn iptables rule missing, restored it'))).toHaveLength(2);
    expect(lines).toContain('warn cut connections that reached the real metadata service');
  });

  it('a guard that something moved below another rule still counts as present (DROP in mangle is final unless ACCEPTed earlier)', async () => {
    const { fake, rules } = setup();
    await rules.ensure();
    fake.rules('iptables', 'mangle', 'FORWARD')!.unshift('-j MARK --set-mark 1');
    const from = fake.calls.length;
    await tick(rules, fake);
    expect(fake.mutations(from)).toEqual([]);
  });

  it('stop() leaves every rule in place', async () => {
    const { fake, rules } = setup();
    await rules.ensure();
    const from = fake.calls.length;
    rules.startReconcile(1_000);
    await rules.stop();
    expect(fake.mutations(from)).toEqual([]);
    expect(fake.rules('iptables', 'nat', 'PREROUTING')).toEqual([JUMP4]);
  });

  it('a failing check marks the family error (not ready), and the next round recovers', async () => {
    const { fake, rules, metrics } = setup();
    await rules.ensure();
    fake.failWith = { exitCode: 4, stdout: '', stderr: 'Another app is currently holding the xtables lock' };
    fake.deleteAt('iptables', 'nat', 'PREROUTING', 1);
    await tick(rules, fake);
    expect(rules.ready()).toBe(false);
    expect(rules.state().ipv4).toEqual({ dnat: 'error', guard: 'error' });
    expect(await metric(metrics, 'iptablesRule', 'ipv4', 'dnat')).toBe(0);
    fake.failWith = undefined;
    await tick(rules, fake);
    expect(rules.ready()).toBe(true);
    expect(fake.rules('iptables', 'nat', 'PREROUTING')).toEqual([JUMP4]);
  });
});

describe('the ruleset watch', () => {
  const del = (family: string, table: string, chain: string) => JSON.stringify({ delete: { rule: { family, table, chain, handle: 7, expr: [{ counter: { packets: 0, bytes: 0 } }] } } });
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('names the deletions that may have taken a rule of podiam, and nothing else', () => {
    const watched = watchedNames(familyOptions(config()).map(familySpec));
    expect(deletionOf(del('ip', 'nat', 'PREROUTING'), watched)).toBe('ipv4');
    expect(deletionOf(del('ip', 'nat', 'PODIAM'), watched)).toBe('ipv4');
    expect(deletionOf(del('ip6', 'mangle', 'FORWARD'), watched)).toBe('ipv6');
    expect(deletionOf(JSON.stringify({ delete: { chain: { family: 'ip6', table: 'nat', name: 'PODIAM', handle: 1 } } }), watched)).toBe('ipv6');
    expect(deletionOf(JSON.stringify({ delete: { table: { family: 'ip', name: 'mangle', handle: 1 } } }), watched)).toBe('ipv4');
    expect(deletionOf(JSON.stringify({ destroy: { table: { family: 'ip', name: 'nat', handle: 1 } } }), watched)).toBe('ipv4');
    // kube-proxy's churn, another table, another family, an addition, a line that is not JSON.
    expect(deletionOf(del('ip', 'nat', 'KUBE-SEP-ABC'), watched)).toBeUndefined();
    expect(deletionOf(del('ip', 'filter', 'FORWARD'), watched)).toBeUndefined();
    expect(deletionOf(del('ip', 'mangle', 'PREROUTING'), watched)).toBeUndefined();
    expect(deletionOf(JSON.stringify({ delete: { table: { family: 'inet', name: 'nat', handle: 1 } } }), watched)).toBeUndefined();
    expect(deletionOf(JSON.stringify({ add: { rule: { family: 'ip', table: 'nat', chain: 'PREROUTING' } } }), watched)).toBeUndefined();
    expect(deletionOf('{"delete": {"rule": ', watched)).toBeUndefined();
    expect(deletionOf('{"delete": null}', watched)).toBeUndefined();
    expect(deletionOf('netlink: Error', watched)).toBeUndefined();
  });

  it('on iptables-nft: one `nft -j monitor destroy`; rounds between full checks run no process; a deletion gets that family its full check at once', async () => {
    const fake = new FakeNode();
    fake.backend = 'nf_tables';
    const { rules, monitor, metrics } = setup([], fake);
    await rules.ensure();
    rules.startReconcile(5);
    expect(monitor.spawned).toEqual([{ file: 'nft', args: ['-j', 'monitor', 'destroy'] }]);
    // The check after the watch starts (1 s), then rounds: only every tenth one checks (all rules).
    await sleep(1_200);
    const from = fake.calls.length;
    while (fake.calls.slice(from).length < 6) await sleep(5);
    const calls = fake.calls.slice(from).map((c) => `${c.file} ${c.args.slice(2, 5).join(' ')}`);
    expect(calls.slice(0, 6)).toEqual(['iptables -t mangle -S', 'iptables -t nat -S', 'iptables -t nat -S', 'ip6tables -t mangle -S', 'ip6tables -t nat -S', 'ip6tables -t nat -S']);
    expect(calls.filter((c) => c.includes('-C'))).toEqual([]);
    await rules.stop();

    // Now every ten rounds is 50 s: what restores the rule is the event.
    const slow = setup([], fake);
    await slow.rules.ensure();
    slow.rules.startReconcile(5_000);
    await sleep(1_100);
    fake.deleteAt('ip6tables', 'mangle', 'FORWARD', 1);
    const t0 = Date.now();
    slow.monitor.line(del('ip6', 'mangle', 'FORWARD'));
    while (fake.rules('ip6tables', 'mangle', 'FORWARD')!.length === 0 && Date.now() - t0 < 3_000) await sleep(5);
    expect(fake.rules('ip6tables', 'mangle', 'FORWARD')).toHaveLength(1);
    expect(Date.now() - t0).toBeLessThan(1_500);
    expect(await metric(slow.metrics, 'iptablesRestores', 'ipv6', 'guard')).toBe(1);
    // kube-proxy's deletions are not podiam's: no check.
    const before = fake.calls.length;
    slow.monitor.line(del('ip', 'nat', 'KUBE-SEP-1'));
    await sleep(1_300);
    expect(fake.calls.slice(before)).toEqual([]);
    // Events lost (the monitor's socket overflowed): both families checked.
    const lost = fake.calls.length;
    slow.monitor.line('# ERROR: We lost some netlink events!');
    while (fake.calls.slice(lost).length < 6 && Date.now() - t0 < 10_000) await sleep(10);
    expect(fake.calls.slice(lost).map((c) => `${c.file} ${c.args.slice(2, 4).join(' ')}`)).toEqual(['iptables -t mangle', 'iptables -t nat', 'iptables -t nat', 'ip6tables -t mangle', 'ip6tables -t nat', 'ip6tables -t nat']);
    expect((await metrics.iptablesWatch.get()).values[0]?.value).toBe(0);
    expect((await slow.metrics.iptablesWatch.get()).values[0]?.value).toBe(1);
    await slow.rules.stop();
    expect(slow.monitor.stopped).toBe(1);
    expect((await slow.metrics.iptablesWatch.get()).values[0]?.value).toBe(0);
  });

  it('an event-driven restore that failed: that family is checked every round until whole, not only every tenth', async () => {
    const fake = new FakeNode();
    fake.backend = 'nf_tables';
    const { rules, monitor } = setup([], fake);
    await rules.ensure();
    rules.startReconcile(300); // the full check every 3 s
    await sleep(1_200);
    fake.deleteAt('iptables', 'nat', 'PREROUTING', 1);
    fake.failWith = { exitCode: 4, stdout: '', stderr: 'iptables: Resource temporarily unavailable.' };
    monitor.line(del('ip', 'nat', 'PREROUTING'));
    while (rules.ready()) await sleep(10);
    expect(rules.state().ipv4).toEqual({ dnat: 'error', guard: 'error' });
    fake.failWith = undefined;
    const t0 = Date.now();
    while (!rules.ready() && Date.now() - t0 < 5_000) await sleep(10);
    await rules.stop();
    expect(rules.ready()).toBe(true);
    expect(fake.rules('iptables', 'nat', 'PREROUTING')).toEqual([JUMP4]);
    // The next round (300 ms), not the tenth (3 s).
    expect(Date.now() - t0).toBeLessThan(1_000);
  });

  it('the monitor exiting: warned with its stderr, podiam_iptables_watch 0, and every round checks again', async () => {
    const fake = new FakeNode();
    fake.backend = 'nf_tables';
    const { rules, monitor, metrics, lines } = setup([], fake);
    await rules.ensure();
    rules.startReconcile(5);
    monitor.exit(1, 'netlink: Error: Operation not permitted');
    await sleep(20);
    expect(lines).toContain('warn iptables: the ruleset watch (nft monitor) exited; rules are checked every --iptables-reconcile-interval until it is back');
    expect((await metrics.iptablesWatch.get()).values[0]?.value).toBe(0);
    const from = fake.calls.length;
    while (fake.calls.slice(from).length < 4) await sleep(5);
    await rules.stop();
    expect(fake.calls.slice(from, from + 4).map((c) => `${c.file} ${c.args.slice(2, 5).join(' ')}`)).toEqual(['iptables -t nat -C', 'ip6tables -t nat -C', 'iptables -t nat -C', 'ip6tables -t nat -C']);
  });

  it('on iptables-legacy (or --iptables-watch=false): no monitor, rounds check as before', async () => {
    for (const [backend, extra] of [['legacy', []], ['nf_tables', ['--iptables-watch=false']]] as const) {
      const fake = new FakeNode();
      fake.backend = backend;
      const { rules, monitor } = setup([...extra], fake);
      await rules.ensure();
      const from = fake.calls.length;
      rules.startReconcile(5);
      while (fake.calls.slice(from).length < 2) await sleep(5);
      await rules.stop();
      expect({ backend, spawned: monitor.spawned, first: fake.calls[from]!.args.slice(2, 5).join(' ') }).toEqual({ backend, spawned: [], first: '-t nat -C' });
    }
  });
});

describe('cleanup', () => {
  it('removes every rule and chain of both families, reports each, and is idempotent', async () => {
    const fake = new FakeNode();
    await setup([], fake).rules.ensure();
    const first = await cleanup(fake.exec);
    expect(first.removed).toEqual([
      'iptables -t nat -D PREROUTING -p tcp -d 169.254.169.254/32 --dport 80 -m comment --comment "podiam: pod metadata requests" -j PODIAM',
      expect.stringMatching(/^iptables -t nat -D PODIAM -i cali\+ .*DNAT --to-destination 10.0.1.23:8181$/),
      'iptables -t nat -X PODIAM (flushed and deleted)',
      expect.stringMatching(/^iptables -t mangle -D FORWARD -i cali\+ .* -j DROP$/),
      expect.stringMatching(/^ip6tables -t nat -D PREROUTING /),
      expect.stringMatching(/^ip6tables -t nat -D PODIAM /),
      'ip6tables -t nat -X PODIAM (flushed and deleted)',
      expect.stringMatching(/^ip6tables -t mangle -D FORWARD /),
    ]);
    for (const bin of ['iptables', 'ip6tables']) {
      expect(fake.rules(bin, 'nat', 'PREROUTING')).toEqual([]);
      expect(fake.rules(bin, 'nat', 'PODIAM')).toBeUndefined();
      expect(fake.rules(bin, 'mangle', 'FORWARD')).toEqual([]);
    }
    const from = fake.calls.length;
    const second = await cleanup(fake.exec);
    expect(second).toEqual({ removed: [], skipped: [] });
    expect(fake.mutations(from)).toEqual([]);
  });

  it('leaves rules that are not podiam\'s, removes duplicates', async () => {
    const fake = new FakeNode();
    await setup([], fake).rules.ensure();
    fake.rules('iptables', 'nat', 'PREROUTING')!.push('-j KUBE-SERVICES', JUMP4);
    fake.rules('iptables', 'mangle', 'FORWARD')!.push('-m comment --comment cali:xyz -j MARK --set-mark 1');
    await cleanup(fake.exec);
    expect(fake.rules('iptables', 'nat', 'PREROUTING')).toEqual(['-j KUBE-SERVICES']);
    expect(fake.rules('iptables', 'mangle', 'FORWARD')).toEqual(['-m comment --comment cali:xyz -j MARK --set-mark 1']);
  });

  it('no iptables: fails saying so; no ip6tables: IPv6 skipped, IPv4 cleaned', async () => {
    const none = new FakeNode();
    none.missing.add('iptables');
    await expect(cleanup(none.exec)).rejects.toThrow('--cleanup: the iptables binary was not found on PATH (install iptables)');
    const v4only = new FakeNode();
    await setup([], v4only).rules.ensure();
    v4only.missing.add('ip6tables');
    const report = await cleanup(v4only.exec);
    expect(report.skipped).toEqual(['ipv6: the ip6tables binary was not found on PATH (install iptables)']);
    expect(v4only.rules('iptables', 'nat', 'PREROUTING')).toEqual([]);
  });

  it('no NET_ADMIN: fails saying so', async () => {
    const fake = new FakeNode();
    fake.failWith = { exitCode: 4, stdout: '', stderr: 'Permission denied (you must be root)' };
    await expect(cleanup(fake.exec)).rejects.toThrow(/--cleanup: no permission to change iptables rules \(needs root or the NET_ADMIN capability\)/);
  });
});

test('splitWords reads iptables-save quoting', () => {
  expect(splitWords('-A PREROUTING -d 169.254.169.254/32 -m comment --comment "podiam: a \\"b\\"" -j PODIAM')).toEqual([
    '-A', 'PREROUTING', '-d', '169.254.169.254/32', '-m', 'comment', '--comment', 'podiam: a "b"', '-j', 'PODIAM',
  ]);
});
