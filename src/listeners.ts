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
 * Per connection, what drain() needs and the hot path does not pay for. The answer being written
 * is Node's own `socket._httpMessage` (assigned before the 'request' event, cleared when the
 * answer finishes); only an answer queued behind it (a pipelining client) is recorded here.
 *
 * Nothing here holds a finished answer: a ServerResponse kept from one request to the next (as
 * this module once did, for every request) survives young-generation collections with its
 * IncomingMessage, headers and buffers. In a bare server with the image's 2 MB semi-spaces that
 * cost ~9 µs of CPU a request; in podiam it did not show (BENCHMARKS.md, session 7), but the hot
 * path now does no Map lookup and no store for it.
 */
interface ConnectionState {
  /** The last answer queued behind the one being written (pipelining), until it finishes. */
  queued: http.ServerResponse | undefined;
  /** When a drain first saw this connection with nothing in flight. */
  idleSince: number | undefined;
}

interface Tracked {
  readonly conns: Map<Socket, ConnectionState>;
  draining: boolean;
}

const tracking = new WeakMap<http.Server, Tracked>();

/** Node's http server: the answer it is writing on this connection (null between requests). */
type HttpSocket = Socket & { _httpMessage?: http.ServerResponse | null };

/** Follows the server's connections from the first one on (drain() needs to know which are idle). */
function tracked(server: http.Server): Tracked {
  let t = tracking.get(server);
  if (t !== undefined) return t;
  const conns = new Map<Socket, ConnectionState>();
  const self: Tracked = { conns, draining: false };
  t = self;
  tracking.set(server, self);
  server.on('connection', (socket: Socket) => {
    conns.set(socket, { queued: undefined, idleSince: undefined });
    socket.once('close', () => conns.delete(socket));
  });
  // First, before the handler may answer synchronously: once draining, every answer closes its connection.
  server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    // A keep-alive request's answer is the one being written: nothing to record.
    if ((req.socket as HttpSocket)._httpMessage !== res) {
      const state = conns.get(req.socket);
      if (state !== undefined) state.queued = res;
    }
    if (self.draining) {
      res.shouldKeepAlive = false;
      const state = conns.get(req.socket);
      if (state !== undefined) state.idleSince = undefined;
    }
  });
  return self;
}

/** An answer is in flight until its last byte is handed to the socket (or the socket went). */
function inFlight(res: http.ServerResponse | null | undefined): res is http.ServerResponse {
  return res !== undefined && res !== null && !res.writableFinished && !res.destroyed;
}

/** The last answer started on the connection and not finished: the queued one, else the one being written. */
function lastInFlight(socket: Socket, state: ConnectionState): http.ServerResponse | undefined {
  if (inFlight(state.queued)) return state.queued;
  state.queued = undefined;
  const current = (socket as HttpSocket)._httpMessage;
  return inFlight(current) ? current : undefined;
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
  for (const [socket, state] of conns) {
    const last = lastInFlight(socket, state);
    if (last !== undefined && !last.headersSent) last.shouldKeepAlive = false;
  }
  return new Promise((resolve) => {
    // A connection counts as idle from the first sweep that finds nothing in flight on it (for
    // one idle before the drain, from its start: never sooner than idleMs after it).
    const sweep = (): void => {
      const now = Date.now();
      for (const [socket, state] of conns) {
        if (lastInFlight(socket, state) !== undefined) {
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
