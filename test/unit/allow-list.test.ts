import { checkMethod, classifyPath } from '../../src/imds/allow-list.js';
import { BadRequest } from '../../src/errors.js';

function status(fn: () => unknown): number {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BadRequest);
    return (err as BadRequest).status;
  }
  return 0;
}

describe('classifyPath: EC2 grammar', () => {
  test.each([
    '/',
    '/latest',
    '/latest/',
    '/1.0/meta-data/instance-id',
    '/2021-03-23/meta-data/',
    '/latest/meta-data/iam/security-credentials/',
    '/latest/meta-data/network/interfaces/macs/02:29:96:8f:6a:2d/local-ipv4s',
    '/latest/meta-data/public-keys/0/openssh-key',
    '/latest/meta-data/block-device-mapping/ebs0',
    '/latest/meta-data/tags/instance/Name',
    '/latest/dynamic/instance-identity/document',
    '/latest/user-data',
    '/latest/meta-data/a.b/c_d',
    // Role names podiam answers itself may use IAM's characters.
    '/latest/meta-data/iam/security-credentials/app+batch=1,x@y',
    '/latest/meta-data/iam/security-credentials/role.',
  ])('%s is a metadata path', (path) => {
    expect(classifyPath(path)).toBe('metadata');
  });

  test.each([
    '/latest/meta-data/iam;/security-credentials/',
    '/latest/meta-data/iam%20/security-credentials/',
    '/latest/meta-data/iam./security-credentials/',
    '/latest./meta-data/',
    '/meta-data/iam/security-credentials/',
    '/latest/dynamic/instance-identity/pkcs7;',
    '/latest/dynamic/instance-identity/pkcs7%20',
    '/latest/meta-data/.',
    '/latest/meta-data/..',
    '/latest/meta-data/x.',
    '/latest/meta-data/a+b',
    '/LATEST/meta-data/',
    '/2021-3-23/meta-data/',
    '/v1/credentials',
    '/latest//meta-data',
    '/favicon.ico',
    '',
  ])('%s is refused (400)', (path) => {
    expect(status(() => classifyPath(path))).toBe(400);
  });

  test('the token route and podiam’s own endpoints', () => {
    expect(classifyPath('/latest/api/token')).toBe('token');
    for (const p of ['/healthz', '/readyz', '/metrics', '/debug/store']) expect(classifyPath(p)).toBe('local');
    // Any other spelling of the token path is a metadata path, so a PUT on it is a 405.
    expect(classifyPath('/latest/api/token/')).toBe('metadata');
  });
});

describe('checkMethod', () => {
  test('PUT on the token route only; GET/HEAD elsewhere', () => {
    expect(status(() => checkMethod('PUT', 'token', '/latest/api/token'))).toBe(0);
    expect(status(() => checkMethod('GET', 'token', '/latest/api/token'))).toBe(405);
    for (const m of ['GET', 'HEAD']) {
      expect(status(() => checkMethod(m, 'metadata', '/latest/user-data'))).toBe(0);
      expect(status(() => checkMethod(m, 'local', '/metrics'))).toBe(0);
    }
    for (const m of ['PUT', 'POST', 'DELETE', 'PATCH', 'OPTIONS', 'CONNECT', 'TRACE', 'FOO']) {
      expect(status(() => checkMethod(m, 'metadata', '/latest/api/token/'))).toBe(405);
      expect(status(() => checkMethod(m, 'local', '/metrics'))).toBe(405);
    }
  });

  test('a token PUT on a dated version is 403, as EC2 answers it', () => {
    expect(status(() => checkMethod('PUT', 'metadata', '/2021-03-23/api/token'))).toBe(403);
    expect(status(() => checkMethod('PUT', 'metadata', '/1.0/api/token'))).toBe(403);
  });
});
