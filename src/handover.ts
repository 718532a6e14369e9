/**
 * A rolling update's handover between two podiams on one node (DaemonSet maxSurge: 1), both
 * binding the app port with SO_REUSEPORT (listeners.ts). The kernel gives a new connection to
 * any listener of the group, so:
 *
 *  - the new podiam joins the group only once it is ready (informers synced, rules in): a pod's
 *    request is never handed to a podiam that would answer "not ready";
 *  - the old podiam, on SIGTERM, keeps accepting until the new one listens (at most
 *    --shutdown-handover), then drains. It cannot rely on SIGTERM coming after the new podiam is
 *    ready: with hostNetwork the kubelet's readiness probe of the new pod goes to <node IP>:8181,
 *    which the old podiam may answer, so the new pod can look ready before it is.
 *
 * "Another listener" is read from /proc/net/tcp{,6} (the node's network namespace: hostNetwork)
 * and told from podiam's own sockets by inode (/proc/self/fd): files only, no process is run.
 */
import { readFile, readdir, readlink } from 'node:fs/promises';
import { listeningSockets } from './port-holder.js';

/** Listening sockets on `port` that are not this process's own. */
export async function otherListeners(port: number, proc = '/proc'): Promise<number> {
  const texts = await Promise.all(['net/tcp', 'net/tcp6'].map((f) => readFile(`${proc}/${f}`, 'utf8').catch(() => '')));
  const sockets = texts.flatMap((t) => listeningSockets(t, port));
  if (sockets.length === 0) return 0;
  const own = await ownSocketInodes(proc);
  return sockets.filter((s) => !own.has(s.inode)).length;
}

async function ownSocketInodes(proc: string): Promise<Set<string>> {
  const inodes = new Set<string>();
  const fds = await readdir(`${proc}/self/fd`).catch(() => [] as string[]);
  for (const fd of fds) {
    const m = /^socket:\[(\d+)\]$/.exec(await readlink(`${proc}/self/fd/${fd}`).catch(() => ''));
    if (m) inodes.add(m[1]!);
  }
  return inodes;
}

/** Resolves true once another process listens on `port`, false after timeoutMs (or when aborted). */
export async function waitForSuccessor(port: number, timeoutMs: number, options: { signal?: AbortSignal; everyMs?: number; proc?: string } = {}): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await otherListeners(port, options.proc)) > 0) return true;
    if (Date.now() >= deadline || options.signal?.aborted) return false;
    await new Promise((resolve) => setTimeout(resolve, Math.min(options.everyMs ?? 100, Math.max(0, deadline - Date.now()))));
  }
}
