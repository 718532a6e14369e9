/** winston, text or JSON. Secrets never reach a transport: the redact format runs first. */
import winston from 'winston';
import type { LogFormat, LogLevel } from './config.js';

export type Logger = winston.Logger;

/** Field names whose values are secrets, wherever they appear. */
const SECRET_KEYS = /^(secretaccesskey|secret_access_key|sessiontoken|session_token|token|apitoken|api_token|authorization|x-aws-ec2-metadata-token|password)$/i;

function redact(value: unknown, depth = 0): unknown {
  if (depth > 4 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  if (value instanceof Error) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEYS.test(k) ? '<redacted>' : redact(v, depth + 1);
  return out;
}

const redactFormat = winston.format((info) => {
  for (const key of Object.keys(info)) {
    if (SECRET_KEYS.test(key)) info[key] = '<redacted>';
    else if (typeof info[key] === 'object') info[key] = redact(info[key]);
  }
  return info;
});

export function createLogger(options: { format: LogFormat; level: LogLevel; stream?: NodeJS.WritableStream }): Logger {
  const base = [winston.format.errors({ stack: false }), redactFormat(), winston.format.timestamp()];
  const format =
    options.format === 'json'
      ? winston.format.combine(...base, winston.format.json())
      : winston.format.combine(
          ...base,
          winston.format.printf(({ level, message, timestamp, ...rest }) => {
            const fields = Object.entries(rest)
              .filter(([, v]) => v !== undefined)
              .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s|"/.test(v) ? v : JSON.stringify(v)}`)
              .join(' ');
            return `${String(timestamp)} ${level.toUpperCase().padEnd(5)} ${String(message)}${fields ? ' ' + fields : ''}`;
          }),
        );
  const transport = options.stream
    ? new winston.transports.Stream({ stream: options.stream })
    : new winston.transports.Console({ stderrLevels: [] });
  return winston.createLogger({ level: options.level, format, transports: [transport] });
}
