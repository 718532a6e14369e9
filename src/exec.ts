/**
 * Running the node's commands (iptables, ip6tables, conntrack, ip): the one process runner.
 *
 * node:child_process, not execa: the reconcile runs a command every few seconds for the life of
 * the process, and execa's own work per call (about 3 ms of CPU on the reference machine, against
 * 1.5 ms for execFile; scripts/bench/idle-cpu.mjs) was most of podiam's idle CPU.
 */
import { execFile } from 'node:child_process';

export interface ExecResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}
/** Runs one command; rejects only when the program cannot be started at all. */
export type ExecRunner = (file: string, args: readonly string[]) => Promise<ExecResult>;

/** iptables-save of a large nat table (kube-proxy with thousands of services) stays well under this. */
const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;

export const processRunner: ExecRunner = (file, args) =>
  new Promise((resolve, reject) => {
    // No shell; stdin closed. A command that outlives the timeout is killed (SIGKILL) and reported
    // as failed. A SIGTERM to podiam is not forwarded: an iptables call is best left to finish its commit.
    const child = execFile(file, args, { timeout: 10_000, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT_BYTES, encoding: 'utf8', windowsHide: true }, (err, stdout, stderr) => {
      const code = (err as (NodeJS.ErrnoException & { code?: unknown }) | null)?.code;
      if (err !== null && typeof code === 'string') {
        // The program could not be started (ENOENT, EACCES): nothing ran.
        const failed = new Error(`${file} could not run: ${err.message}`) as Error & { code?: string };
        failed.code = code;
        reject(failed);
        return;
      }
      const exitCode = err === null ? 0 : typeof code === 'number' ? code : 1;
      resolve({ exitCode, stdout: String(stdout), stderr: err !== null && err.killed ? `${String(stderr)}\n${file} killed after 10 s` : String(stderr) });
    });
    child.stdin?.end();
  });

/** The same runner under its former name (other modules and branches import it). */
export const execaRunner: ExecRunner = processRunner;
