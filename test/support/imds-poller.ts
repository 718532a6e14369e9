/**
 * A pod polling the metadata service, for the rollout test (run inside a lab pod namespace):
 *
 *   node dist/test/support/imds-poller.js <url> <everyMs> <fresh|keepalive> <timeoutMs>
 *
 * Sends GET <url> every <everyMs> (one at a time), over a new connection each time (fresh) or
 * over a keep-alive agent's connections (keepalive: the default of Node >= 19's global agent,
 * which the AWS SDK's metadata client uses). On SIGTERM prints one JSON line with every outcome
 * counted: ok (200 and not the node's role), nodeRole (an answer naming node-role), refused
 * (ECONNREFUSED), failed (anything else: resets, timeouts, non-200), and the first failures.
 */
import http from 'node:http';

const [url, everyText, mode, timeoutText] = process.argv.slice(2) as [string, string, string, string];
const everyMs = Number(everyText);
const timeoutMs = Number(timeoutText);
const agent = new http.Agent({ keepAlive: mode === 'keepalive', maxSockets: 1 });

const counts = { ok: 0, nodeRole: 0, refused: 0, failed: 0 };
const failures: string[] = [];
let stopping = false;

function once(): Promise<void> {
  const started = Date.now();
  return new Promise((resolve) => {
    const req = http.get(url, { agent, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        if (body.includes('node-role')) counts.nodeRole++;
        else if (res.statusCode === 200) counts.ok++;
        else note(`${new Date(started).toISOString()} ${res.statusCode} ${body.slice(0, 200)}`);
        resolve();
      });
      res.on('error', (err) => {
        note(`${new Date(started).toISOString()} response ${err.message}`);
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') {
        counts.refused++;
        failures.push(`${new Date(started).toISOString()} refused`);
      } else note(`${new Date(started).toISOString()} ${err.code ?? ''} ${err.message}`);
      resolve();
    });
  });
}

function note(failure: string): void {
  counts.failed++;
  if (failures.length < 20) failures.push(failure);
}

process.on('SIGTERM', () => {
  stopping = true;
});

process.stdout.write('polling\n');
while (!stopping) {
  const t0 = Date.now();
  await once();
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, everyMs - (Date.now() - t0))));
}
process.stdout.write(`result ${JSON.stringify({ url, mode, ...counts, failures })}\n`);
agent.destroy();
