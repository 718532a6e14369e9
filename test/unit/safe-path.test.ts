import { BadRequest } from '../../src/errors.js';
import { safePath } from '../../src/server.js';

function rejection(raw: string): BadRequest {
  try {
    safePath(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(BadRequest);
    return err as BadRequest;
  }
  throw new Error(`expected ${JSON.stringify(raw)} to be refused`);
}

describe('safePath', () => {
  it.each([
    '/',
    '/latest/meta-data/',
    '/latest/meta-data/iam/security-credentials/',
    '/latest/meta-data/iam/security-credentials/my-role',
    '/latest/api/token',
    '/2009-04-04/meta-data/instance-id',
    '/latest/meta-data/placement/availability-zone',
    '/healthz',
    '/latest/meta-data/a...b',
    '/latest/meta-data/.hidden',
  ])('passes %s', (p) => {
    expect(safePath(p)).toEqual({ path: p, decoded: p });
  });

  it('decodes harmless percent-encoding', () => {
    expect(safePath('/latest/meta-data/iam/security-credentials/my%2Drole')).toEqual({
      path: '/latest/meta-data/iam/security-credentials/my%2Drole',
      decoded: '/latest/meta-data/iam/security-credentials/my-role',
    });
  });

  it('strips the query string', () => {
    expect(safePath('/latest/meta-data/?x=1&y=/../..')).toEqual({ path: '/latest/meta-data/', decoded: '/latest/meta-data/' });
    expect(safePath('/healthz?')).toEqual({ path: '/healthz', decoded: '/healthz' });
  });

  it.each([
    ['dot-dot segment', '/latest/meta-data/../user-data'],
    ['trailing dot-dot', '/latest/meta-data/iam/..'],
    ['dot segment', '/latest/./meta-data/'],
    ['trailing dot', '/latest/meta-data/.'],
    ['encoded dot-dot', '/latest/meta-data/%2e%2e/user-data'],
    ['upper-case encoded dot-dot', '/latest/meta-data/%2E%2E/user-data'],
    ['half-encoded dot-dot', '/latest/meta-data/.%2e/user-data'],
    ['encoded dot', '/latest/%2e/meta-data'],
    ['encoded slash', '/latest/meta-data/iam%2Fsecurity-credentials/'],
    ['lower-case encoded slash', '/latest/meta-data/iam%2fsecurity-credentials/'],
    ['encoded backslash', '/latest/meta-data/iam%5csecurity-credentials'],
    ['upper-case encoded backslash', '/latest/meta-data/iam%5Csecurity-credentials'],
    ['double slash', '/latest//meta-data/iam/'],
    ['leading double slash', '//latest/meta-data/'],
    ['backslash', '/latest/meta-data\\iam'],
    ['NUL', '/latest/meta-data/%00'],
    ['newline', '/latest/meta-data/%0a'],
    ['raw control char', '/latest/meta-data/\u0001'],
    ['DEL', '/latest/meta-data/%7f'],
    ['bad percent-encoding', '/latest/meta-data/%zz'],
    ['truncated percent-encoding', '/latest/meta-data/%2'],
    ['invalid UTF-8', '/latest/meta-data/%c3%28'],
    ['relative path', 'latest/meta-data/'],
    ['absolute URL', 'http://169.254.169.254/latest/meta-data/'],
  ])('refuses %s with 400', (_what, raw) => {
    const err = rejection(raw);
    expect(err.status).toBe(400);
    expect(err.code).toBe('BadRequest');
  });

  it('refuses a too long path with 414', () => {
    const err = rejection('/' + 'a'.repeat(2000));
    expect(err.status).toBe(414);
    expect(safePath('/' + 'a'.repeat(1000)).path).toHaveLength(1001);
  });

  it('the length limit applies to the path, not the query', () => {
    expect(safePath('/latest/meta-data/?' + 'q'.repeat(2000)).path).toBe('/latest/meta-data/');
  });
});
