/**
 * A bench-only reverse proxy in front of moto's STS that rewrites the <Expiration> of every
 * AssumeRole answer to now + ttlMs. podiam's shortest session is 15 minutes (--iam-role-session-ttl),
 * so this is how the bench compresses hours of refreshes into minutes without a hidden flag:
 * podiam sees credentials that live ttlMs and schedules its refreshes from that.
 *
 * Loopback only: the target must be a 127.x URL.
 */
import http from 'node:http';

export async function startExpiryRewriter(target, ttlMs) {
  const t = new URL(target);
  if (t.protocol !== 'http:' || !/^127\./.test(t.hostname)) throw new Error(`rewriter: loopback http targets only, got ${target}`);
  let rewritten = 0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const headers = { ...req.headers };
      delete headers['connection'];
      const up = http.request({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers, agent }, (upRes) => {
        const body = [];
        upRes.on('data', (c) => body.push(c));
        upRes.on('end', () => {
          let text = Buffer.concat(body).toString('utf8');
          text = text.replace(/<Expiration>[^<]*<\/Expiration>/g, () => {
            rewritten++;
            return `<Expiration>${new Date(Date.now() + ttlMs).toISOString()}</Expiration>`;
          });
          const out = Buffer.from(text, 'utf8');
          const outHeaders = { ...upRes.headers, 'content-length': String(out.length) };
          delete outHeaders['transfer-encoding'];
          delete outHeaders['connection'];
          res.writeHead(upRes.statusCode ?? 502, outHeaders);
          res.end(out);
        });
        upRes.on('error', () => res.destroy());
      });
      up.on('error', () => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
      up.end(Buffer.concat(chunks));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  return {
    url: `http://127.0.0.1:${port}`,
    get rewritten() {
      return rewritten;
    },
    async stop() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}
