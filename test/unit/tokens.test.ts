import { TokenBroker } from '../../src/imds/tokens.js';
import { TokenTableFull } from '../../src/errors.js';

const pod = (ip: string, id: string) => ({ ip, id });

describe('TokenBroker', () => {
  test('a token stands for the upstream one, for its holder only (IP and UID)', () => {
    const broker = new TokenBroker();
    const t = broker.wrap('real', 60, pod('10.0.0.1', 'uid-a'));
    expect(t).toHaveLength(56);
    expect(broker.unwrap(t, pod('10.0.0.1', 'uid-a'))).toBe('real');
    // Same IP, another pod (the IP was reused): not its token.
    expect(broker.unwrap(t, pod('10.0.0.1', 'uid-b'))).toBeUndefined();
    // Same pod id, another address.
    expect(broker.unwrap(t, pod('10.0.0.2', 'uid-a'))).toBeUndefined();
    expect(broker.unwrap('not-ours', pod('10.0.0.1', 'uid-a'))).toBeUndefined();
  });

  test('expiry, with an injected clock', () => {
    let now = 0;
    const broker = new TokenBroker({ now: () => now });
    const t = broker.wrap('real', 10, pod('10.0.0.1', 'a'));
    now = 9_999;
    expect(broker.unwrap(t, pod('10.0.0.1', 'a'))).toBe('real');
    now = 10_000;
    expect(broker.unwrap(t, pod('10.0.0.1', 'a'))).toBeUndefined();
    expect(broker.size()).toBe(0);
  });

  test('a caller past its cap loses its own oldest token, never another caller’s', () => {
    const broker = new TokenBroker({ maxPerCaller: 4, maxTokens: 100 });
    const victim = broker.wrap('v', 60, pod('10.0.0.9', 'victim'));
    const mine = Array.from({ length: 50 }, (_, i) => broker.wrap(`a${i}`, 60, pod('10.0.0.1', 'attacker')));
    expect(broker.unwrap(victim, pod('10.0.0.9', 'victim'))).toBe('v');
    expect(broker.size()).toBe(5);
    expect(broker.unwrap(mine[0]!, pod('10.0.0.1', 'attacker'))).toBeUndefined();
    expect(broker.unwrap(mine[49]!, pod('10.0.0.1', 'attacker'))).toBe('a49');
  });

  test('a full table refuses new tokens (after dropping expired ones) instead of evicting anyone', () => {
    let now = 0;
    const broker = new TokenBroker({ maxPerCaller: 2, maxTokens: 3, now: () => now });
    const a = broker.wrap('a', 10, pod('10.0.0.1', 'a'));
    broker.wrap('b', 60, pod('10.0.0.2', 'b'));
    broker.wrap('c', 60, pod('10.0.0.3', 'c'));
    expect(() => broker.wrap('d', 60, pod('10.0.0.4', 'd'))).toThrow(TokenTableFull);
    now = 10_000; // a's token expired: its place is free again.
    expect(broker.wrap('d', 60, pod('10.0.0.4', 'd'))).toHaveLength(56);
    expect(broker.unwrap(a, pod('10.0.0.1', 'a'))).toBeUndefined();
  });
  test('a caller’s tokens go with it (its pod was deleted); the others stay', () => {
    const broker = new TokenBroker({ maxTokens: 128, maxPerCaller: 64 });
    const gone = Array.from({ length: 64 }, () => broker.wrap('real', 21600, pod('10.0.0.1', 'uid-gone')));
    const kept = broker.wrap('real', 21600, pod('10.0.0.2', 'uid-kept'));
    expect(broker.size()).toBe(65);
    broker.dropCaller('uid-gone');
    broker.dropCaller('uid-never-seen');
    expect(broker.size()).toBe(1);
    for (const t of gone) expect(broker.unwrap(t, pod('10.0.0.1', 'uid-gone'))).toBeUndefined();
    expect(broker.unwrap(kept, pod('10.0.0.2', 'uid-kept'))).toBe('real');
    // The table is free again for the next pods.
    for (let i = 0; i < 127; i++) broker.wrap('real', 21600, pod('10.0.0.3', `uid-${i}`));
    expect(broker.size()).toBe(128);
  });
});
