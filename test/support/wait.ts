/** Polling helpers for tests that wait on another process (the only place tests poll). */

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves once `check` is true; throws naming `what` after `ms`. */
export async function waitFor(check: () => Promise<boolean> | boolean, ms = 8000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(25);
  }
  throw new Error(`${what} not met within ${ms} ms`);
}
