#!/usr/bin/env node
/**
 * A closed-loop HTTP/1.1 load generator with microsecond latencies, run as its own process so
 * it does not share an event loop with the server under test (it still shares the 2 CPUs).
 *
 * Why not autocannon alone: autocannon's latency histogram records whole milliseconds, and
 * podiam's answers take tens of microseconds; and autocannon cannot bind a source address,
 * which is how podiam tells pods apart. This one keeps `connections` keep-alive sockets, each
 * with one request in flight (no pipelining), each optionally bound to a source address
 * (`localAddresses[i % n]`), and times every request from write to the last body byte.
 *
 *   node scripts/bench/loadgen.mjs '<json options>'   ->  one JSON line on stdout
 *
 * Options: host, port, path, method (GET), headers ({}), connections (1), durationMs (5000),
 * warmupMs (1000; requests answered during warm-up are not counted), maxRequests (5e6),
 * localAddresses ([]), paths ([]: connection i asks paths[i % n] instead of path, so each
 * simulated pod can ask for its own role), expectStatus (200).
 *
 * Loopback only: refuses any host outside 127.0.0.0/8. Bounded by count and time, and exits
 * by itself durationMs + warmupMs + 10 s after it starts, whatever happens.
 */
import net from 'node:net';

const opts = JSON.parse(process.argv[2] ?? '{}');
const host = opts.host ?? '127.0.0.1';
if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)) {
  process.stderr.write(`loadgen: refusing non-loopback host ${host}\n`);
  process.exit(2);
}
const port = opts.port;
const connections = opts.connections ?? 1;
const durationMs = opts.durationMs ?? 5000;
const warmupMs = opts.warmupMs ?? 1000;
const maxRequests = opts.maxRequests ?? 5_000_000;
const localAddresses = opts.localAddresses ?? [];
const expectStatus = opts.expectStatus ?? 200;
for (const a of localAddresses) {
  if (!/^127\./.test(a)) {
    process.stderr.write(`loadgen: refusing non-loopback source ${a}\n`);
    process.exit(2);
  }
}

const paths = opts.paths ?? [];
const headerLines = Object.entries({ Host: `${host}:${port}`, ...(opts.headers ?? {}) })
  .map(([k, v]) => `${k}: ${v}\r\n`)
  .join('');
const requestFor = (p) => Buffer.from(`${opts.method ?? 'GET'} ${p} HTTP/1.1\r\n${headerLines}\r\n`, 'latin1');
const REQUESTS = (paths.length > 0 ? paths : [opts.path]).map(requestFor);

const hardStop = setTimeout(() => finish('hard timeout'), durationMs + warmupMs + 10_000);
hardStop.unref();

const t0 = performance.now();
const measureFrom = t0 + warmupMs;
const deadline = measureFrom + durationMs;

let latencies = new Float64Array(1 << 16);
let count = 0; // measured responses
let total = 0; // all responses, warm-up included
let unexpected = 0;
let errors = 0;
let reconnects = 0;
let bytes = 0;
let measuredEnd = 0;
let done = false;
const statuses = {};

function record(us) {
  if (count === latencies.length) {
    const bigger = new Float64Array(latencies.length * 2);
    bigger.set(latencies);
    latencies = bigger;
  }
  latencies[count++] = us;
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

function open(i) {
  const localAddress = localAddresses.length > 0 ? localAddresses[i % localAddresses.length] : undefined;
  const request = REQUESTS[i % REQUESTS.length];
  const socket = net.connect({ host, port, ...(localAddress !== undefined && { localAddress }) });
  socket.setNoDelay(true);
  let buf = null;
  let sentAt = 0;
  let need = -1; // total bytes of the current response once the head is parsed
  let status = 0;
  let close = false;

  const send = () => {
    if (done) return;
    const now = performance.now();
    if (now >= deadline || total >= maxRequests) {
      socket.end();
      check();
      return;
    }
    sentAt = now;
    socket.write(request);
  };

  socket.on('connect', send);
  socket.on('data', (chunk) => {
    buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
    for (;;) {
      if (need < 0) {
        const end = buf.indexOf(CRLFCRLF);
        if (end < 0) return;
        const head = buf.latin1Slice(0, end);
        status = Number(head.slice(9, 12));
        const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        close = /\r\nconnection:\s*close/i.test(head);
        need = end + 4 + (m === null ? 0 : Number(m[1]));
      }
      if (buf.length < need) return;
      const now = performance.now();
      bytes += need;
      total++;
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status !== expectStatus) unexpected++;
      if (sentAt >= measureFrom && now <= deadline) {
        record((now - sentAt) * 1000);
        measuredEnd = now;
      }
      buf = buf.length === need ? null : buf.subarray(need);
      need = -1;
      if (close) {
        reconnects++;
        socket.destroy();
        if (!done) open(i);
        return;
      }
      send();
      if (buf === null) return;
    }
  });
  socket.on('error', () => {
    errors++;
  });
  socket.on('close', () => {
    live.delete(socket);
    check();
  });
  live.add(socket);
}

const live = new Set();
function check() {
  if (!done && live.size === 0) finish('done');
}

function pct(sorted, p) {
  if (sorted.length === 0) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

function finish(reason) {
  if (done) return;
  done = true;
  for (const s of live) s.destroy();
  const sorted = latencies.subarray(0, count).sort();
  const measuredMs = Math.max(1, Math.min(deadline, measuredEnd || deadline) - measureFrom);
  // Latencies in milliseconds, microsecond resolution.
  const ms = (q) => {
    const us = pct(sorted, q);
    return us === null ? null : Math.round(us) / 1000;
  };
  const out = {
    reason,
    connections,
    requests: count,
    totalResponses: total,
    rps: Math.round((count / measuredMs) * 1000),
    p50: ms(50),
    p90: ms(90),
    p99: ms(99),
    max: ms(100),
    unexpected,
    statuses,
    errors,
    reconnects,
    bytes,
    cpuMs: Math.round((process.cpuUsage().user + process.cpuUsage().system) / 1000),
    wallMs: Math.round(performance.now() - t0),
  };
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

for (let i = 0; i < connections; i++) open(i);
