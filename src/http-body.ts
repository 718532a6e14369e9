/**
 * A request body read whole, up to a size: past it the read stops at once with 413 (the webhook's
 * AdmissionReviews, the broker's agent requests). A body longer than its Content-Length said is
 * cut off by the HTTP parser itself.
 */
import type { IncomingMessage } from 'node:http';
import { BadRequest } from './errors.js';

export function readBody(req: IncomingMessage, maxBytes: number, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) {
        req.pause();
        reject(new BadRequest(413, `${what} larger than ${maxBytes} bytes`));
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
