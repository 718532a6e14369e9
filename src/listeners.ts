/**
 * Binding and draining podiam's listeners (metadata v4/v6, token, metrics), so a rolling update
 * refuses nothing:
 *
 *  - SO_REUSEPORT (`listen({ reusePort: true })`, Node >= 22.12 / >= 23.1): the new podiam binds
 *    <node IP>:8181 while the old one still listens (DaemonSet `maxSurge: 1`); the kernel spreads
 *    new connections over both, and once the old one closes its socket, hands them all to the new.
 *    Linux only groups sockets that all set SO_REUSEPORT with the same effective UID: kube2iam
 *    (which does not set it) still makes the bind fail with EADDRINUSE (main.ts waits for it).
 *  - drain(): the old podiam stops accepting, answers every request already on a connection, and
 *    closes keep-alive connections without racing a client's next request (see drain()).
 */
import type http from 'node:http';
import net from 'node:net';
import type { AddressInfo, Socket } from 'node:net';

/** Whether this Node has `listen({ reusePort })` (older versions ignore the option silently). */
export function reusePortSupported(version: string = process.versions.node): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

export function listen(server: http.Server, port: number, host: string | undefined, reusePort: boolean = reusePortSupported()): Promise<AddressInfo> {
  tracked(server);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host: host ?? '0.0.0.0', ...(reusePort ? { reusePort: true } : {}) }, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Per connection: requests in flight, and since when it has been idle. */
interface ConnectionState {
  active: number;
  idleSince: number;
  /** The answer being written, if any. */
  response: http.ServerResponse | undefined;
}

const connections = new WeakMap<http.Server, Map<Socket, ConnectionState>>();
const draining = new WeakSet<http.Server>();

/** Follows the server's connections from the first one on (drain() needs to know which are idle). */
function tracked(server: http.Server): Map<Socket, ConnectionState> {
  let conns = connections.get(server);
  if (conns !== undefined) return conns;
  const map = new Map<Socket, ConnectionState>();
  conns = map;
  connections.set(server, map);
  server.on('connection', (socket: Socket) => {
    map.set(socket, { active: 0, idleSince: Date.now(), response: undefined });
    socket.once('close', () => map.delete(socket));
  });
  // First, before the handler may answer synchronously: once draining, every answer closes its connection.
  server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const state = map.get(req.socket);
    if (draining.has(server)) res.shouldKeepAlive = false;
    if (state === undefined) return;
    state.active++;
    state.response = res;
    res.once('close', () => {
      state.active--;
      state.idleSince = Date.now();
      if (state.response === res) state.response = undefined;
    });
  });
  return map;
}

export interface DrainOptions {
  /** Force-close whatever is still open after this long. */
  readonly graceMs: number;
  /**
   * A keep-alive connection idle this long is closed; a busier one is closed by its next answer
   * (`Connection: close`). A client polling more often than this never has its connection closed
   * under a request it is sending (the race a plain closeIdleConnections() has).
   */
  readonly idleMs?: number;
}

/**
 * Stop accepting; let in-flight requests finish, each answer closing its connection; close
 * connections idle for idleMs; force after graceMs. Resolves when every connection is closed.
 */
export function drain(server: http.Server, options: DrainOptions): Promise<void> {
  if (!server.listening) return Promise.resolve();
  const conns = tracked(server);
  const idleMs = options.idleMs ?? 1_000;
  draining.add(server);
  // Answers not started yet close their connection too.
  for (const state of conns.values()) if (state.response !== undefined && !state.response.headersSent) state.response.shouldKeepAlive = false;
  return new Promise((resolve) => {
    const sweep = (): void => {
      const now = Date.now();
      for (const [socket, state] of conns) if (state.active === 0 && now - state.idleSince >= idleMs) socket.destroySoon();
    };
    const timer = setInterval(sweep, Math.min(100, idleMs));
    const force = setTimeout(() => {
      for (const socket of conns.keys()) socket.destroy();
      server.closeAllConnections();
    }, options.graceMs);
    // net.Server's close, not http.Server's: the latter closes every idle keep-alive connection at
    // once (Node >= 19), which can race a request the client is writing on it right then.
    net.Server.prototype.close.call(server, () => {
      clearInterval(timer);
      clearTimeout(force);
      // http.Server's own close now (not listening any more, nothing left to close): it stops
      // the server's periodic check of request and header timeouts.
      server.close();
      resolve();
    });
    sweep();
  });
}
