/**
 * The token listener's link-local addresses on the node (169.254.170.23, fd00:ec2::23), so pods
 * and hostNetwork pods reach it without any DNAT, as the EKS Pod Identity agent binds them on
 * its own dummy link. It runs `ip` through src/exec.ts, as iptables.ts runs iptables.
 * Idempotent: ensure() twice is one state. Kept on exit (a restarting agent adopts them, as
 * dataplane rules are); remove() is the explicit cleanup.
 */
import { isIP } from 'node:net';
import { PodiamError } from './errors.js';
import { processRunner } from './exec.js';

export type IpRunner = (args: readonly string[]) => Promise<{ exitCode: number; stderr: string }>;

export const ipRunner: IpRunner = (args) => processRunner('ip', args);

export class LinkAddressError extends PodiamError {
  constructor(message: string) {
    super('LinkAddressError', 500, message);
  }
}

export interface LinkAddresses {
  ensure(): Promise<void>;
  remove(): Promise<void>;
}

/** `link` is lo or a dummy link podiam creates when missing (e.g. pod-id-link0). */
export function createLinkAddresses(link: string, addresses: readonly string[], run: IpRunner = ipRunner): LinkAddresses {
  const ip = async (args: readonly string[], okWhen?: RegExp): Promise<void> => {
    const r = await run(args);
    if (r.exitCode !== 0 && !(okWhen?.test(r.stderr) ?? false)) throw new LinkAddressError(`ip ${args.join(' ')} failed: ${r.stderr.trim().slice(0, 300)}`);
  };
  const cidr = (a: string): string[] => (isIP(a) === 6 ? ['-6', 'addr', 'replace', `${a}/128`, 'dev', link, 'nodad'] : ['addr', 'replace', `${a}/32`, 'dev', link]);
  return {
    async ensure() {
      if (link !== 'lo') await ip(['link', 'add', link, 'type', 'dummy'], /File exists/);
      await ip(['link', 'set', link, 'up']);
      for (const a of addresses) await ip(cidr(a));
    },
    async remove() {
      for (const a of addresses) await ip([...(isIP(a) === 6 ? ['-6'] : []), 'addr', 'del', `${a}/${isIP(a) === 6 ? 128 : 32}`, 'dev', link], /Cannot assign|not exist|Cannot find device/);
      if (link !== 'lo') await ip(['link', 'del', link], /Cannot find device/);
    },
  };
}
