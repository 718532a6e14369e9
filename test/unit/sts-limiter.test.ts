/**
 * The STS queue (src/aws/sts.ts): at most N AssumeRole calls at once; a pod's call goes before
 * background ones (prefetch, refresh), and a background call a pod is waiting on is promoted.
 */
import { Urgency, createLimiter } from '../../src/aws/sts.js';

/** A task that runs until the test ends it, recording its start. */
function tasks() {
  const started: string[] = [];
  const ends = new Map<string, () => void>();
  const task = (name: string) => () =>
    new Promise<string>((resolve) => {
      started.push(name);
      ends.set(name, () => resolve(name));
    });
  const end = async (name: string): Promise<void> => {
    ends.get(name)!();
    // The limiter starts the next task after the ended one settles.
    for (let i = 0; i < 5; i++) await Promise.resolve();
  };
  return { started, task, end };
}

describe('STS queue', () => {
  it('runs at most max tasks at once, first come first served among equals', async () => {
    const limit = createLimiter(2);
    const { started, task, end } = tasks();
    const all = ['a', 'b', 'c', 'd'].map((n) => limit(task(n)));
    expect(started).toEqual(['a', 'b']);
    await end('b');
    expect(started).toEqual(['a', 'b', 'c']);
    await end('a');
    expect(started).toEqual(['a', 'b', 'c', 'd']);
    await end('c');
    await end('d');
    await expect(Promise.all(all)).resolves.toEqual(['a', 'b', 'c', 'd']);
  });

  it('a waiting urgent call starts before every waiting background call', async () => {
    const limit = createLimiter(1);
    const { started, task, end } = tasks();
    void limit(task('running'));
    void limit(task('prefetch-1'), new Urgency(false));
    void limit(task('prefetch-2'), new Urgency(false));
    void limit(task('pod'), new Urgency(true));
    void limit(task('no-urgency-given'));
    await end('running');
    await end('pod');
    await end('no-urgency-given');
    await end('prefetch-1');
    expect(started).toEqual(['running', 'pod', 'no-urgency-given', 'prefetch-1', 'prefetch-2']);
  });

  it('a promoted background call moves to the urgent queue and still runs exactly once', async () => {
    const limit = createLimiter(1);
    const { started, task, end } = tasks();
    void limit(task('running'));
    const urgencies = [1, 2, 3].map(() => new Urgency(false));
    const results = [1, 2, 3].map((i) => limit(task(`prefetch-${i}`), urgencies[i - 1]));
    urgencies[2]!.promote();
    urgencies[2]!.promote();
    await end('running');
    await end('prefetch-3');
    await end('prefetch-1');
    await end('prefetch-2');
    expect(started).toEqual(['running', 'prefetch-3', 'prefetch-1', 'prefetch-2']);
    await expect(Promise.all(results)).resolves.toEqual(['prefetch-1', 'prefetch-2', 'prefetch-3']);
  });

  it('promoting a call that already runs changes nothing', async () => {
    const limit = createLimiter(1);
    const { started, task, end } = tasks();
    const u = new Urgency(false);
    void limit(task('a'), u);
    void limit(task('b'), new Urgency(false));
    u.promote();
    expect(u.urgent).toBe(true);
    await end('a');
    await end('b');
    expect(started).toEqual(['a', 'b']);
  });
});
