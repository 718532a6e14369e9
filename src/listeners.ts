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

/**
 * Per connection: the last answer started on it, and since when it has been idle as far as a
 * drain has seen. The hot path only records the answer (one Map lookup, one store): whether it is
 * still being written, and since when the connection is idle, is worked out by drain() alone.
 */
interface ConnectionState {
  /** The last answer started on this connection (finished or not). */
  response: http.ServerResponse | undefined;
  /** When a drain first saw this connection with nothing in flight. */
  idleSince: number | undefined;
}

interface Tracked {
  readonly conns: Map<Socket, ConnectionState>;
  draining: boolean;
}

const tracking = new WeakMap<http.Server, Tracked>();

/** Follows the server's connections from the first one on (drain() needs to know which are idle). */
function tracked(server: http.Server): Tracked {
  let t = tracking.get(server);
  if (t !== undefined) return t;
  const conns = new Map<Socket, ConnectionState>();
  const self: Tracked = { conns, draining: false };
  t = self;
  tracking.set(server, self);
  server.on('connection', (socket: Socket) => {
    conns.set(socket, { response: undefined, idleSince: undefined });
    socket.once('close', () => conns.delete(socket));
  });
  // First, before the handler may answer synchronously: once draining, every answer closes its connection.
  server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const state = conns.get(req.socket);
    if (state !== undefined) state.response = res;
    if (self.draining) {
      res.shouldKeepAlive = false;
      if (state !== undefined) state.idleSince = undefined;
    }
  });
  return self;
}

/** An answer is in flight until its last byte is handed to the socket (or the socket went). */
function inFlight(res: http.ServerResponse | undefined): boolean {
  return res !== undefined && !res.writableFinished && !res.destroyed;
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
  const t = tracked(server);
  const conns = t.conns;
  const idleMs = options.idleMs ?? 1_000;
  t.draining = true;
  // Answers not started yet close their connection too.
  for (const state of conns.values()) if (inFlight(state.response) && !state.response!.headersSent) state.response!.shouldKeepAlive = false;
  return new Promise((resolve) => {
    // A connection counts as idle from the first sweep that finds nothing in flight on it (for
    // one idle before the drain, from its start: never sooner than idleMs after it).
    const sweep = (): void => {
      const now = Date.now();
      for (const [socket, state] of conns) {
        if (inFlight(state.response)) {
          state.idleSince = undefined;
          continue;
        }
        state.idleSince ??= now;
        if (now - state.idleSince >= idleMs) socket.destroySoon();
      }
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
