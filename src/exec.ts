/**
 * Running the node's commands (iptables, ip6tables, conntrack, ip): the only importer of execa.
 * execa is its own chunk of the bundle, loaded with the first command (scripts/build.mjs): a
 * podiam without --iptables or --token-interface never reads it.
 */
export interface ExecResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}
export interface ExecOptions {
  /** false: only the exit code is wanted (stdout and stderr discarded, no pipes set up: ~40 % less CPU a call). */
  readonly output?: boolean;
}

/** Runs one command; rejects only when the program cannot be started at all. */
export type ExecRunner = (file: string, args: readonly string[], options?: ExecOptions) => Promise<ExecResult>;

export const execaRunner: ExecRunner = async (file, args, options) => {
  // cleanup: false — execa's default registers a signal-exit SIGTERM hook per running child, which
  // re-raised a SIGTERM that arrived mid-command and exited 1. These commands are short, and an
  // iptables call is best left to finish its commit anyway.
  const { execa } = await import('execa');
  const r = await execa(file, args, { reject: false, timeout: 10_000, cleanup: false, ...(options?.output === false ? { stdio: 'ignore' as const } : { stdin: 'ignore' as const }) });
  if (r.failed && r.exitCode === undefined) {
    const err = new Error(r.shortMessage ?? `${file} could not run`) as Error & { code?: string };
    err.code = (r as { code?: string }).code;
    throw err;
  }
  return { exitCode: r.exitCode ?? 1, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
};
