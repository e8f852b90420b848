// waitFor: polls a condition, failing the test instead of hanging when it never holds.
import { setTimeout as sleep } from 'node:timers/promises';

export async function waitFor(condition, what, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}
