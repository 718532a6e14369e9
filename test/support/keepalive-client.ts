/**
 * A pod's keep-alive connection to the metadata service, for the conntrack test:
 *
 *   node dist/test/support/keepalive-client.js <host> <path>
 *
 * Opens one TCP connection, sends GET <path> (Connection: keep-alive) and prints
 * `first <json>`; then, on SIGUSR1, sends the same request on the SAME connection and prints
 * `second <json>` and exits. The json is {status, body} for an answer, or {error} ('closed',
 * 'reset', 'timeout', or the socket error) when none came within 3 s.
 */
import net from 'node:net';

const [host, path] = process.argv.slice(2) as [string, string];
const request = `GET ${path} HTTP/1.1\r\nHost: ${host.includes(':') ? `[${host}]` : host}\r\nConnection: keep-alive\r\n\r\n`;

const socket = net.connect({ host, port: 80 });
let buffer = '';
let waiting: ((answer: object) => void) | undefined;
const answer = (a: object): void => {
  const w = waiting;
  waiting = undefined;
  w?.(a);
};

socket.setEncoding('utf8');
socket.on('data', (chunk: string) => {
  buffer += chunk;
  const end = buffer.indexOf('\r\n\r\n');
  if (end < 0) return;
  const length = Number(/content-length: *(\d+)/i.exec(buffer.slice(0, end))?.[1] ?? 0);
  if (buffer.length < end + 4 + length) return;
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(buffer)?.[1] ?? 0);
  const body = buffer.slice(end + 4, end + 4 + length);
  buffer = buffer.slice(end + 4 + length);
  answer({ status, body });
});
socket.on('error', (err: NodeJS.ErrnoException) => answer({ error: err.code === 'ECONNRESET' ? 'reset' : (err.code ?? err.message) }));
socket.on('close', () => answer({ error: 'closed' }));

function ask(): Promise<object> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => answer({ error: 'timeout' }), 3_000);
    waiting = (a) => {
      clearTimeout(timer);
      resolve(a);
    };
    socket.write(request);
  });
}

socket.once('connect', () => {
  void ask().then((first) => {
    process.stdout.write(`first ${JSON.stringify(first)}\n`);
    process.once('SIGUSR1', () => {
      void ask().then((second) => {
        process.stdout.write(`second ${JSON.stringify(second)}\n`);
        socket.destroy();
        process.exit(0);
      });
    });
  });
});
