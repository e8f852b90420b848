// Validation of a check's arguments (what the wire cannot carry is never sent) and of options.
import { RateLimitInvalidRequestError } from './errors';

// Keys are 1 to 512 bytes of UTF-8, as the sidecar requires.
export const MAX_KEY_BYTES = 512;
export const MAX_UINT32 = 0xffffffff;

// The key's UTF-8 bytes. A string with a lone surrogate is refused: UTF-8 cannot carry it, and
// replacing it (as Buffer.from does) would make different keys share one bucket.
export function keyBytes(key: unknown): Buffer {
  if (typeof key !== 'string') {
    throw new RateLimitInvalidRequestError(`key must be a string, got ${typeof key}`);
  }
  if (!key.isWellFormed()) {
    throw new RateLimitInvalidRequestError('key is not well-formed UTF-16 (lone surrogate)');
  }
  const bytes = Buffer.from(key, 'utf8');
  if (bytes.length === 0 || bytes.length > MAX_KEY_BYTES) {
    throw new RateLimitInvalidRequestError(
      `key must be 1 to ${MAX_KEY_BYTES} bytes of UTF-8, got ${bytes.length}`,
    );
  }
  return bytes;
}

// `value` when it is an integer from `min` to `max`, `fallback` when it is undefined, else null.
function integerInRange(value: unknown, fallback: number, min: number, max: number): number | null {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    return null;
  }
  return value;
}

// `value` when a uint32 field can carry it, `fallback` when it is undefined.
export function uint32(name: string, value: unknown, fallback: number): number {
  const checked = integerInRange(value, fallback, 0, MAX_UINT32);
  if (checked === null) {
    throw new RateLimitInvalidRequestError(
      `${name} must be an integer from 0 to ${MAX_UINT32}, got ${String(value)}`,
    );
  }
  return checked;
}

// `value` when it is an integer from 1 to 2^32 - 1: a policy number that must be given, since
// 0 (or nothing) would select the sidecar's default policy.
export function positiveUint32(name: string, value: unknown): number {
  const checked = value === undefined ? null : integerInRange(value, 0, 1, MAX_UINT32);
  if (checked === null) {
    throw new RateLimitInvalidRequestError(
      `${name} must be an integer from 1 to ${MAX_UINT32}, got ${String(value)}`,
    );
  }
  return checked;
}

// An option that must be an integer from `min` to `max`: a wrong one is a programming error,
// found when the client or middleware is created.
export function integerOption(
  name: string,
  value: unknown,
  fallback: number,
  min: number,
  max: number,
): number {
  const checked = integerInRange(value, fallback, min, max);
  if (checked === null) {
    throw new RangeError(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return checked;
}
