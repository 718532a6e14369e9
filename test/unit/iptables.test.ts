import { jest } from '@jest/globals';
import type { ExecResult, ExecRunner } from '../../src/iptables.js';
import { IptablesError, createIptablesRule, ruleSpec } from '../../src/iptables.js';
import { parseConfig } from '../../src/config.js';
import type { Config } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';

const OK: ExecResult = { exitCode: 0, stdout: '', stderr: '' };
const MUTATING = new Set(['-N', '-A', '-I', '-D', '-F', '-X']);

/**
 * A fake iptables: records every argv and keeps a nat table (chains of rules, each rule its
 * argument list joined by spaces), answering -S, -N, -C, -A, -I, -D, -F and -X like iptables does.
 */
class FakeIptables {
  readonly calls: Array<{ file: string; args: readonly string[] }> = [];
  readonly chains = new Map<string, string[]>([
    ['PREROUTING', []],
    ['OUTPUT', []],
    ['POSTROUTING', []],
  ]);
  /** When set, the runner throws this (the program cannot be started). */
  spawnError: (Error & { code?: string }) | undefined;
  /** When set, every command fails with this result (e.g. no permission). */
  failWith: ExecResult | undefined;

  readonly exec: ExecRunner = async (file, args) => {
    this.calls.push({ file, args: [...args] });
    if (this.spawnError) throw this.spawnError;
    if (this.failWith) return this.failWith;
    return this.apply(args);
  };

  rules(chain: string): string[] | undefined {
    return this.chains.get(chain);
  }

  /** The table-changing commands issued, as "op chain". */
  mutations(from = 0): string[] {
    return this.calls.slice(from).flatMap(({ args }) => {
      const op = this.op(args);
      return op && MUTATING.has(op.op) ? [`${op.op} ${op.chain}`] : [];
    });
  }

  private op(args: readonly string[]): { op: string; chain: string; rest: string[] } | undefined {
    const a = [...args];
    if (a[0] === '-w') a.splice(0, 2);
    if (a[0] !== '-t' || a[1] !== 'nat') return undefined;
    const [op, chain, ...rest] = a.slice(2);
    return op === undefined || chain === undefined ? undefined : { op, chain, rest };
  }

  private apply(args: readonly string[]): ExecResult {
    const parsed = this.op(args);
    if (!parsed) return { exitCode: 2, stdout: '', stderr: 'iptables: bad arguments' };
    const { op, chain, rest } = parsed;
    const rules = this.chains.get(chain);
    const noChain: ExecResult = { exitCode: 1, stdout: '', stderr: 'iptables: No chain/target/match by that name.' };
    switch (op) {
      case '-S':
        if (!rules) return noChain;
        return { exitCode: 0, stdout: [`-N ${chain}`, ...rules.map((r) => `-A ${chain} ${r}`)].join('\n'), stderr: '' };
      case '-N':
        if (rules) return { exitCode: 1, stdout: '', stderr: 'iptables: Chain already exists.' };
        this.chains.set(chain, []);
        return OK;
      case '-C':
        if (!rules) return noChain;
        return rules.includes(rest.join(' ')) ? OK : { exitCode: 1, stdout: '', stderr: 'iptables: Bad rule (does a matching rule exist in that chain?).' };
      case '-A':
        if (!rules) return noChain;
        rules.push(rest.join(' '));
        return OK;
      case '-I': {
        if (!rules) return noChain;
        const pos = Number(rest[0]);
        rules.splice(pos - 1, 0, rest.slice(1).join(' '));
        return OK;
      }
      case '-D': {
        if (!rules) return noChain;
        const i = rules.indexOf(rest.join(' '));
        if (i === -1) return { exitCode: 1, stdout: '', stderr: 'iptables: Bad rule (does a matching rule exist in that chain?).' };
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
        const referenced = [...this.chains.values()].some((rs) => rs.some((r) => r.endsWith(`-j ${chain}`)));
        if (referenced) return { exitCode: 1, stdout: '', stderr: 'iptables: Too many links.' };
        this.chains.delete(chain);
        return OK;
      }
      default:
        return { exitCode: 2, stdout: '', stderr: `iptables: unknown option ${op}` };
    }
  }
}

function config(extra: string[] = []): Config {
  const r = parseConfig(['--iptables', '--host-ip=10.0.1.23', '--host-interface=cali+', ...extra], {});
  if (r.kind !== 'run') throw new Error('expected a run config');
  return r.config;
}

function setup(extra: string[] = []) {
  const fake = new FakeIptables();
  const metrics = createMetrics({ defaultMetrics: false });
  const log = createLogger({ format: 'json', level: 'error' });
  const rule = createIptablesRule(config(extra), { log, metrics, exec: fake.exec });
  return { fake, metrics, rule };
}

async function gauge(metrics: ReturnType<typeof createMetrics>): Promise<number | undefined> {
  return (await metrics.iptablesRule.get()).values[0]?.value;
}

const JUMP = '-p tcp -d 169.254.169.254/32 --dport 80 -m comment --comment podiam: pod metadata requests -j PODIAM';
const DNAT = '-i cali+ -p tcp -d 169.254.169.254/32 --dport 80 -m comment --comment podiam: to podiam -j DNAT --to-destination 10.0.1.23:8181';

describe('ruleSpec', () => {
  it('builds the jump and the DNAT rule', () => {
    const spec = ruleSpec({ metadataAddr: '169.254.169.254', hostInterface: 'cali+', hostIp: '10.0.1.23', appPort: 8181 });
    expect(spec.chain).toBe('PODIAM');
    expect(spec.jump.join(' ')).toBe(JUMP);
    expect(spec.dnat.join(' ')).toBe(DNAT);
  });

  it('!cali+ becomes "! -i cali+"', () => {
    const spec = ruleSpec({ metadataAddr: '169.254.169.254', hostInterface: '!cali+', hostIp: '10.0.1.23', appPort: 8181 });
    expect(spec.dnat.slice(0, 3)).toEqual(['!', '-i', 'cali+']);
    expect(spec.dnat).not.toContain('!cali+');
  });

  it('uses a custom chain name and port', () => {
    const spec = ruleSpec({ metadataAddr: '169.254.169.254', hostInterface: 'eni+', hostIp: '10.0.0.1', appPort: 9000, chain: 'MYCHAIN' });
    expect(spec.jump.slice(-2)).toEqual(['-j', 'MYCHAIN']);
    expect(spec.dnat.slice(-2)).toEqual(['--to-destination', '10.0.0.1:9000']);
  });
});

describe('Iptables.ensure', () => {
  it('on an empty table creates the chain, the DNAT rule and the jump', async () => {
    const { fake, rule, metrics } = setup();
    expect(rule.state()).toBe('missing');
    await rule.ensure();
    expect(fake.rules('PODIAM')).toEqual([DNAT]);
    expect(fake.rules('PREROUTING')).toEqual([JUMP]);
    expect(fake.mutations()).toEqual(['-N PODIAM', '-F PODIAM', '-A PODIAM', '-I PREROUTING']);
    expect(rule.state()).toBe('present');
    expect(await gauge(metrics)).toBe(1);
    // Every call is iptables, waits for the xtables lock, and works on the nat table.
    for (const c of fake.calls) {
      expect(c.file).toBe('iptables');
      expect(c.args.slice(0, 4)).toEqual(['-w', '5', '-t', 'nat']);
    }
    expect(await rule.check()).toBe(true);
  });

  it('the jump goes first in PREROUTING', async () => {
    const { fake, rule } = setup();
    fake.rules('PREROUTING')!.push('-j KUBE-SERVICES');
    await rule.ensure();
    expect(fake.rules('PREROUTING')).toEqual([JUMP, '-j KUBE-SERVICES']);
  });

  it('is idempotent: a second ensure changes nothing', async () => {
    const { fake, rule } = setup();
    await rule.ensure();
    const before = JSON.stringify([...fake.chains]);
    const from = fake.calls.length;
    await rule.ensure();
    expect(fake.mutations(from)).toEqual([]);
    expect(JSON.stringify([...fake.chains])).toBe(before);
    expect(fake.rules('PREROUTING')).toEqual([JUMP]);
    expect(rule.state()).toBe('present');
  });

  it('"!cali+" installs "! -i cali+"', async () => {
    const { fake, rule } = setup(['--host-interface=!cali+']);
    await rule.ensure();
    expect(fake.rules('PODIAM')).toEqual([DNAT.replace('-i cali+', '! -i cali+')]);
  });

  it('replaces a stale DNAT rule (changed --host-ip or port)', async () => {
    const { fake, rule } = setup();
    fake.chains.set('PODIAM', [DNAT.replace('10.0.1.23:8181', '10.0.9.9:8181')]);
    fake.rules('PREROUTING')!.push(JUMP);
    await rule.ensure();
    expect(fake.rules('PODIAM')).toEqual([DNAT]);
    expect(fake.rules('PREROUTING')).toEqual([JUMP]);
  });

  it('restores a deleted jump', async () => {
    const { fake, rule } = setup();
    await rule.ensure();
    fake.rules('PREROUTING')!.length = 0;
    expect(await rule.check()).toBe(false);
    await rule.ensure();
    expect(fake.rules('PREROUTING')).toEqual([JUMP]);
    expect(await rule.check()).toBe(true);
  });

  it('a missing binary (ENOENT) -> IptablesError saying "not found"', async () => {
    const { fake, rule } = setup();
    fake.spawnError = Object.assign(new Error('spawn iptables ENOENT'), { code: 'ENOENT' });
    const err = await rule.ensure().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(IptablesError);
    expect((err as Error).message).toMatch(/not found/);
    expect((err as Error).message).toContain('iptables');
    expect(rule.state()).toBe('missing');
  });

  it('another spawn failure -> IptablesError with its message', async () => {
    const { fake, rule } = setup();
    fake.spawnError = Object.assign(new Error('spawn iptables EACCES'), { code: 'EACCES' });
    await expect(rule.ensure()).rejects.toThrow(/EACCES/);
    await expect(rule.ensure()).rejects.toBeInstanceOf(IptablesError);
  });

  it.each([
    'iptables v1.8.7 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)',
    'iptables v1.8.4 (legacy): can\'t initialize iptables table `nat\': Permission denied (you must be root)',
    'iptables: Operation not permitted.',
  ])('permission denied -> IptablesError mentioning NET_ADMIN (%s)', async (stderr) => {
    const { fake, rule } = setup();
    fake.failWith = { exitCode: 4, stdout: '', stderr };
    const err = await rule.ensure().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(IptablesError);
    expect((err as Error).message).toContain('NET_ADMIN');
    expect(fake.mutations()).toEqual([]);
  });

  it('another failure names the command and its stderr', async () => {
    const { fake, rule } = setup();
    fake.failWith = { exitCode: 3, stdout: '', stderr: 'iptables: table nat does not exist' };
    await expect(rule.ensure()).rejects.toThrow(/table nat does not exist/);
  });
});

describe('Iptables.remove', () => {
  it('deletes the jump, flushes and deletes the chain', async () => {
    const { fake, rule, metrics } = setup();
    fake.rules('PREROUTING')!.push('-j KUBE-SERVICES');
    await rule.ensure();
    const from = fake.calls.length;
    await rule.remove();
    expect(fake.rules('PREROUTING')).toEqual(['-j KUBE-SERVICES']);
    expect(fake.rules('PODIAM')).toBeUndefined();
    expect(fake.mutations(from)).toEqual(['-D PREROUTING', '-D PREROUTING', '-F PODIAM', '-X PODIAM']);
    expect(rule.state()).toBe('removed');
    expect(await gauge(metrics)).toBe(0);
  });

  it('deletes every copy of the jump', async () => {
    const { fake, rule } = setup();
    await rule.ensure();
    fake.rules('PREROUTING')!.push(JUMP, JUMP);
    await rule.remove();
    expect(fake.rules('PREROUTING')).toEqual([]);
    expect(fake.rules('PODIAM')).toBeUndefined();
  });

  it('on a clean table does not throw', async () => {
    const { fake, rule } = setup();
    await rule.remove();
    expect(fake.rules('PREROUTING')).toEqual([]);
    expect(rule.state()).toBe('removed');
  });
});

describe('Iptables.startReconcile', () => {
  afterEach(() => {
    jest.useRealTimers();
  });

  it('restores the rule when someone deletes it, and stops after remove', async () => {
    jest.useFakeTimers();
    const { fake, rule, metrics } = setup();
    await rule.ensure();
    rule.startReconcile(3000);
    fake.rules('PREROUTING')!.length = 0;
    await jest.advanceTimersByTimeAsync(3000);
    expect(fake.rules('PREROUTING')).toEqual([JUMP]);
    expect(rule.state()).toBe('present');
    expect((await metrics.iptablesRestores.get()).values[0]?.value).toBe(1);
    await rule.remove();
    const from = fake.calls.length;
    await jest.advanceTimersByTimeAsync(30_000);
    expect(fake.calls.length).toBe(from);
    expect(fake.rules('PREROUTING')).toEqual([]);
  });
});
