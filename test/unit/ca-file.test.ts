/**
 * The broker's CA, read again when the kubelet updates the mounted file (src/ca-file.ts), and the
 * agent's link to the broker across a CA renewal (src/credentials/broker-transport.ts): the new
 * CA and the new serving certificate arrive at different moments, in either order.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CaFile, PREVIOUS_TRUST_MS, TrustedAgents, certificateCount } from '../../src/ca-file.js';
import { BrokerTransport } from '../../src/credentials/broker-transport.js';
import { BrokerUnavailable } from '../../src/errors.js';
import { makeCa, makeServingCertificate } from '../support/webhook.js';

let dir: string;
const pki: Array<{ ca: Buffer; cert: Buffer; key: Buffer }> = [];

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'podiam-ca-file-'));
  for (const name of ['old', 'new']) {
    const d = path.join(dir, name);
    mkdirSync(d);
    const ca = makeCa(d);
    const { certFile, keyFile } = makeServingCertificate(d, 'broker', 'podiam-broker', ['IP:127.0.0.1']);
    pki.push({ ca, cert: readFileSync(certFile), key: readFileSync(keyFile) });
  }
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('CaFile', () => {
  it('looks at the file at most every interval unless forced; a change trusts the new CA, and the one before it for an hour', async () => {
    const file = path.join(dir, 'ca-1.crt');
    writeFileSync(file, pki[0]!.ca);
    let now = 0;
    const changes: number[] = [];
    const ca = new CaFile(file, pki[0]!.ca, { everyMs: 10_000, now: () => now, onChange: (n) => changes.push(n) });
    expect([ca.ca, ca.version]).toEqual([[pki[0]!.ca], 0]);
    writeFileSync(file, pki[1]!.ca);
    await ca.refresh(); // within the interval: not looked at
    expect([ca.ca, ca.version]).toEqual([[pki[0]!.ca], 0]);
    now += 10_000;
    await ca.refresh();
    expect([ca.ca, ca.version]).toEqual([[pki[1]!.ca, pki[0]!.ca], 1]);
    expect(changes).toEqual([1]);
    now += 10_000;
    await ca.refresh(); // unchanged
    expect(ca.version).toBe(1);
    // Forced (a certificate was just refused): looked at at once.
    const both = Buffer.concat([pki[1]!.ca, pki[0]!.ca]);
    writeFileSync(file, both);
    await ca.refresh(true);
    expect([ca.ca, ca.version]).toEqual([[both, pki[1]!.ca], 2]);
    expect(changes).toEqual([1, 2]);
    // An hour after the change, only the file's.
    now += PREVIOUS_TRUST_MS;
    await ca.refresh();
    expect([ca.ca, ca.version]).toEqual([[both], 3]);
  });

  it('concurrent callers share one look at the file', async () => {
    const file = path.join(dir, 'ca-3.crt');
    writeFileSync(file, pki[0]!.ca);
    const ca = new CaFile(file, pki[0]!.ca, { everyMs: 0 });
    writeFileSync(file, pki[1]!.ca);
    await Promise.all([ca.refresh(), ca.refresh(), ca.refresh(true)]);
    expect(ca.version).toBe(1);
  });

  it("a client's agents are made again once per change, however many requests saw it; the superseded ones destroyed at close()", async () => {
    const file = path.join(dir, 'ca-4.crt');
    writeFileSync(file, pki[0]!.ca);
    const ca = new CaFile(file, pki[0]!.ca, { everyMs: 0 });
    const made: https.Agent[] = [];
    const agents = new TrustedAgents(ca, (trusted) => {
      const a = new https.Agent({ keepAlive: true, ca: trusted });
      made.push(a);
      return a;
    }, (a) => [a]);
    writeFileSync(file, pki[1]!.ca);
    const changed = await Promise.all([agents.refresh(false), agents.refresh(false), agents.refresh(true)]);
    expect(changed.filter(Boolean)).toHaveLength(1);
    expect(made).toHaveLength(2);
    expect(agents.agents).toBe(made[1]);
    expect(await agents.refresh(true)).toBe(false);
    const destroyed: https.Agent[] = [];
    for (const a of made) a.destroy = () => void destroyed.push(a);
    agents.close();
    expect(new Set(destroyed)).toEqual(new Set(made));
  });

  it('a file that cannot be read, or holds no CA certificate (mid-update, a key, a serving certificate), changes nothing', async () => {
    const file = path.join(dir, 'ca-2.crt');
    writeFileSync(file, pki[0]!.ca);
    const invalid: string[] = [];
    const ca = new CaFile(file, pki[0]!.ca, { everyMs: 0, onInvalid: (r) => invalid.push(r) });
    rmSync(file);
    await ca.refresh();
    for (const content of ['', '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n', pki[0]!.key.toString(), pki[0]!.cert.toString()]) {
      writeFileSync(file, content);
      await ca.refresh();
    }
    expect([ca.ca, ca.version]).toEqual([[pki[0]!.ca], 0]);
    expect(invalid).toHaveLength(4);
    expect(invalid[0]).toContain(file);
  });

  it('counts the CA certificates a PEM bundle holds, and none in anything else', () => {
    expect(certificateCount(pki[0]!.ca)).toBe(1);
    expect(certificateCount(Buffer.concat([pki[0]!.ca, pki[1]!.ca]))).toBe(2);
    expect(certificateCount(Buffer.from('garbage'))).toBe(0);
    expect(certificateCount(pki[0]!.key)).toBe(0);
    expect(certificateCount(pki[0]!.cert)).toBe(0);
  });
});

describe('BrokerTransport across a CA renewal', () => {
  let server: https.Server;
  let url: string;
  let tokenFile: string;

  beforeEach(async () => {
    server = https.createServer({ cert: pki[0]!.cert, key: pki[0]!.key }, (req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{"ok":true}');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    tokenFile = path.join(dir, 'token');
    writeFileSync(tokenFile, 'agent-token');
  });

  afterEach(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  /** The broker's certificate renewed, signed by the new CA; its open connections closed. */
  const renewServer = (): void => {
    server.setSecureContext({ cert: pki[1]!.cert, key: pki[1]!.key });
    server.closeAllConnections();
  };

  it('the broker renewed first: its certificate refused, the CA file read at once, the same replica asked again', async () => {
    const file = path.join(dir, 'ca-t1.crt');
    writeFileSync(file, pki[0]!.ca);
    const transport = new BrokerTransport({ urls: [url], ca: new CaFile(file, pki[0]!.ca), tokenFile, timeoutMs: 2000 });
    expect(await transport.post('/v1/x', {})).toEqual({ ok: true });
    renewServer();
    writeFileSync(file, pki[1]!.ca);
    // Within the 10 s between looks: only the refused certificate makes it read the file now.
    expect(await transport.post('/v1/x', {})).toEqual({ ok: true });
    transport.close();
  });

  it('the CA file renewed first: the broker, still on the old certificate, is trusted (the previous CA stays)', async () => {
    const file = path.join(dir, 'ca-t2.crt');
    writeFileSync(file, pki[0]!.ca);
    const transport = new BrokerTransport({ urls: [url], ca: new CaFile(file, pki[0]!.ca, { everyMs: 0 }), tokenFile, timeoutMs: 2000 });
    writeFileSync(file, pki[1]!.ca);
    server.closeAllConnections();
    expect(await transport.post('/v1/x', {})).toEqual({ ok: true });
    // Then the broker renews too: trusted as well.
    renewServer();
    expect(await transport.post('/v1/x', {})).toEqual({ ok: true });
    transport.close();
  });

  it("the broker's replica renewed before the agent's CA file: the agent asks the next replica, still on the old certificate", async () => {
    const other = https.createServer({ cert: pki[0]!.cert, key: pki[0]!.key }, (req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{"replica":2}');
      });
    });
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const file = path.join(dir, 'ca-t3.crt');
    writeFileSync(file, pki[0]!.ca);
    const transport = new BrokerTransport({ urls: [url, `https://127.0.0.1:${(other.address() as AddressInfo).port}`], ca: new CaFile(file, pki[0]!.ca), tokenFile, timeoutMs: 2000 });
    renewServer();
    expect(await transport.post('/v1/x', {})).toEqual({ replica: 2 });
    transport.close();
    other.closeAllConnections();
    await new Promise((resolve) => other.close(resolve));
  });

  it('a CA read once (before): the renewed broker is refused until the agent restarts', async () => {
    const transport = new BrokerTransport({ urls: [url], ca: pki[0]!.ca, tokenFile, timeoutMs: 2000 });
    expect(await transport.post('/v1/x', {})).toEqual({ ok: true });
    renewServer();
    await expect(transport.post('/v1/x', {})).rejects.toThrow(BrokerUnavailable);
    transport.close();
  });
});
