/**
 * Caps on open connections, per source IP and in all, for the listeners pods reach (the metadata
 * listeners, the token listeners). A pod that opens connections and keeps them alive costs an fd
 * and a few KiB each: without a cap one pod could hold tens of thousands and push podiam past its
 * memory limit, taking every pod of the node with it.
 *
 * Over a cap the connection is closed at once, before the HTTP server sees it (no parser, no
 * timers), and counted. Below the caps a connection costs one Map update on accept and one on
 * close: nothing per request, so the cached-credentials path is as fast as before.
 */
import type net from 'node:net';

export type ConnectionLimit = 'per-ip' | 'total';

export interface ConnectionLimitOptions {
  /** Open connections one source IP may hold (--max-connections-per-ip). */
  readonly maxPerIp: number;
  /** Open connections all sources together may hold on the servers attached (--max-connections). */
  readonly max: number;
  readonly onRefused?: (limit: ConnectionLimit) => void;
}

export class ConnectionLimiter {
  private readonly byIp = new Map<string, number>();
  private open = 0;

  constructor(private readonly options: ConnectionLimitOptions) {}

  /**
   * Puts the caps in front of the server's own connection handling (http's, or tls's for https):
   * its 'connection' listeners run only for connections admitted. Servers attached to one limiter
   * share its total (e.g. the IPv4 and IPv6 metadata listeners).
   */
  attach(server: net.Server): void {
    const inner = server.listeners('connection') as Array<(socket: net.Socket) => void>;
    server.removeAllListeners('connection');
    server.on('connection', (socket: net.Socket) => {
      if (!this.admit(socket)) return;
      for (const listener of inner) listener.call(server, socket);
    });
  }

  /** Open connections now, in all and from one IP (for tests and /debug). */
  count(ip?: string): number {
    return ip === undefined ? this.open : (this.byIp.get(normalize(ip)) ?? 0);
  }

  private admit(socket: net.Socket): boolean {
    const ip = normalize(socket.remoteAddress ?? '');
    const fromIp = this.byIp.get(ip) ?? 0;
    const limit: ConnectionLimit | undefined = this.open >= this.options.max ? 'total' : fromIp >= this.options.maxPerIp ? 'per-ip' : undefined;
    if (limit !== undefined) {
      // Closed at once: the client sees a reset/EOF and its SDK retries on a fresh connection
      // (after its own pool frees one); nothing of it stays here.
      socket.destroy();
      this.options.onRefused?.(limit);
      return false;
    }
    this.open += 1;
    this.byIp.set(ip, fromIp + 1);
    socket.once('close', () => {
      this.open -= 1;
      const left = (this.byIp.get(ip) ?? 1) - 1;
      if (left <= 0) this.byIp.delete(ip);
      else this.byIp.set(ip, left);
    });
    return true;
  }
}

/** One count per address, whichever family the listener accepted it on. */
function normalize(ip: string): string {
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}
