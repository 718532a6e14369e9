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
/** Runs one command; rejects only when the program cannot be started at all. */
export type ExecRunner = (file: string, args: readonly string[]) => Promise<ExecResult>;

export const execaRunner: ExecRunner = async (file, args) => {
  // cleanup: false — execa's default registers a signal-exit SIGTERM hook per running child, which
  // re-raised a SIGTERM that arrived mid-command and exited 1. These commands are short, and an
  // iptables call is best left to finish its commit anyway.
  const { execa } = await import('execa');
  const r = await execa(file, args, { reject: false, timeout: 10_000, stdin: 'ignore', cleanup: false });
  if (r.failed && r.exitCode === undefined) {
    const err = new Error(r.shortMessage ?? `${file} could not run`) as Error & { code?: string };
    err.code = (r as { code?: string }).code;
    throw err;
  }
  return { exitCode: r.exitCode ?? 1, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
};
