import { HostInterfaceMonitor, SOON_MS, checkHostInterface, interfaceMatcher, parseRoutes4, parseRoutes6, routeOf } from '../../src/host-interfaces.js';

// As a Calico node prints them: a default route, the pod /32s behind cali*, a /26 block blackholed locally.
const ROUTE4 = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	00000000	0100000A	0003	0	0	0	00000000	0	0	0
eth0	0000000A	00000000	0001	0	0	0	00FFFFFF	0	0	0
cali1a2b3c4d5e6	0A02400A	00000000	0005	0	0	0	FFFFFFFF	0	0	0
down0	0B02400A	00000000	0000	0	0	0	FFFFFFFF	0	0	0
`;
const ROUTE6 = `fd000000000000000000000000000010 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00000001     cali1a2b3c4d5e6
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
`;

test('interfaceMatcher: iptables -i semantics (+ suffix wildcard, leading ! inverts)', () => {
  expect(['cali123', 'calico', 'eth0'].filter(interfaceMatcher('cali+'))).toEqual(['cali123', 'calico']);
  expect(['cni0', 'cni01'].filter(interfaceMatcher('cni0'))).toEqual(['cni0']);
  expect(['eth0', 'eni1', 'lxc2'].filter(interfaceMatcher('!eth0'))).toEqual(['eni1', 'lxc2']);
});

test('routes from /proc/net/route and ipv6_route: longest prefix wins; down and reject routes ignored', () => {
  const routes = [...parseRoutes4(ROUTE4), ...parseRoutes6(ROUTE6)];
  expect(routeOf('10.64.2.10', routes)).toBe('cali1a2b3c4d5e6');
  expect(routeOf('10.64.2.11', routes)).toBe('eth0'); // its /32 is down: the default route
  expect(routeOf('10.0.0.7', routes)).toBe('eth0');
  expect(routeOf('fd00::10', routes)).toBe('cali1a2b3c4d5e6');
  expect(routeOf('fd00::11', routes)).toBe('eth0');
  expect(routeOf('2001:db8::1', routes)).toBeNull();
});

test('checkHostInterface counts matching interfaces and pod IPs by the interface they are behind', async () => {
  const files = { interfaces: async () => ['lo', 'eth0', 'cali1a2b3c4d5e6', 'tunl0'], routes4: async () => ROUTE4, routes6: async () => ROUTE6 };
  expect(await checkHostInterface('cali+', ['10.64.2.10', 'fd00::10'], files)).toEqual({ pattern: 'cali+', matching: 1, podIps: { matching: 2, other: 0 }, examples: [] });
  expect(await checkHostInterface('docker0', ['10.64.2.10', 'fd00::10', '2001:db8::1'], files)).toEqual({
    pattern: 'docker0',
    matching: 0,
    podIps: { matching: 0, other: 3 },
    examples: [
      { ip: '10.64.2.10', iface: 'cali1a2b3c4d5e6' },
      { ip: 'fd00::10', iface: 'cali1a2b3c4d5e6' },
      { ip: '2001:db8::1', iface: null },
    ],
  });
});

test('a change of the node\'s pods brings a check within SOON_MS, once for a burst; none after stop()', async () => {
  let reads = 0;
  const files = { interfaces: async () => (reads++, ['lo', 'eth0', 'cali1a2b3c4d5e6']), routes4: async () => ROUTE4, routes6: async () => ROUTE6 };
  let ips = ['10.64.2.10'];
  const reports: number[] = [];
  const quiet = { warn: () => undefined, info: () => undefined };
  const monitor = new HostInterfaceMonitor({ pattern: 'cali+', podIps: () => ips, log: quiet, report: (r) => reports.push(r.podIps.matching + r.podIps.other), files });
  await monitor.check();
  monitor.start(60_000);
  ips = ['10.64.2.10', 'fd00::10'];
  for (let i = 0; i < 5; i++) monitor.soon();
  const t0 = Date.now();
  while (reports.length < 2 && Date.now() - t0 < 3 * SOON_MS) await new Promise((r) => setTimeout(r, 20));
  expect(reports).toEqual([1, 2]);
  expect(Date.now() - t0).toBeLessThan(SOON_MS + 500);
  await new Promise((r) => setTimeout(r, SOON_MS + 200));
  expect(reads).toBe(2);
  monitor.soon();
  await monitor.stop();
  await new Promise((r) => setTimeout(r, SOON_MS + 200));
  expect(reads).toBe(2);
});
