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

/** A long-running command whose stdout is read line by line (`nft monitor`). */
export interface LineProcess {
  /** Resolves once the process has exited (or could not start), with the end of its stderr. */
  readonly exited: Promise<{ readonly code: number | undefined; readonly signal: string | undefined; readonly stderr: string; readonly error?: string }>;
  /** SIGTERM; `exited` resolves once it is gone. */
  stop(): void;
}

export type LineSpawner = (file: string, args: readonly string[], onLine: (line: string) => void) => Promise<LineProcess>;

/** The last this many characters of a long-running command's stderr are kept for its exit report. */
const STDERR_TAIL = 2_048;

export const execaLines: LineSpawner = async (file, args, onLine) => {
  const { execa } = await import('execa');
  // buffer: false — the output is consumed here as it comes, never accumulated. cleanup: true —
  // execa kills it when podiam exits (in the image podiam is the container's PID 1, so even a
  // SIGKILL of podiam takes it along).
  const sub = execa(file, args, { reject: false, buffer: false, cleanup: true, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' });
  let partial = '';
  sub.stdout?.setEncoding('utf8');
  sub.stdout?.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    for (const line of lines) if (line !== '') onLine(line);
  });
  let stderr = '';
  sub.stderr?.setEncoding('utf8');
  sub.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-STDERR_TAIL);
  });
  const exited = sub.then((r) => ({
    code: r.exitCode,
    signal: r.signal,
    stderr: stderr.trim(),
    ...(r.exitCode === undefined && r.signal === undefined ? { error: r.shortMessage ?? `${file} could not run` } : {}),
  }));
  return { exited, stop: () => void sub.kill('SIGTERM') };
};
