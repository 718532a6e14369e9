/**
 * The only module that runs processes. Owns the DNAT rule's whole life: ensure (idempotent),
 * reconcile (restore if someone deletes it, kube2iam #9), remove on exit (kube2iam #44, #141, #370).
 *
 * Layout, in the nat table:
 *   PREROUTING: -p tcp -d <metadata> --dport 80 -m comment --comment podiam -j PODIAM   (inserted first)
 *   PODIAM:     [!] -i <host-interface> -p tcp -d <metadata> --dport 80 -j DNAT --to-destination <host-ip>:<app-port>
 * A chain of its own makes removal exact: delete the jump, flush and delete the chain.
 */
import { execa } from 'execa';
import type { Config } from './config.js';
import { PodiamError } from './errors.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

export interface ExecResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}
/** Runs one command; rejects only when the program cannot be started at all. */
export type ExecRunner = (file: string, args: readonly string[]) => Promise<ExecResult>;

export const execaRunner: ExecRunner = async (file, args) => {
  // cleanup: false — execa's default registers a signal-exit SIGTERM hook per running child; with
  // cli.ts's signal handling, a SIGTERM that arrived mid-command re-raised itself and exited 1
  // before remove() ran, leaving the rule behind. An iptables call is short and is best left to
  // finish its commit anyway.
  const r = await execa(file, args, { reject: false, timeout: 10_000, stdin: 'ignore', cleanup: false });
  if (r.failed && r.exitCode === undefined) {
    const err = new Error(r.shortMessage ?? `${file} could not run`) as Error & { code?: string };
    err.code = (r as { code?: string }).code;
    throw err;
  }
  return { exitCode: r.exitCode ?? 1, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
};

export type RuleState = 'present' | 'missing' | 'error' | 'removed';

export class IptablesError extends PodiamError {
  constructor(message: string) {
    super('IptablesError', 500, message);
  }
}

export interface IptablesRule {
  ensure(): Promise<void>;
  check(): Promise<boolean>;
  remove(): Promise<void>;
  startReconcile(intervalMs: number): void;
  state(): RuleState;
  /** The rules as iptables arguments (for logs, docs and tests). */
  readonly spec: { readonly jump: readonly string[]; readonly dnat: readonly string[]; readonly chain: string };
}

export interface IptablesOptions {
  readonly metadataAddr: string;
  readonly hostInterface: string;
  readonly hostIp: string;
  readonly appPort: number;
  readonly chain?: string;
  readonly bin?: string;
}

export function ruleSpec(o: IptablesOptions): IptablesRule['spec'] {
  const chain = o.chain ?? 'PODIAM';
  const match = ['-p', 'tcp', '-d', `${o.metadataAddr}/32`, '--dport', '80'];
  const iface = o.hostInterface.startsWith('!') ? ['!', '-i', o.hostInterface.slice(1)] : ['-i', o.hostInterface];
  return {
    chain,
    jump: [...match, '-m', 'comment', '--comment', 'podiam: pod metadata requests', '-j', chain],
    dnat: [...iface, ...match, '-m', 'comment', '--comment', 'podiam: to podiam', '-j', 'DNAT', '--to-destination', `${o.hostIp}:${o.appPort}`],
  };
}

export function createIptablesRule(config: Config, deps: { log: Logger; metrics: Metrics; exec?: ExecRunner }): IptablesRule {
  return new Iptables(
    { metadataAddr: config.metadataHost, hostInterface: config.hostInterface, hostIp: config.hostIp!, appPort: config.appPort },
    deps.log,
    deps.metrics,
    deps.exec ?? execaRunner,
  );
}

export class Iptables implements IptablesRule {
  readonly spec: IptablesRule['spec'];
  private current: RuleState = 'missing';
  private timer: NodeJS.Timeout | undefined;
  private busy: Promise<unknown> = Promise.resolve();
  private readonly bin: string;

  constructor(
    options: IptablesOptions,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly exec: ExecRunner,
  ) {
    this.spec = ruleSpec(options);
    this.bin = options.bin ?? 'iptables';
  }

  state(): RuleState {
    return this.current;
  }

  async ensure(): Promise<void> {
    await this.serial(async () => {
      await this.preflight();
      await this.install();
      this.log.info('iptables rule installed', { rule: `iptables -t nat -A ${this.spec.chain} ${this.spec.dnat.join(' ')}` });
    });
  }

  async check(): Promise<boolean> {
    const jump = await this.run(['-t', 'nat', '-C', 'PREROUTING', ...this.spec.jump]);
    const dnat = await this.run(['-t', 'nat', '-C', this.spec.chain, ...this.spec.dnat]);
    return jump.exitCode === 0 && dnat.exitCode === 0;
  }

  startReconcile(intervalMs: number): void {
    // At most one reconcile queued or running: when iptables is slower than the interval (a huge
    // nat table, a contended xtables lock), skip ticks rather than pile up a backlog that
    // remove() on SIGTERM would have to wait behind.
    let pending = false;
    this.timer = setInterval(() => {
      if (pending) return;
      pending = true;
      this.serial(async () => {
        if (this.current === 'removed') return;
        if (await this.check()) return this.set('present');
        this.log.warn('iptables rule missing, restoring it', { chain: this.spec.chain });
        await this.install();
        this.metrics.iptablesRestores.inc();
      })
        .catch((err: Error) => {
          this.set('error');
          this.log.error('iptables reconcile failed', { error: err.message });
        })
        .finally(() => {
          pending = false;
        });
    }, intervalMs);
    this.timer.unref();
  }

  async remove(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.serial(async () => {
      // Delete every copy of the jump (a crash-looping old version may have left more than one).
      for (let i = 0; i < 10; i++) {
        if ((await this.run(['-t', 'nat', '-D', 'PREROUTING', ...this.spec.jump])).exitCode !== 0) break;
      }
      await this.run(['-t', 'nat', '-F', this.spec.chain]);
      await this.run(['-t', 'nat', '-X', this.spec.chain]);
      // Say "removed" only when it is: a held xtables lock can make the deletes fail.
      if ((await this.run(['-t', 'nat', '-C', 'PREROUTING', ...this.spec.jump])).exitCode === 0) {
        this.set('error');
        throw new IptablesError(`the jump to ${this.spec.chain} is still in nat PREROUTING after removal; delete it by hand: iptables -t nat -D PREROUTING ${this.spec.jump.map((a) => (a.includes(' ') ? `"${a}"` : a)).join(' ')}`);
      }
      this.set('removed');
      this.log.info('iptables rule removed', { chain: this.spec.chain });
    });
  }

  private async install(): Promise<void> {
    // Chain exists (or is created); its content is replaced, so a changed --host-ip or port takes effect.
    const listed = await this.run(['-t', 'nat', '-S', this.spec.chain]);
    if (listed.exitCode !== 0) await this.must(['-t', 'nat', '-N', this.spec.chain]);
    if ((await this.run(['-t', 'nat', '-C', this.spec.chain, ...this.spec.dnat])).exitCode !== 0) {
      await this.must(['-t', 'nat', '-F', this.spec.chain]);
      await this.must(['-t', 'nat', '-A', this.spec.chain, ...this.spec.dnat]);
    }
    if ((await this.run(['-t', 'nat', '-C', 'PREROUTING', ...this.spec.jump])).exitCode !== 0) {
      await this.must(['-t', 'nat', '-I', 'PREROUTING', '1', ...this.spec.jump]);
    }
    this.set('present');
  }

  /** Clear failures up front: no binary, no permission. */
  private async preflight(): Promise<void> {
    let r: ExecResult;
    try {
      r = await this.exec(this.bin, ['-w', '5', '-t', 'nat', '-S', 'PREROUTING']);
    } catch (err) {
      const code = (err as { code?: string }).code;
      throw new IptablesError(
        code === 'ENOENT'
          ? `--iptables: the ${this.bin} binary was not found on PATH (install iptables, or run without --iptables)`
          : `--iptables: could not run ${this.bin}: ${(err as Error).message}`,
      );
    }
    if (r.exitCode !== 0) {
      const denied = /permission denied|must be root|Operation not permitted/i.test(r.stderr);
      throw new IptablesError(
        denied
          ? `--iptables: no permission to change iptables (needs root or the NET_ADMIN capability): ${r.stderr.trim()}`
          : `--iptables: ${this.bin} -t nat -S PREROUTING failed: ${r.stderr.trim()}`,
      );
    }
  }

  private async run(args: readonly string[]): Promise<ExecResult> {
    return this.exec(this.bin, ['-w', '5', ...args]);
  }

  private async must(args: readonly string[]): Promise<void> {
    const r = await this.run(args);
    if (r.exitCode !== 0) throw new IptablesError(`${this.bin} ${args.join(' ')} failed: ${r.stderr.trim()}`);
  }

  private set(state: RuleState): void {
    this.current = state;
    this.metrics.iptablesRule.set(state === 'present' ? 1 : 0);
  }

  /** One iptables change at a time: reconcile never races ensure or remove. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.busy.then(fn, fn);
    this.busy = next.catch(() => undefined);
    return next;
  }
}
