/**
 * The association index (oldest wins a ServiceAccount) and the status writer: verdicts, and a
 * write only when the API server holds another verdict, checked again after the random delay.
 */
import { InvalidAssociation } from '../../src/errors.js';
import { AssociationIndex } from '../../src/kube/association-index.js';
import type { StoredAssociation } from '../../src/kube/association-index.js';
import { AssociationStatusWriter, verdictOf } from '../../src/kube/association-status.js';
import type { AssociationInfo } from '../../src/roles.js';

const stored = (name: string, createdMs: number, over: Partial<AssociationInfo> = {}, accepted?: StoredAssociation['accepted']): StoredAssociation => ({
  info: { name, namespace: 'shop', serviceAccount: 'web', roleArn: `arn:aws:iam::123456789012:role/${name}`, disableSessionTags: false, ...over },
  uid: `uid-${name}`,
  generation: 1,
  createdMs,
  accepted,
});
const ok = () => undefined;

test('two associations for one ServiceAccount: the older wins, the other is a Conflict naming it; removing the winner promotes the other', () => {
  const index = new AssociationIndex();
  const changed: string[] = [];
  index.onChange((a) => changed.push(a.name));
  index.upsert(stored('newer', 2000));
  index.upsert(stored('older', 1000));
  expect(index.of('shop', 'web')?.name).toBe('older');
  expect(verdictOf(index.get('newer')!, index, ok)).toMatchObject({ status: 'False', reason: 'Conflict', message: expect.stringContaining('older') });
  expect(verdictOf(index.get('older')!, index, ok)).toMatchObject({ status: 'True', reason: 'Accepted', observedGeneration: 1 });
  index.remove('older');
  expect(index.of('shop', 'web')?.name).toBe('newer');
  expect(index.of('shop', 'other')).toBeUndefined();
  expect(changed).toEqual(['newer', 'older', 'older']);
});

test('verdict reasons: InvalidArn from an InvalidAssociation, DeniedByNamespaceRestrictions otherwise', () => {
  const index = new AssociationIndex();
  index.upsert(stored('a', 1));
  expect(verdictOf(index.get('a')!, index, (a) => new InvalidAssociation(a.name, 'bad'))).toMatchObject({ reason: 'InvalidArn' });
  expect(verdictOf(index.get('a')!, index, () => new Error('not allowed'))).toMatchObject({ reason: 'DeniedByNamespaceRestrictions' });
});

test('the writer writes nothing before it is enabled, then only what differs, and keeps the transition time of an unchanged status', async () => {
  const index = new AssociationIndex();
  const patches: Array<{ path: string; body: any }> = [];
  const writer = new AssociationStatusWriter({ index, namespace: () => undefined, check: () => undefined, patch: async (path, body) => void patches.push({ path, body }), warn: () => undefined, maxDelayMs: 0 });
  index.onChange((a) => writer.reconcile(a.name));
  index.upsert(stored('a', 1));
  await new Promise((r) => setTimeout(r, 20));
  expect(patches).toEqual([]);
  writer.enable();
  await new Promise((r) => setTimeout(r, 20));
  expect(patches).toHaveLength(1);
  expect(patches[0]!.path).toBe('/apis/podiam.io/v1alpha1/podidentityassociations/a/status');
  const condition = patches[0]!.body.status.conditions[0];
  expect(condition).toMatchObject({ type: 'Accepted', status: 'True', reason: 'Accepted', observedGeneration: 1 });
  // The API server now holds it (the informer's update): nothing more to write.
  index.upsert({ ...stored('a', 1), accepted: { ...condition } });
  writer.reconcileAll();
  await new Promise((r) => setTimeout(r, 20));
  expect(patches).toHaveLength(1);
  // A new generation with the same verdict: written again, same lastTransitionTime.
  index.upsert({ ...stored('a', 1), generation: 2, accepted: { ...condition } });
  await new Promise((r) => setTimeout(r, 20));
  expect(patches).toHaveLength(2);
  expect(patches[1]!.body.status.conditions[0]).toMatchObject({ observedGeneration: 2, lastTransitionTime: condition.lastTransitionTime });
  writer.stop();
});

test('checked again after the delay: another node’s write that arrived meanwhile means no write', async () => {
  const index = new AssociationIndex();
  const patches: unknown[] = [];
  const writer = new AssociationStatusWriter({ index, namespace: () => undefined, check: () => undefined, patch: async (_p, body) => void patches.push(body), warn: () => undefined, maxDelayMs: 50, random: () => 1 });
  writer.enable();
  index.upsert(stored('a', 1));
  writer.reconcile('a');
  // Another node's verdict reaches the informer before the delay is over.
  index.upsert({ ...stored('a', 1), accepted: { status: 'True', reason: 'Accepted', message: verdictOf(stored('a', 1), index, ok).message, observedGeneration: 1 } });
  await new Promise((r) => setTimeout(r, 100));
  expect(patches).toEqual([]);
  writer.stop();
});
