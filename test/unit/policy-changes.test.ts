/**
 * The broker's change feed (src/broker/policy-changes.ts): a poll is answered at once when a
 * change after `since` touches a namespace with pods on the agent's node, else held and answered
 * empty; other nodes' namespaces are never told; a replica that cannot cover `since` says reset.
 */
import { KEEP_MS, MAX_CHANGES, PolicyChanges, SLACK_MS } from '../../src/broker/policy-changes.js';

function feed(holdMs = 200) {
  let now = 1_000_000;
  // node -> the namespaces its pods are in, and the ServiceAccounts they run as (namespace/name).
  const onNode = new Map<string, Set<string>>([
    // team-a/*: node-a's pods run as every ServiceAccount of team-a.
    ['node-a', new Set(['team-a', 'team-a/*', 'shared', 'shared/default', 'shared/app-a'])],
    ['node-b', new Set(['team-b', 'team-b/default', 'shared', 'shared/default', 'shared/app-b'])],
  ]);
  const hasPodsOn = (node: string, ns: string, sa?: string) => {
    const on = onNode.get(node);
    return on !== undefined && (sa === undefined ? on.has(ns) : on.has(`${ns}/${sa}`) || on.has(`${ns}/*`));
  };
  const changes = new PolicyChanges({ hasPodsOn, now: () => now, holdMs });
  return { changes, advance: (ms: number) => (now += ms), now: () => now };
}

test('before the informers have listed nothing is recorded; a first poll is answered at once with the time to poll from', async () => {
  const { changes, now } = feed();
  changes.record('team-a', undefined);
  changes.begin();
  expect(await changes.wait('node-a', undefined)).toEqual({ now: now(), reset: false, changes: [] });
});

/** A feed that has begun, and both nodes' polls held from a moment before now. */
function heldPolls() {
  const f = feed(5_000);
  f.changes.begin();
  const since = f.now();
  f.advance(SLACK_MS + 1);
  return { ...f, a: f.changes.wait('node-a', since), b: f.changes.wait('node-b', since) };
}

test('a held poll is answered as soon as its node is touched, with that change only', async () => {
  const { changes, advance, a, b } = heldPolls();
  expect(changes.held()).toBe(2);
  changes.record('team-a', 'builder');
  changes.record('team-a', 'builder');
  const t0 = Date.now();
  const told = await a;
  expect(told).toEqual({ now: expect.any(Number), reset: false, changes: [{ namespace: 'team-a', serviceAccount: 'builder' }] });
  expect(Date.now() - t0).toBeLessThan(1_000);
  // node-b has no pod in team-a: it is not told, and keeps waiting.
  expect(changes.held()).toBe(1);
  changes.record('shared', undefined);
  expect(await b).toMatchObject({ reset: false, changes: [{ namespace: 'shared' }] });

  // The next poll, from the answer's cursor, is held: the change is not told again (an agent
  // answered at once poll after poll would ask the broker about its pods in a loop).
  advance(1);
  // node-a has pods in shared too: told of it (and only of it) once...
  const told2 = await changes.wait('node-a', told.now);
  expect(told2.changes).toEqual([{ namespace: 'shared' }]);
  // ...and then held.
  const next = changes.wait('node-a', told2.now);
  expect(changes.held()).toBe(1);
  changes.record('team-a', undefined);
  expect(await next).toMatchObject({ changes: [{ namespace: 'team-a' }] });
});

test('more changes than an answer carries: reset instead', async () => {
  const { changes, advance, now } = feed();
  changes.begin();
  const since = now();
  advance(SLACK_MS + 1);
  for (let i = 0; i <= MAX_CHANGES; i++) changes.record('team-a', `sa-${i}`);
  expect(await changes.wait('node-a', since)).toMatchObject({ reset: true, changes: [] });
});

test('nothing for the node: the poll is answered empty after the hold', async () => {
  const { changes, advance, now } = feed(100);
  changes.begin();
  const since = now();
  advance(SLACK_MS + 1);
  changes.record('team-b', undefined);
  const t0 = Date.now();
  expect(await changes.wait('node-a', since)).toEqual({ now: now(), reset: false, changes: [] });
  expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
});

test('a change a moment before `since` (another replica saw it later) is still told: the slack', async () => {
  const { changes, advance, now } = feed();
  changes.begin();
  advance(SLACK_MS * 2);
  changes.record('team-a', undefined);
  advance(1_000);
  const answer = await changes.wait('node-a', now());
  expect(answer.changes).toEqual([{ namespace: 'team-a' }]);
});

test('`since` before this replica began, or before what it still keeps: reset; just after it began: none', async () => {
  const { changes, advance, now } = feed();
  const early = now();
  advance(1_000);
  changes.begin();
  const justAfter = now() + 1;
  advance(SLACK_MS * 2);
  expect(await changes.wait('node-a', early)).toMatchObject({ reset: true, changes: [] });
  changes.record('team-a', undefined);
  expect(await changes.wait('node-a', justAfter)).toMatchObject({ reset: false, changes: [{ namespace: 'team-a' }] });
  // An agent cut off for longer than changes are kept, one of which it never heard: reset.
  const since = now();
  advance(1);
  changes.record('team-a', 'builder');
  advance(KEEP_MS + 1);
  changes.record('team-b', undefined);
  expect(await changes.wait('node-a', since)).toMatchObject({ reset: true });
});

test('close() answers every held poll at once (a replica stopping)', async () => {
  const { changes, advance, now } = feed(60_000);
  changes.begin();
  const since = now();
  advance(SLACK_MS + 1);
  const polls = [changes.wait('node-a', since), changes.wait('node-b', since)];
  changes.close();
  expect((await Promise.all(polls)).map((a) => a.changes)).toEqual([[], []]);
  expect(changes.held()).toBe(0);
});

test("a ServiceAccount is told only to the nodes whose pods run as it, even in a namespace they share", async () => {
  const { changes, a, b } = heldPolls();
  // app-b runs only on node-b: node-a, which has other pods in shared, never hears its name.
  changes.record('shared', 'app-b');
  expect(await b).toMatchObject({ reset: false, changes: [{ namespace: 'shared', serviceAccount: 'app-b' }] });
  expect(changes.held()).toBe(1);
  // A change of the namespace itself is everyone's there.
  changes.record('shared', undefined);
  expect(await a).toMatchObject({ reset: false, changes: [{ namespace: 'shared' }] });
});
