/**
 * Who holds a TCP port, when it can be told: the listening socket from /proc/net/tcp{,6} (its
 * inode and owner uid), then the process whose /proc/<pid>/fd links to that socket. Files only,
 * no process is run. In a container with its own PID namespace the socket is visible (host
 * network) but its process usually is not: then only the uid and inode are known.
 * Only the pid and the program's name are reported (its executable's file name, else its comm:
 * Node 24 names its main thread "MainThread", which says nothing), never the command line (it
 * can hold secrets such as an --api-token).
 */
import { readFile, readdir, readlink } from 'node:fs/promises';

export interface PortHolder {
  readonly port: number;
  readonly inode: string;
  readonly uid: number;
  readonly pid?: number;
  readonly command?: string;
}

const LISTEN = '0A';

/** The listening sockets on `port` in /proc/net/tcp and tcp6 content. */
export function listeningSockets(procNetTcp: string, port: number): Array<{ inode: string; uid: number }> {
  const found: Array<{ inode: string; uid: number }> = [];
  for (const line of procNetTcp.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const local = f[1]!;
    const portHex = local.slice(local.lastIndexOf(':') + 1);
    if (f[3] !== LISTEN || parseInt(portHex, 16) !== port) continue;
    found.push({ inode: f[9]!, uid: Number(f[7]) });
  }
  return found;
}

export async function findPortHolder(port: number, proc = '/proc'): Promise<PortHolder | undefined> {
  let sockets: Array<{ inode: string; uid: number }> = [];
  for (const file of ['net/tcp', 'net/tcp6']) {
    const text = await readFile(`${proc}/${file}`, 'utf8').catch(() => '');
    sockets = sockets.concat(listeningSockets(text, port));
  }
  const socket = sockets.find((s) => s.inode !== '0');
  if (socket === undefined) return undefined;
  const target = `socket:[${socket.inode}]`;
  const pids = (await readdir(proc).catch(() => [] as string[])).filter((d) => /^\d+$/.test(d));
  for (const pid of pids) {
    const fds = await readdir(`${proc}/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      if ((await readlink(`${proc}/${pid}/fd/${fd}`).catch(() => '')) !== target) continue;
      const exe = (await readlink(`${proc}/${pid}/exe`).catch(() => '')).replace(/ \(deleted\)$/, '');
      const command = exe !== '' ? exe.slice(exe.lastIndexOf('/') + 1) : (await readFile(`${proc}/${pid}/comm`, 'utf8').catch(() => '')).trim();
      return { port, inode: socket.inode, uid: socket.uid, pid: Number(pid), command: command || undefined };
    }
  }
  return { port, inode: socket.inode, uid: socket.uid };
}

/** One line for the log: "pid 1234 (kube2iam)" or "a process outside this container (uid 0, socket inode 5678)". */
export function describeHolder(holder: PortHolder | undefined): string {
  if (holder === undefined) return 'a socket podiam cannot see (another network namespace, or it closed meanwhile)';
  if (holder.pid !== undefined) return `pid ${holder.pid}${holder.command ? ` (${holder.command})` : ''}, uid ${holder.uid}`;
  return `a process outside this container's view (uid ${holder.uid}, socket inode ${holder.inode}); on the node: ss -ltnp 'sport = :${holder.port}'`;
}
