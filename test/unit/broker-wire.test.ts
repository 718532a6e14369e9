/**
 * The broker's wire format (src/credentials/broker-wire.ts): what an agent may send is parsed
 * strictly (400 with the reason), what the broker answers is checked field by field.
 */
import { parseChangesAnswer, parseChangesRequest, parsePodRequest } from '../../src/credentials/broker-wire.js';
import { BadRequest } from '../../src/errors.js';

test('a pod request: coordinates and a proof, nothing else accepted', () => {
  expect(parsePodRequest('{"namespace":"default","name":"app","uid":"u-1","proof":{"kind":"ip"}}', true)).toEqual({ namespace: 'default', name: 'app', uid: 'u-1', proof: { kind: 'ip' } });
  expect(() => parsePodRequest('not json', true)).toThrow(new BadRequest(400, 'body is not JSON'));
  expect(() => parsePodRequest('[1]', true)).toThrow(new BadRequest(400, 'body must be a JSON object'));
  expect(() => parsePodRequest('{"namespace":"Default","name":"app","uid":"u"}', false)).toThrow(/namespace is missing or not a valid Kubernetes namespace/);
});

test('a change poll: `since` a time in ms, or nothing; anything else is a 400 naming it', () => {
  expect(parseChangesRequest('{}')).toBeUndefined();
  expect(parseChangesRequest('{"since":1796457000000}')).toBe(1796457000000);
  expect(() => parseChangesRequest('null')).toThrow(new BadRequest(400, 'body must be a JSON object'));
  expect(() => parseChangesRequest('{')).toThrow(new BadRequest(400, 'body is not JSON'));
  for (const since of ['"1"', '-1', '1.5', '1e300']) expect(() => parseChangesRequest(`{"since":${since}}`)).toThrow(/since must be a time in ms/);
});

test("the broker's answer to a poll is checked field by field", () => {
  expect(parseChangesAnswer({ now: 1, reset: false, changes: [{ namespace: 'a' }, { namespace: 'b', serviceAccount: 'x' }] })).toBeDefined();
  expect(parseChangesAnswer({ now: 1, reset: false, changes: [{ namespace: 1 }] })).toBeUndefined();
  expect(parseChangesAnswer({ now: '1', reset: false, changes: [] })).toBeUndefined();
  expect(parseChangesAnswer({ now: 1, changes: [] })).toBeUndefined();
  expect(parseChangesAnswer({ now: 1, reset: false, changes: [{ namespace: 'a', serviceAccount: 2 }] })).toBeUndefined();
});
