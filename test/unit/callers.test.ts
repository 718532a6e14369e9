import { Callers, nodeAddresses } from '../../src/imds/callers.js';
import { CallerNotAllowed, NotReady } from '../../src/errors.js';
import type { PodInfo } from '../../src/roles.js';

const web: PodInfo = { namespace: 'ns', name: 'web', uid: 'uid-web', ips: ['10.1.0.5'], phase: 'Running', hostNetwork: false, createdMs: 0, deleting: false, annotations: {} };

function callers(opts: { synced?: boolean; hostIps?: string[] } = {}) {
  const waits: number[] = [];
  const c = new Callers({
    isNodeAddress: nodeAddresses(opts.hostIps ?? ['10.0.0.1']),
    pods: {
      ready: async () => {
        if (!(opts.synced ?? true)) throw new NotReady('the pods informer');
      },
      waitFor: async (ip, ms) => {
        waits.push(ms);
        return ip === '10.1.0.5' ? web : undefined;
      },
    },
    podWaitMs: 900,
  });
  return { c, waits };
}

describe('nodeAddresses', () => {
  test('127.0.0.1, ::1 and every host IP given; nothing else', () => {
    const own = nodeAddresses(['10.0.0.1', ' 2001:DB8::1 ']);
    for (const ip of ['127.0.0.1', '::1', '10.0.0.1', '2001:db8::1']) expect(own(ip)).toBe(true);
    for (const ip of ['10.0.0.2', '127.10.0.5', '2001:db8::2', '']) expect(own(ip)).toBe(false);
    expect(nodeAddresses([])('127.0.0.1')).toBe(true);
  });
});

describe('Callers.admit', () => {
  test('the node, a pod (by UID), or CallerNotAllowed after waiting for the pod', async () => {
    const { c, waits } = callers();
    expect(await c.admit('10.0.0.1')).toEqual({ kind: 'node', id: 'node' });
    expect(await c.admit('10.1.0.5')).toMatchObject({ kind: 'pod', id: 'uid-web' });
    await expect(c.admit('192.168.7.7')).rejects.toBeInstanceOf(CallerNotAllowed);
    // A stranger waited as a pod in its start race would.
    expect(waits).toContain(900);
  });

  test('before the informer synced, only the node is served', async () => {
    const { c } = callers({ synced: false });
    expect((await c.admit('127.0.0.1')).kind).toBe('node');
    await expect(c.admit('10.1.0.5')).rejects.toBeInstanceOf(NotReady);
  });
});
