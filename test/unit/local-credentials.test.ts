import { LocalCredentials } from '../../src/credentials/local.js';
import type { IssuedCredentials } from '../../src/aws/credential-cache.js';
import { RoleNotAllowed } from '../../src/errors.js';
import type { PodInfo, RoleRequest } from '../../src/roles.js';

const pod = (name: string): PodInfo => ({ namespace: 'ns', name, uid: `uid-${name}`, ips: ['10.0.0.1'], phase: 'Running', hostNetwork: false, createdMs: 0, deleting: false, annotations: {} });
const role: RoleRequest = { roleArn: 'arn:aws:iam::123456789012:role/app', roleName: 'app', externalId: undefined, sessionName: 'ns.app', pod: 'ns/app' };
const issued: IssuedCredentials = { request: role, accessKeyId: 'ASIAEXAMPLE', issuedMs: 0, expirationMs: 3_600_000, body: Buffer.from('{}'), credentials: { accessKeyId: 'ASIAEXAMPLE', secretAccessKey: 'secret', sessionToken: 'token', expiration: new Date(3_600_000) } };

function fixture() {
  const calls = { get: [] as RoleRequest[], peek: [] as RoleRequest[], prefetch: [] as RoleRequest[] };
  let fresh: IssuedCredentials | undefined = issued;
  const denied = new RoleNotAllowed('ns/denied', 'arn:aws:iam::123456789012:role/admin', 'ns', 'iam.amazonaws.com/allowed-roles');
  const source = new LocalCredentials({
    roleOf: (p) => (p.name === 'denied' ? denied : role),
    cache: {
      get: async (r) => {
        calls.get.push(r);
        return issued;
      },
      peek: (r) => {
        calls.peek.push(r);
        return fresh;
      },
      prefetch: (r) => void calls.prefetch.push(r),
    },
  });
  return { source, calls, denied, setFresh: (c: IssuedCredentials | undefined) => (fresh = c) };
}

describe('LocalCredentials', () => {
  it('resolves the role and fetches its credentials from the cache', async () => {
    const { source, calls } = fixture();
    await expect(source.role(pod('app'))).resolves.toBe(role);
    await expect(source.credentials(pod('app'), { kind: 'ip' })).resolves.toEqual({ role, creds: issued });
    expect(calls.get).toEqual([role]);
  });

  it('rejects a denied pod with its denial and never asks the cache', async () => {
    const { source, calls, denied } = fixture();
    await expect(source.role(pod('denied'))).rejects.toBe(denied);
    await expect(source.credentials(pod('denied'), { kind: 'token', token: 't' })).rejects.toBe(denied);
    expect(source.peek(pod('denied'))).toBeUndefined();
    source.prefetch(pod('denied'));
    expect(calls).toEqual({ get: [], peek: [], prefetch: [] });
  });

  it('peeks from memory: the role and the fresh credentials, or nothing when none are fresh', () => {
    const { source, setFresh } = fixture();
    expect(source.peek(pod('app'))).toEqual({ role, creds: issued });
    setFresh(undefined);
    expect(source.peek(pod('app'))).toBeUndefined();
  });

  it('prefetches the role of a pod that has one', () => {
    const { source, calls } = fixture();
    source.prefetch(pod('app'));
    expect(calls.prefetch).toEqual([role]);
  });
});
