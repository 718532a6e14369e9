/**
 * A manual Clock for time-based unit tests: timers are held, never run by the event loop, and
 * fire in due order when the test calls advance(ms). Nothing sleeps.
 */
import type { Clock, TimerHandle } from '../../src/aws/credential-cache.js';

interface FakeTimer extends TimerHandle {
  readonly id: number;
  readonly at: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/** Lets every pending promise callback run (a macrotask turn drains the microtask queue). */
export function flushPromises(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class FakeClock implements Clock {
  private current: number;
  private nextId = 1;
  private timers: FakeTimer[] = [];

  constructor(startMs = Date.UTC(2024, 0, 1, 0, 0, 0)) {
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const timer: FakeTimer = {
      id: this.nextId++,
      at: this.current + Math.max(0, ms),
      fn,
      cancelled: false,
      unref: () => timer,
    };
    this.timers.push(timer);
    return timer;
  }

  clearTimeout(handle: TimerHandle): void {
    const timer = handle as FakeTimer;
    timer.cancelled = true;
    this.timers = this.timers.filter((t) => t !== timer);
  }

  /** Timers still waiting to fire. */
  pending(): number {
    return this.timers.length;
  }

  /** When the next timer is due, if any. */
  nextDueMs(): number | undefined {
    return this.timers.reduce<number | undefined>((min, t) => (min === undefined || t.at < min ? t.at : min), undefined);
  }

  /**
   * Moves time forward by `ms`, firing every timer that comes due on the way, in due order, with
   * the clock set to its due time. Promise callbacks run after each timer, so timers that those
   * callbacks schedule within the window fire too.
   */
  async advance(ms: number): Promise<void> {
    const target = this.current + ms;
    await flushPromises();
    for (;;) {
      const due = this.timers.filter((t) => t.at <= target).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (due === undefined) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.current = Math.max(this.current, due.at);
      if (!due.cancelled) due.fn();
      await flushPromises();
    }
    this.current = target;
    await flushPromises();
  }
}
